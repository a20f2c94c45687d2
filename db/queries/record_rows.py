"""Records with the children a read selects, each level as one JSON value, in one statement.

The compiled reads (``resolvers.compiled_reads``) answer `customer`, `customers` and
`node` with one statement: the root rows (one record, or a page of the customer list),
every level of children the selection reaches, the custom field definitions the selection
needs, and the caller's ``users`` row, whose checks (active, token epoch) the caller
applies before using the records.

Each level is a CTE (its live rows of all the previous level's parents, read set-wise by
the children rule of ``db.queries.records.live_children``) sent as one ``json_agg`` of
arrays, which orjson decodes in a fraction of what asyncpg's decoding of plain rows or
nested ``ARRAY(ROW(...))`` values costs (a list page's 1,000 assets: PostgreSQL's binary
output of anonymous records looks up every column's output function per record).

JSON carries uuids and timestamps as text: ids stay strings (the encoders format them into
global ids and cursors alike), timestamps and dates become ``datetime`` and ``date`` again,
as asyncpg would have returned them (timestamps in UTC).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache
from typing import Any
from uuid import UUID

import asyncpg
import orjson
from sqlalchemy import Date, DateTime, Table
from sqlalchemy.ext.asyncio import AsyncConnection

from db import raw
from db.engine import PLAN_EACH_CONFIG
from db.queries.records import UNREAD_COLUMNS, live_children

Row = dict[str, Any]

# The caller's columns the request checks, as the statement's first columns.
USER_COLUMNS = ("active", "token_epoch", "role", "customer_id")
# The key under which a level's custom field definitions (``key``, ``label``,
# ``field_type``, ``options``, in definition order) are attached to each of its rows;
# column names never start with an underscore.
DEFINITIONS = "_definitions"
_DEFINITION_KEYS = ("key", "label", "field_type", "options")


@dataclass(frozen=True)
class Children:
    """Live rows of ``table`` whose ``parent_column`` is the parent's id, attached to the
    parent's row under ``key``, in the order ``records.live_children`` gives."""

    key: str
    table: Table
    entity: str
    parent_column: str
    level: Level


@dataclass(frozen=True)
class Level:
    """The columns one level reads (in this order), its children, and the entity type
    (``CUSTOMER``...) whose custom field definitions its rows need, if any."""

    columns: tuple[str, ...]
    children: tuple[Children, ...] = ()
    definitions: str | None = None


@dataclass(frozen=True)
class Part:
    """One level of the tree: its table and columns, and where its rows attach."""

    table: Table
    columns: tuple[str, ...]
    cte: str
    definitions: str | None
    parent: int | None = None  # the parent part's index
    parent_column: str | None = None
    entity: str | None = None
    key: str | None = None  # the key the rows attach under on the parent's rows


@cache
def parts(root: Table, level: Level) -> tuple[Part, ...]:
    """The parts of ``level`` read from ``root`` (part 0, the CTE ``page``) and below."""
    found = [Part(root, level.columns, "page", level.definitions)]

    def walk(level: Level, index: int) -> None:
        for child in level.children:
            found.append(
                Part(
                    child.table,
                    child.level.columns,
                    f"c{len(found)}",
                    child.level.definitions,
                    parent=index,
                    parent_column=child.parent_column,
                    entity=child.entity,
                    key=child.key,
                )
            )
            walk(child.level, len(found) - 1)

    walk(level, 0)
    for part in found:
        unknown = [c for c in part.columns if c not in part.table.c or c in UNREAD_COLUMNS]
        if unknown or "id" not in part.columns:
            raise ValueError(f"{part.table.name}: unreadable columns {unknown} or no id")
    return tuple(found)


def _definition_entities(tree: Sequence[Part]) -> tuple[str, ...]:
    return tuple(sorted({p.definitions for p in tree if p.definitions is not None}))


def tree_statement(root: Table, level: Level, page: str, total: str = "NULL") -> str:
    """The statement reading ``level`` from the root rows ``page`` selects.

    ``page`` is a SELECT of ``level.columns`` of ``root`` and each row's position as
    ``n``; parameter ``$1`` is the tenant and ``$2`` the caller's user id (it may use
    more). ``total`` is a bigint expression (``u`` is the caller's row). One row when the
    caller's user exists in the tenant: the caller's checked columns, ``total``, then one
    JSON value per part and per entity type whose definitions it needs.
    """
    tree = parts(root, level)
    ctes = [f"page AS MATERIALIZED ({page})"]
    for part in tree[1:]:
        assert part.parent is not None
        assert part.parent_column is not None
        where, order = live_children(
            part.table,
            part.entity or "",
            part.parent_column,
            "t",
            f"ARRAY(SELECT id FROM {tree[part.parent].cte})",
        )
        columns = ", ".join(f"t.{c}" for c in part.columns)
        ctes.append(
            f"{part.cte} AS MATERIALIZED (SELECT {columns}, t.{part.parent_column} AS parent,"
            f" row_number() OVER (ORDER BY {order}) AS n"
            f" FROM {part.table.name} t WHERE {where})"
        )
    items = [f"u.{c}" for c in USER_COLUMNS] + [f"({total})::bigint AS total"]
    for part in tree:
        values = [f"x.{c}" for c in part.columns]
        if part.parent is not None:
            values.append("x.parent")
        items.append(
            f"(SELECT json_agg(json_build_array({', '.join(values)}) ORDER BY x.n)"
            f" FROM {part.cte} x)"
        )
    for entity in _definition_entities(tree):
        definition = ", ".join(f"d.{k}" for k in _DEFINITION_KEYS)
        items.append(
            f"(SELECT json_agg(json_build_array({definition}) ORDER BY d.position, d.key)"
            f" FROM custom_field_definitions d WHERE d.org_id = $1"
            f" AND d.entity_type = '{entity}')"
        )
    return (
        f"WITH {', '.join(ctes)} SELECT {', '.join(items)}"
        " FROM users u WHERE u.org_id = $1 AND u.id = $2"
    )


