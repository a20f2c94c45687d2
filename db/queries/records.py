"""Reads shared by every synced entity: by id, by parent, existence of live children."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any
from uuid import UUID

import asyncpg
from sqlalchemy import Select, Table, exists, false, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from db import raw
from db.entities import ENTITIES, EntitySpec, EntityType
from db.queries.pages import Page, PageRequest, Row, fetch_page
from db.queries.text import escape_like, holds_nul

# Columns reads never return: the write path's dots, and what search matches against.
UNREAD_COLUMNS = frozenset({"field_dots", "search_text"})
ORDER_BY_PARENT = {"contact": "last_name", "facility": "name", "asset": "kind"}


def sees_customer(role: str, own_customer: UUID | None, customer_id: UUID) -> bool:
    """The portal rule for one record: a portal user sees only their own customer's
    records (``customer_id`` is the record's customer; a customer's is its own id). Lists
    apply it as a filter: :func:`portal_customer` here, in SQL for the customer list
    (``db.queries.customers``)."""
    return role != "PORTAL" or customer_id == own_customer


def portal_customer(role: str, own_customer: UUID | None) -> UUID | None:
    """The portal rule for a list: the customer whose records a portal user's lists are
    confined to (None: not confined)."""
    return own_customer if role == "PORTAL" else None


def live(spec: EntitySpec, org_id: UUID) -> Select[Any]:
    """Live (not deleted) rows of one tenant; RLS filters the same way underneath.

    Without ``field_dots``: only the write path reads a record's dots, and decoding that
    JSON object (a dot per field) for every row of a list was a third of a page's time.
    """
    table = spec.table
    columns = [c for c in table.c if c.name not in UNREAD_COLUMNS]
    return select(*columns).where(table.c.org_id == org_id, table.c.deleted.is_(False))


@cache
def _live_statement(table: Table, where: str, order: str) -> str:
    """The fixed text of a live-rows statement (asyncpg prepares it once per connection)."""
    columns = tuple(c.name for c in table.c if c.name not in UNREAD_COLUMNS)
    return (
        f"SELECT {', '.join(columns)} FROM {table.name}"
        f" WHERE org_id = $1 AND NOT deleted AND {where} ORDER BY {order}"
    )


def _dicts(records: Sequence[asyncpg.Record]) -> list[Row]:
    if not records:
        return []
    keys = list(records[0].keys())
    return [dict(zip(keys, record, strict=True)) for record in records]


async def by_ids(
    conn: AsyncConnection, spec: EntitySpec, org_id: UUID, ids: Sequence[UUID]
) -> list[Row]:
    """Live rows with these ids (in id order).

    On asyncpg with the ids as one array: through SQLAlchemy an IN list became one
    parameter per id, so every new count of ids was a new statement to prepare.
    """
    sql = _live_statement(spec.table, "id = ANY($2::uuid[])", "id")
    return _dicts(await raw.fetch(conn, sql, org_id, list(ids)))


# Which synced table holds each of a set of ids: `node(id:)` given a bare uuid, which names
# no type. One statement for every table (each part a primary-key lookup), not one a type.
TYPES_SQL = " UNION ALL ".join(
    f"SELECT id, '{spec.type.value}' AS entity FROM {spec.table.name}"
    " WHERE org_id = $1 AND NOT deleted AND id = ANY($2::uuid[])"
    for spec in ENTITIES.values()
)


async def entity_types(
    conn: AsyncConnection, org_id: UUID, ids: Sequence[UUID]
) -> dict[UUID, EntityType]:
    """The type of each id that is a live record of the tenant (the others are left out)."""
    return {r[0]: EntityType(r[1]) for r in await raw.fetch(conn, TYPES_SQL, org_id, list(ids))}


def live_children(
    table: Table, entity: str, parent_column: str, alias: str, parents: str
) -> tuple[str, str]:
    """The rule for a list field's children, as SQL over ``table`` aliased ``alias``: the
    WHERE (live rows of the tenant ``$1`` whose ``parent_column`` is in the uuid array
    ``parents``) and the ORDER BY (by parent, then the type's display column, then id).
    The typed path's DataLoaders (:func:`by_parent`) and the compiled reads
    (``db.queries.record_rows``) both render it from here."""
    if parent_column not in table.c:
        raise ValueError(f"{table.name} has no column {parent_column!r}")
    order = ORDER_BY_PARENT.get(entity, "id")
    where = (
        f"{alias}.org_id = $1 AND NOT {alias}.deleted AND {alias}.{parent_column} = ANY({parents})"
    )
    return where, f"{alias}.{parent_column}, {alias}.{order}, {alias}.id"


@cache
def _by_parent_statement(table: Table, entity: str, parent_column: str) -> str:
    where, order = live_children(table, entity, parent_column, "t", "$2::uuid[]")
    columns = ", ".join(f"t.{c.name}" for c in table.c if c.name not in UNREAD_COLUMNS)
    return f"SELECT {columns} FROM {table.name} t WHERE {where} ORDER BY {order}"


async def by_parent(
    conn: AsyncConnection,
    spec: EntitySpec,
    org_id: UUID,
    parent_column: str,
    parent_ids: Sequence[UUID],
) -> list[list[Row]]:
    """Live rows grouped by parent, lined up with ``parent_ids``, in a stable order."""
    sql = _by_parent_statement(spec.table, spec.type.value, parent_column)
    grouped: dict[UUID, list[Row]] = defaultdict(list)
    for row in _dicts(await raw.fetch(conn, sql, org_id, list(parent_ids))):
        grouped[row[parent_column]].append(row)
    return [grouped.get(pid, []) for pid in parent_ids]


async def has_live_children(
    conn: AsyncConnection, children: Sequence[EntitySpec], org_id: UUID, customer_id: UUID
) -> list[str]:
    """Names of the child entity types that still have live rows for ``customer_id``."""
    found: list[str] = []
    for spec in children:
        table = spec.table
        query = select(
            exists().where(
                table.c.org_id == org_id,
                table.c.customer_id == customer_id,
                table.c.deleted.is_(False),
            )
        )
        if (await conn.execute(query)).scalar_one():
            found.append(spec.type.value)
    return found


async def child_page(
    conn: AsyncConnection,
    spec: EntitySpec,
    org_id: UUID,
    *,
    equals: Mapping[str, UUID],
    search: str | None,
    request: PageRequest,
) -> tuple[Page, Select[Any]]:
    """A keyset page of contacts, facilities or assets ordered by their display column,
    filtered by parent ids and a case-insensitive substring search; also the query, so
    the caller can count it lazily."""
    table = spec.table
    query = live(spec, org_id)
    for column, value in equals.items():
        query = query.where(table.c[column] == value)
    sort_column = table.c[ORDER_BY_PARENT[spec.type.value]]
    if search and holds_nul(search):
        query = query.where(false())
    elif search:
        needle = "%" + escape_like(search.strip().lower()) + "%"
        query = query.where(
            or_(
                *(
                    func.lower(table.c[c]).like(needle, escape="\\")
                    for c in SEARCH_COLUMNS[spec.type.value]
                )
            )
        )
    sort = func.coalesce(func.lower(sort_column), "")
    page = await fetch_page(conn, query, sort=sort, id_column=table.c.id, request=request)
    for row in page.rows:
        row["_sort"] = (row[sort_column.name] or "").lower()
    return page, query


SEARCH_COLUMNS = {
    "contact": ("first_name", "last_name", "email"),
    "facility": ("name",),
    "asset": ("kind", "manufacturer", "model", "serial_number", "location"),
}
