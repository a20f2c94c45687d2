"""Reads shared by every synced entity: by id, by parent, existence of live children."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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


# Matches no customer: a portal user without one (only a hand edit of the database makes
# one) is confined to nothing rather than to nobody's rule.
NO_CUSTOMER = UUID(int=0)


def portal_customer(role: str, own_customer: UUID | None) -> UUID | None:
    """The portal rule for a list: the customer whose records a portal user's lists are
    confined to (None: not confined; :data:`NO_CUSTOMER` for a portal user without one)."""
    if role != "PORTAL":
        return None
    return own_customer if own_customer is not None else NO_CUSTOMER


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


@dataclass(frozen=True)
class ChildList:
    """A parent's list of children as a connection pages it (``Customer.contactsConnection``
    and its siblings): the table, the parent column, the columns read, the display column
    the list is ordered by (case-insensitive, then id: the order of ``child_page``'s lists
    and of their cursors) and, for credentials, the visibility rule's condition."""

    table: Table
    parent_column: str
    sort_column: str
    columns: tuple[str, ...]

    @classmethod
    def of(cls, spec: EntitySpec, parent_column: str) -> ChildList:
        """The list of ``spec``'s live records by ``parent_column``, every read column."""
        table = spec.table
        return cls(
            table=table,
            parent_column=parent_column,
            sort_column=ORDER_BY_PARENT[spec.type.value],
            columns=tuple(c.name for c in table.c if c.name not in UNREAD_COLUMNS),
        )


@dataclass(frozen=True)
class ChildFilter:
    """More conditions on a child list: SQL over ``t`` whose ``{}`` placeholders take
    ``args`` in order (each statement numbers them after its own parameters)."""

    where: str = ""
    args: tuple[Any, ...] = ()

    @property
    def form(self) -> tuple[str, int]:
        """What the statement's text depends on (not the values: statements are cached)."""
        return self.where, len(self.args)


def _render(form: tuple[str, int], first_parameter: int) -> str:
    """`` AND`` a filter's condition, its parameters numbered from ``first_parameter``."""
    where, count = form
    if not where:
        return ""
    return " AND " + where.format(*(f"${first_parameter + i}" for i in range(count)))


NO_FILTER = ChildFilter()


def _child_sort(child: ChildList) -> str:
    return f"coalesce(lower(t.{child.sort_column}), '')"


@cache
def _child_pages_statement(child: ChildList, form: tuple[str, int], after: bool) -> str:
    """One page of each parent's children: a LATERAL subquery per parent, each an index
    range read of at most ``$3`` rows, so a long list costs one page, not every row."""
    sort = _child_sort(child)
    # $1 tenant, $2 parents, $3 the page size plus one, then the filter's, then the keyset.
    extra = _render(form, 4)
    key = 4 + form[1]
    keyset = f" AND ({sort}, t.id) > (${key}::text, ${key + 1}::uuid)" if after else ""
    columns = ", ".join(f"t.{c}" for c in child.columns)
    return (
        "SELECT p.parent AS _parent, x.* FROM unnest($2::uuid[]) AS p(parent)"
        f" CROSS JOIN LATERAL (SELECT {columns}, {sort} AS _sort FROM {child.table.name} t"
        f" WHERE t.org_id = $1 AND NOT t.deleted AND t.{child.parent_column} = p.parent"
        f"{extra}{keyset} ORDER BY {sort}, t.id LIMIT $3) x"
    )


async def child_pages(
    conn: AsyncConnection,
    child: ChildList,
    org_id: UUID,
    parent_ids: Sequence[UUID],
    request: PageRequest,
    condition: ChildFilter = NO_FILTER,
) -> list[Page]:
    """The page ``request`` asks of each parent's children (one statement for them all),
    lined up with ``parent_ids``; each row's ``_sort`` is its cursor's sort value."""
    sql = _child_pages_statement(child, condition.form, request.after is not None)
    args: list[Any] = [org_id, list(parent_ids), request.first + 1, *condition.args]
    if request.after is not None:
        args += list(request.after)
    grouped: dict[UUID, list[Row]] = defaultdict(list)
    for row in _dicts(await raw.fetch(conn, sql, *args)):
        grouped[row.pop("_parent")].append(row)
    pages = []
    for parent in parent_ids:
        rows = grouped.get(parent, [])
        pages.append(Page(rows[: request.first], has_next=len(rows) > request.first))
    return pages


@cache
def _child_counts_statement(child: ChildList, form: tuple[str, int]) -> str:
    column = child.parent_column
    return (
        f"SELECT t.{column}, count(*) FROM {child.table.name} t WHERE t.org_id = $1"
        f" AND NOT t.deleted AND t.{column} = ANY($2::uuid[]){_render(form, 3)}"
        f" GROUP BY t.{column}"
    )


async def child_counts(
    conn: AsyncConnection,
    child: ChildList,
    org_id: UUID,
    parent_ids: Sequence[UUID],
    condition: ChildFilter = NO_FILTER,
) -> list[int]:
    """How many children each parent has (``totalCount``), lined up with ``parent_ids``."""
    sql = _child_counts_statement(child, condition.form)
    rows = await raw.fetch(conn, sql, org_id, list(parent_ids), *condition.args)
    found = {r[0]: int(r[1]) for r in rows}
    return [found.get(p, 0) for p in parent_ids]
