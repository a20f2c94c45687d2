"""Shared list resolution for contacts, facilities and assets."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from uuid import UUID

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncConnection

from db.entities import EntitySpec
from db.queries import pages, records
from db.queries.pages import Page, PageRequest
from db.queries.records import portal_customer
from resolvers.context import Info, PublicError
from resolvers.loaders import ChildLoaders
from resolvers.writes import page_size
from schema.node import InvalidIdError, from_global_id
from schema.pagination import Connection, InvalidCursorError, build_connection, decode_cursor

T = TypeVar("T")
# A list's cursors hold values of its sort column's type; one of another type was made by
# another list (the customer list by time, say).
OTHER_LIST_CURSOR = (
    "`after` is a cursor of another list: page this list from its own cursors (or from the start)"
)


def parent_filter(**parents: tuple[str | None, str]) -> dict[str, UUID]:
    """{column: uuid} from optional global ids; a malformed id is a client error."""
    equals: dict[str, UUID] = {}
    for column, (global_id, type_name) in parents.items():
        if global_id is None:
            continue
        try:
            equals[column] = from_global_id(global_id, type_name)[1]
        except InvalidIdError as exc:
            raise PublicError(str(exc), "BAD_USER_INPUT") from None
    return equals


async def child_connection(
    info: Info,
    spec: EntitySpec,
    from_row: Callable[[dict[str, Any]], T],
    *,
    equals: dict[str, UUID],
    search: str | None,
    first: int,
    after: str | None,
) -> Connection[T]:
    """A keyset page of child records; portal users see only their customer's."""
    user = await info.context.user()
    confined = portal_customer(user.role.value, user.customer_id)
    if confined is not None:
        equals = {**equals, "customer_id": confined}
    request = page_request(info, first, after, sort_type=str)
    async with info.context.read() as conn:
        page, query = await records.child_page(
            conn, spec, user.org_id, equals=equals, search=search, request=request
        )
    return page_connection(info, request, page, query, from_row, lambda r: (r["_sort"], r["id"]))


def page_request(
    info: Info,
    first: int,
    after: str | None,
    *,
    descending: bool = False,
    sort_type: type | None = None,
) -> PageRequest:
    """A keyset page request from `first` (checked against the cap) and an `after` cursor;
    with ``sort_type``, a cursor whose sort value is of another type (made by a list
    ordered by another kind of value) is refused, not compared in SQL as an error."""
    try:
        cursor = decode_cursor(after) if after else None
    except InvalidCursorError as exc:
        raise PublicError(str(exc), "BAD_USER_INPUT") from None
    size = page_size(info, first)
    if cursor is not None and sort_type is not None and not isinstance(cursor[0], sort_type):
        raise PublicError(OTHER_LIST_CURSOR, "BAD_USER_INPUT")
    return PageRequest(first=size, after=cursor, descending=descending)


def page_connection(
    info: Info,
    request: PageRequest,
    page: Page,
    query: Select[Any],
    from_row: Callable[[dict[str, Any]], T],
    key: Callable[[dict[str, Any]], tuple[Any, UUID]],
) -> Connection[T]:
    """A connection of ``page``; ``totalCount`` counts ``query`` only when asked for."""
    return counted_connection(
        info, request, page, lambda conn: pages.count(conn, query), from_row, key
    )


def counted_connection(
    info: Info,
    request: PageRequest,
    page: Page,
    count: Callable[[AsyncConnection], Awaitable[int]],
    from_row: Callable[[dict[str, Any]], T],
    key: Callable[[dict[str, Any]], tuple[Any, UUID]],
) -> Connection[T]:
    """A connection of ``page``; ``totalCount`` runs ``count`` only when asked for."""

    async def counter() -> int:
        async with info.context.read() as conn:
            return await count(conn)

    return build_connection(
        [from_row(r) for r in page.rows],
        [key(r) for r in page.rows],
        has_next=page.has_next,
        has_previous=request.after is not None,
        counter=counter,
    )


async def children_connection(
    info: Info,
    loaders: ChildLoaders,
    parent: UUID,
    from_row: Callable[[dict[str, Any]], T],
    *,
    first: int,
    after: str | None,
) -> Connection[T]:
    """A page of one parent's children (``Customer.contactsConnection`` and its siblings),
    batched with every other parent's page of the request; the same `first` range and
    cursor errors as every list."""
    request = page_request(info, first, after, sort_type=str)
    page = await loaders.pages.load((parent, request.first, request.after))

    async def counter() -> int:
        return await loaders.counts.load(parent)

    return build_connection(
        [from_row(r) for r in page.rows],
        [(r["_sort"], r["id"]) for r in page.rows],
        has_next=page.has_next,
        has_previous=request.after is not None,
        counter=counter,
    )
