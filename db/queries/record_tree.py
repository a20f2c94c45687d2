"""A record with the children a read selects, and the caller's user row, in one statement.

A frontend's detail page (a customer with its contacts, and its facilities with their
assets) took one statement per level plus one for the caller and one for the tenant
settings. Here the levels are nested ``ARRAY(SELECT ROW(...))`` subqueries of the root row,
each reading only the columns the selection uses, so PostgreSQL answers the whole tree in
one round trip and asyncpg decodes it straight into tuples. The statement also reads the
caller's ``users`` row, whose checks (active, token epoch, role) the caller applies before
using the record.

jsonb inside an anonymous record arrives in binary form, which asyncpg hands to the pool's
text codec undecoded: such columns travel as text and are decoded with orjson here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any
from uuid import UUID

import asyncpg
import orjson
from sqlalchemy import Table
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from db import raw
from db.queries.records import ORDER_BY_PARENT, UNREAD_COLUMNS

Row = dict[str, Any]

# The caller's columns the request checks, as the statement's first columns.
USER_COLUMNS = ("active", "token_epoch", "role", "customer_id")


@dataclass(frozen=True)
class Children:
    """Live rows of ``table`` whose ``parent_column`` is the parent's id, attached to the
    parent's row under ``key``, in the order ``records.by_parent`` gives."""

    key: str
    table: Table
    entity: str
    parent_column: str
    level: Level


@dataclass(frozen=True)
class Level:
    """The columns one level reads (in this order) and its children."""

    columns: tuple[str, ...]
    children: tuple[Children, ...] = ()


def _check(table: Table, columns: Sequence[str]) -> None:
    unknown = [c for c in columns if c not in table.c or c in UNREAD_COLUMNS]
    if unknown:
        raise ValueError(f"{table.name} has no readable columns {unknown}")


def _is_json(table: Table, column: str) -> bool:
    return isinstance(table.c[column].type, JSONB)


def row_expression(
    table: Table, level: Level, alias: str, depth: int = 0, extra: Sequence[str] = ()
) -> str:
    """``ROW(...)`` of one row of ``table`` aliased ``alias``: its columns (jsonb as text),
    each child list (subqueries aliased ``t<depth + 1>`` and deeper), then ``extra``."""
    _check(table, level.columns)
    items = [f"{alias}.{c}::text" if _is_json(table, c) else f"{alias}.{c}" for c in level.columns]
    items += [_array(child, alias, depth + 1) for child in level.children]
    items += extra
    return f"ROW({', '.join(items)})"


def _array(child: Children, parent_alias: str, depth: int) -> str:
    alias = f"t{depth}"
    if child.parent_column not in child.table.c:
        raise ValueError(f"{child.table.name} has no column {child.parent_column!r}")
    order = ORDER_BY_PARENT.get(child.entity, "id")
    return (
        f"ARRAY(SELECT {row_expression(child.table, child.level, alias, depth)}"
        f" FROM {child.table.name} {alias}"
        f" WHERE {alias}.org_id = $1 AND {alias}.{child.parent_column} = {parent_alias}.id"
        f" AND NOT {alias}.deleted ORDER BY {alias}.{order}, {alias}.id)"
    )


@cache
def statement(table: Table, level: Level) -> str:
    """The statement for a root of ``table`` read as ``level``.

    Parameters: ``$1`` tenant, ``$2`` the caller's user id, ``$3`` the record's id. One row
    when the caller's user exists in the tenant; the record's columns are NULL when it does
    not exist or is deleted (``id`` tells).
    """
    _check(table, level.columns)
    columns = [f"r.{c} AS r_{c}" for c in level.columns]
    columns += [f"r.{child.key} AS r_{child.key}" for child in level.children]
    inner = [f"t0.{c}" for c in level.columns]
    inner += [f"{_array(child, 't0', 1)} AS {child.key}" for child in level.children]
    user = ", ".join(f"u.{c} AS u_{c}" for c in USER_COLUMNS)
    return (
        f"SELECT {user}, {', '.join(columns)} FROM users u"
        f" LEFT JOIN LATERAL (SELECT {', '.join(inner)} FROM {table.name} t0"
        f" WHERE t0.org_id = $1 AND t0.id = $3 AND NOT t0.deleted) r ON true"
        f" WHERE u.org_id = $1 AND u.id = $2"
    )


