"""The `changes` subscription's place in the schema.

Subscriptions are served by the WebSocket endpoint (``server/websocket.py``: graphql-transport-ws
at ``/graphql``), which compiles the document once (``resolvers.selection_json.changes``),
registers a ``sync.hub.Subscriber`` and shares one encoded payload per batch between
subscribers with equal selections: that is the one implementation. The field here gives
the schema (SDL, introspection, validation) its type and arguments; graphql-core's own
subscribe never runs it in the server (HTTP refuses subscriptions before execution), and
if anything else calls it, it says where subscriptions are served.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Annotated

import strawberry

from resolvers.context import Info, PublicError
from resolvers.sync import TYPES_DOC
from schema.subscriptions import ChangeBatch
from schema.sync import DeviceId, SyncEntity


@strawberry.type
class SyncSubscriptions:
    """Live sync."""

    @strawberry.subscription(
        description="One feed of a device: the changes of `types` for its customers after"
        " `since`, then live batches, in seq order, never a gap."
    )
    async def changes(
        self,
        info: Info,
        device_id: DeviceId,
        since: Annotated[
            str | None,
            strawberry.argument(
                description="The last checkpoint of this feed you applied (from a batch or a"
                " `pull`). Omitted: resume where the server last saw this device's feed of"
                " these types; null: from the beginning."
            ),
        ] = strawberry.UNSET,
        types: Annotated[
            list[SyncEntity] | None, strawberry.argument(description=TYPES_DOC)
        ] = None,
    ) -> AsyncGenerator[ChangeBatch, None]:
        """Served by the WebSocket endpoint, not by this resolver."""
        raise PublicError(
            "Subscriptions are served over WebSocket (graphql-transport-ws) at /graphql",
            "BAD_REQUEST",
        )
        yield  # an async generator, as the schema's subscription field requires
