"""Customer reads: filtered, ordered pages and the unique-email check."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sqlalchemy import ColumnElement, Select, false, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from db.entities import CUSTOMER
from db.queries.pages import Page, PageRequest, fetch_page
from db.queries.records import live
from db.queries.text import escape_like, holds_nul
from db.tables import customers


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

    Search matches a name prefix (index-served) or a substring of the name or email.
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
        query = query.where(
            or_(
                customers.c.sort_name.like(f"{needle}%", escape="\\"),
                customers.c.sort_name.like(f"%{needle}%", escape="\\"),
                func.lower(customers.c.email).like(f"%{needle}%", escape="\\"),
            )
        )
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
    page = await fetch_page(
        conn, query, sort=sort_column(sort), id_column=customers.c.id, request=request
    )
    return page, query