@dataclass(frozen=True)
class TreeRead:
    """What the statement returned: the caller's checked columns and the record, if any."""

    user: Mapping[str, Any] | None
    record: Row | None


def _begin(org_id: UUID, *, plan_each: bool) -> str:
    """BEGIN and the tenant as one script: one round trip. The tenant is a formatted UUID,
    never client text. ``plan_each`` adds the executor's read settings
    (``db.engine.PLAN_EACH``): plans for each execution's values, random reads priced as
    cached ones."""
    script = f"BEGIN READ ONLY; SELECT set_config('app.org_id', '{UUID(str(org_id))}', true)"
    if plan_each:
        script += (
            ", set_config('plan_cache_mode', 'force_custom_plan', true),"
            " set_config('random_page_cost', '1.1', true)"
        )
    return script


@asynccontextmanager
async def scoped(
    conn: AsyncConnection, org_id: UUID, *, plan_each: bool = False
) -> AsyncIterator[asyncpg.Connection]:
    """The asyncpg connection under ``conn`` (a pooled connection outside any transaction)
    in a read-only transaction scoped to ``org_id``, rolled back on exit: with one
    statement inside, three round trips in all."""
    driver = await raw.driver(conn)
    try:
        await driver.execute(_begin(org_id, plan_each=plan_each))
        yield driver
        await driver.execute("ROLLBACK")
    except BaseException:
        # The transaction may still be open (a cancelled request, a broken connection):
        # the pool must not hand this connection out again.
        await conn.invalidate()
        raise


async def read(
    conn: asyncpg.Connection,
    table: Table,
    level: Level,
    *,
    org_id: UUID,
    user_id: UUID,
    record_id: UUID,
) -> TreeRead:
    """Run the statement on ``conn`` (in a transaction scoped to ``org_id``: :func:`scoped`).

    Use ``scoped`` without ``plan_each``: the statement keeps the plan PostgreSQL caches for
    it, since it finds every row by key and a generic plan serves every id (planning the
    nested subqueries anew for each request cost more than running them).
    """
    rows = await conn.fetch(statement(table, level), org_id, user_id, record_id)
    if not rows:
        return TreeRead(None, None)
    row = rows[0]
    user = {c: row[i] for i, c in enumerate(USER_COLUMNS)}
    offset = len(USER_COLUMNS)
    if row[offset + level.columns.index("id")] is None:
        return TreeRead(user, None)
    record: Row = dict(zip(level.columns, row[offset : offset + len(level.columns)], strict=True))
    offset += len(level.columns)
    for i, child in enumerate(level.children):
        record[child.key] = decode_rows(child.table, child.level, row[offset + i])
    return TreeRead(user, record)


def decode_rows(table: Table, level: Level, values: Sequence[tuple[Any, ...]]) -> list[Row]:
    """Rows of ``table`` as dicts from ``ROW(...)`` values of :func:`row_expression`, with
    their children attached under the children's keys."""
    json_columns = _json_positions(table, level.columns)
    count = len(level.columns)
    rows: list[Row] = []
    for value in values:
        row = dict(zip(level.columns, value[:count], strict=True))
        for column in json_columns:
            if row[column] is not None:
                row[column] = orjson.loads(row[column])
        for i, child in enumerate(level.children):
            row[child.key] = decode_rows(child.table, child.level, value[count + i])
        rows.append(row)
    return rows


@cache
def _json_positions(table: Table, columns: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(c for c in columns if _is_json(table, c))
