"""Reads shared by every synced entity: by id, by parent, existence of live children."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import Select, exists, false, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from db.entities import EntitySpec
from db.queries.pages import Page, PageRequest, Row, fetch_page
from db.queries.text import escape_like, holds_nul

ORDER_BY_PARENT = {"contact": "last_name", "facility": "name", "asset": "kind"}


def live(spec: EntitySpec, org_id: UUID) -> Select[Any]:
    """Live (not deleted) rows of one tenant; RLS filters the same way underneath."""
    table = spec.table
    return select(table).where(table.c.org_id == org_id, table.c.deleted.is_(False))


async def by_ids(
    conn: AsyncConnection, spec: EntitySpec, org_id: UUID, ids: Sequence[UUID]
) -> list[Row]:
    """Live rows with these ids (any order)."""
    result = await conn.execute(live(spec, org_id).where(spec.table.c.id.in_(list(ids))))
    return [dict(r) for r in result.mappings()]


async def by_parent(
    conn: AsyncConnection,
    spec: EntitySpec,
    org_id: UUID,
    parent_column: str,
    parent_ids: Sequence[UUID],
) -> list[list[Row]]:
    """Live rows grouped by parent, lined up with ``parent_ids``, in a stable order."""
    table = spec.table
    order = table.c[ORDER_BY_PARENT.get(spec.type.value, "id")]
    result = await conn.execute(
        live(spec, org_id)
        .where(table.c[parent_column].in_(list(parent_ids)))
        .order_by(table.c[parent_column], order, table.c.id)
    )
    grouped: dict[UUID, list[Row]] = defaultdict(list)
    for row in result.mappings():
        grouped[row[parent_column]].append(dict(row))
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