@dataclass(frozen=True)
class TreeRead:
    """What a tree statement returned: the caller's checked columns (None when the user
    is not in the tenant), the root rows with their children, and the total."""

    user: Mapping[str, Any] | None
    rows: list[Row]
    total: int | None


async def read_tree(
    conn: asyncpg.Connection, root: Table, level: Level, sql: str, *args: Any
) -> TreeRead:
    """Run a :func:`tree_statement` on ``conn`` (in a transaction scoped to the tenant:
    :func:`scoped`) and decode its row."""
    rows = await conn.fetch(sql, *args)
    if not rows:
        return TreeRead(None, [], None)
    row = rows[0]
    user = {c: row[i] for i, c in enumerate(USER_COLUMNS)}
    total = row["total"]
    tree = parts(root, level)
    first = len(USER_COLUMNS) + 1
    decoded = decode(tree, row[first : first + len(tree)], row[first + len(tree) :])
    return TreeRead(user, decoded, None if total is None else int(total))


def _timestamp(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


@cache
def _conversions(
    table: Table, columns: tuple[str, ...]
) -> tuple[tuple[str, Callable[[str], Any]], ...]:
    found: list[tuple[str, Callable[[str], Any]]] = []
    for column in columns:
        kind = table.c[column].type
        if isinstance(kind, DateTime):
            found.append((column, _timestamp))
        elif isinstance(kind, Date):
            found.append((column, date.fromisoformat))
    return tuple(found)


def _json(value: Any) -> list[list[Any]]:
    """A JSON column's value: decoded by the pool's json codec, or text without one."""
    return orjson.loads(value) if isinstance(value, str) else value or []


def decode(tree: Sequence[Part], values: Sequence[Any], definitions: Sequence[Any]) -> list[Row]:
    """The root part's rows, their children and definitions attached, from the values of
    a :func:`tree_statement` (None for an empty part)."""
    by_entity = {
        entity: [dict(zip(_DEFINITION_KEYS, d, strict=True)) for d in _json(value)]
        for entity, value in zip(_definition_entities(tree), definitions, strict=True)
    }
    by_part: list[list[Row]] = []
    for part, value in zip(tree, values, strict=True):
        items = _json(value)
        conversions = _conversions(part.table, part.columns)
        rows: list[Row] = []
        for item in items:
            row = dict(zip(part.columns, item, strict=False))
            for column, convert in conversions:
                if row[column] is not None:
                    row[column] = convert(row[column])
            rows.append(row)
        if part.definitions is not None:
            for row in rows:
                row[DEFINITIONS] = by_entity[part.definitions]
        by_part.append(rows)
        if part.parent is None:
            continue
        assert part.key is not None
        groups: dict[str, list[Row]] = {}
        count = len(part.columns)
        for item, row in zip(items, rows, strict=True):
            groups.setdefault(item[count], []).append(row)
        for parent_row in by_part[part.parent]:
            parent_row[part.key] = groups.get(parent_row["id"], [])
    return by_part[0]


@cache
def record_statement(table: Table, level: Level) -> str:
    """The tree statement of one record of ``table`` by id (``$3``): no row in its part
    when it does not exist or is deleted.

    Run it in :func:`scoped` without ``plan_each``: it finds every row by key and the
    plan PostgreSQL caches for it serves every id (planning it anew for each request cost
    more than running it).
    """
    columns = ", ".join(f"r.{c}" for c in level.columns)
    page = (
        f"SELECT {columns}, 1 AS n FROM {table.name} r"
        " WHERE r.org_id = $1 AND r.id = $3 AND NOT r.deleted"
    )
    return tree_statement(table, level, page)


async def read_record(
    conn: asyncpg.Connection,
    table: Table,
    level: Level,
    *,
    org_id: UUID,
    user_id: UUID,
    record_id: UUID,
) -> TreeRead:
    """One record of ``table`` read as ``level`` (``rows`` empty when there is none)."""
    return await read_tree(
        conn, table, level, record_statement(table, level), org_id, user_id, record_id
    )


def _begin(org_id: UUID, *, plan_each: bool) -> str:
    """BEGIN and the tenant as one script: one round trip. The tenant is a formatted UUID,
    never client text. ``plan_each`` adds the executor's read settings
    (``db.engine.PLAN_EACH_CONFIG``)."""
    script = f"BEGIN READ ONLY; SELECT set_config('app.org_id', '{UUID(str(org_id))}', true)"
    return script + PLAN_EACH_CONFIG if plan_each else script


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
