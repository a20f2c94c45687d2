"""Customer reads: filtered, ordered pages and the unique-email check."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sqlalchemy import ColumnElement, Select, false, func, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection

from db.entities import CUSTOMER
from db.queries.pages import Page, PageRequest, fetch_page
from db.queries.records import live
from db.queries.text import escape_like, holds_nul
from db.tables import customers

# Shortest search term a trigram index can serve.
TRIGRAM = 3


class CustomerSort(enum.Enum):
    """Orderings a customer list supports; each maps to an indexed column."""

    NAME = "sort_name"
    CREATED_AT = "created_at"
    UPDATED_AT = "updated_at"


@dataclass(frozen=True)
class CustomerFilter:
    """Filters of the customer list; None means "any"."""

    search: str | None = None
    archived: bool | None = False
    email: str | None = None
    # Portal users see only their own customer.
    only_id: UUID | None = None


def customer_query(org_id: UUID, flt: CustomerFilter) -> Select[Any]:
    """Live customers of a tenant matching ``flt``.

    Search matches a substring of the name or email (``search_text``, trigram-indexed).
    """
    query = live(CUSTOMER, org_id)
    if flt.archived is not None:
        query = query.where(customers.c.archived.is_(flt.archived))
    if flt.only_id is not None:
        query = query.where(customers.c.id == flt.only_id)
    if holds_nul(flt.email or "") or holds_nul(flt.search or ""):
        return query.where(false())
    if flt.email is not None:
        query = query.where(func.lower(customers.c.email) == flt.email.lower())
    if flt.search:
        needle = escape_like(flt.search.strip().lower())
        query = query.where(customers.c.search_text.like(f"%{needle}%", escape="\\"))
    return query


def sort_column(sort: CustomerSort) -> ColumnElement[Any]:
    """The column a customer ordering sorts by."""
    return customers.c[sort.value]


async def email_owner(
    conn: AsyncConnection, org_id: UUID, email: str, *, exclude: UUID | None = None
) -> UUID | None:
    """The live customer that already has ``email`` (case-insensitive), if any."""
    query = select(customers.c.id).where(
        customers.c.org_id == org_id,
        customers.c.deleted.is_(False),
        func.lower(customers.c.email) == email.lower(),
    )
    if exclude is not None:
        query = query.where(customers.c.id != exclude)
    return (await conn.execute(query.limit(1))).scalar_one_or_none()


async def customer_page(
    conn: AsyncConnection,
    org_id: UUID,
    flt: CustomerFilter,
    sort: CustomerSort,
    request: PageRequest,
) -> tuple[Page, Select[Any]]:
    """One keyset page of the filtered, ordered customer list, and the query (to count)."""
    query = customer_query(org_id, flt)
    order = sort_column(sort)
    if sort is CustomerSort.NAME and flt.search and len(flt.search.strip()) >= TRIGRAM:
        # Sort by an expression no index has: the planner then gathers the (trigram-found)
        # matches and keeps the top of them, instead of walking the whole name index in
        # order hoping to meet matches early (it assumes they are spread evenly; a term
        # matching 5% of 10,000 customers read 3,500 rows that way, 40 ms instead of 2).
        order = order.op("||")(literal(""))
    page = await fetch_page(conn, query, sort=order, id_column=customers.c.id, request=request)
    return page, query
