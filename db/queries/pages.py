"""Keyset pagination shared by every connection field."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sqlalchemy import ColumnElement, Select, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

Row = dict[str, Any]


@dataclass(frozen=True)
class PageRequest:
    """What a client asked for: at most ``first`` rows after the ``after`` key."""

    first: int
    after: tuple[Any, UUID] | None = None
    descending: bool = False


@dataclass(frozen=True)
class Page:
    """One page of rows in order, and whether more follow."""

    rows: list[Row]
    has_next: bool


async def fetch_page(
    conn: AsyncConnection,
    query: Select[Any],
    *,
    sort: ColumnElement[Any],
    id_column: ColumnElement[UUID],
    request: PageRequest,
) -> Page:
    """Rows of ``query`` ordered by (sort, id), the page after the cursor key, one extra
    row fetched to know whether another page follows."""
    key = tuple_(sort, id_column)
    if request.after is not None:
        bound = tuple_(*request.after)
        query = query.where(key < bound if request.descending else key > bound)
    if request.descending:
        query = query.order_by(sort.desc(), id_column.desc())
    else:
        query = query.order_by(sort.asc(), id_column.asc())
    result = await conn.execute(query.limit(request.first + 1))
    keys = list(result.keys())
    rows = [dict(zip(keys, row, strict=True)) for row in result]
    return Page(rows=rows[: request.first], has_next=len(rows) > request.first)


async def count(conn: AsyncConnection, query: Select[Any]) -> int:
    """How many rows ``query`` matches, ignoring order and limits."""
    result = await conn.execute(select(func.count()).select_from(query.order_by(None).subquery()))
    return int(result.scalar_one())


def rows_in_id_order(rows: Sequence[Row], ids: Sequence[UUID]) -> list[Row | None]:
    """Rows lined up with ``ids`` (None where missing), as a DataLoader must return them."""
    by_id = {row["id"]: row for row in rows}
    return [by_id.get(i) for i in ids]
