"""Relay connections with opaque keyset cursors."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar
from uuid import UUID

import orjson
import strawberry

T = TypeVar("T")


def first_doc(default: int, items: str = "items") -> str:
    """The description of a page-size argument (``first``) with its default."""
    return (
        f"How many {items}, 1 to the page cap (default {default}; the cap is"
        " FIELDSYNC_MAX_PAGE_SIZE, 100 unless configured); more is refused."
    )


AFTER_DOC = "The `endCursor` of the previous page; omitted: the first page."
# Arguments every list of records takes, described once.
After = Annotated[str | None, strawberry.argument(description=AFTER_DOC)]
OfCustomer = Annotated[
    strawberry.ID | None,
    strawberry.argument(
        description="Only those of this customer (global `id` or uuid); omitted: every"
        " customer's you may see."
    ),
]


@strawberry.type(description="Where a page sits in the whole list.")
class PageInfo:
    """Relay page info."""

    has_next_page: bool = strawberry.field(description="More items follow `endCursor`.")
    has_previous_page: bool = strawberry.field(description="Items precede `startCursor`.")
    start_cursor: str | None = strawberry.field(description="Cursor of the first edge.")
    end_cursor: str | None = strawberry.field(
        description="Cursor of the last edge; pass as `after`."
    )


@strawberry.type(description="One item of a connection and its cursor.")
class Edge(Generic[T]):
    """A Relay edge."""

    cursor: str = strawberry.field(description="Opaque position of this item.")
    node: T = strawberry.field(description="The item.")


@strawberry.type(description="A page of a list, Relay style.")
class Connection(Generic[T]):
    """A Relay connection with a lazily counted total."""

    edges: list[Edge[T]] = strawberry.field(description="The items of this page.")
    page_info: PageInfo = strawberry.field(description="Paging state.")
    counter: strawberry.Private[Callable[[], Awaitable[int]]]

    @strawberry.field(description="How many items the whole list has (with the same filters).")
    async def total_count(self) -> int:
        """Counted only when asked for."""
        return await self.counter()


class InvalidCursorError(ValueError):
    """A cursor that this server did not hand out for this ordering."""


def encode_cursor(sort_value: Any, record_id: UUID) -> str:
    """An opaque cursor for the (sort value, id) keyset position."""
    if isinstance(sort_value, datetime):
        sort_value = {"t": sort_value.isoformat()}
    return base64.urlsafe_b64encode(orjson.dumps([sort_value, str(record_id)])).decode()


def decode_cursor(cursor: str) -> tuple[Any, UUID]:
    """The keyset position of a cursor from :func:`encode_cursor`."""
    try:
        sort_value, raw_id = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
        if isinstance(sort_value, dict):
            sort_value = datetime.fromisoformat(sort_value["t"])
        return sort_value, UUID(raw_id)
    except (binascii.Error, ValueError, TypeError, KeyError) as exc:
        raise InvalidCursorError(f"invalid cursor {cursor!r}") from exc


def build_connection(
    nodes: Sequence[T],
    keys: Sequence[tuple[Any, UUID]],
    *,
    has_next: bool,
    has_previous: bool,
    counter: Callable[[], Awaitable[int]],
) -> Connection[T]:
    """A connection from nodes and their keyset positions."""
    edges = [
        Edge(cursor=encode_cursor(sort, rid), node=node)
        for node, (sort, rid) in zip(nodes, keys, strict=True)
    ]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=has_next,
            has_previous_page=has_previous,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
        counter=counter,
    )
