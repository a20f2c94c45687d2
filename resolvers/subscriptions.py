"""The `changes` subscription resolver: an async generator that hands off to the hub.

The WebSocket endpoint (``server/websocket.py``) serves `changes` itself, sharing one
encoded payload between subscribers; this resolver is what ``schema.subscribe`` (and so
GraphiQL, SDL and any other transport) runs. Both register a ``sync.hub.Subscriber``, so
catch-up, the no-gap rule and re-filtering are the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Hashable
from typing import Annotated, Any

import strawberry

from db.commands import sync as commands
from db.errors import RecordValidationError
from resolvers.context import Info, PublicError
from resolvers.sync import TYPES_DOC, change_from, feed_position, feed_types, record_uuid
from schema.subscriptions import ChangeBatch
from schema.sync import SyncEntity
from server.auth import read_token
from sync.hub import Batch, Hub, Subscriber, SubscriptionError

QUEUE_SIZE = 64


class QueueSink:
    """Batches for one generator; a consumer that falls behind ends with SLOW_CONSUMER."""

    group_key: Hashable | None = None

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Batch | SubscriptionError] = asyncio.Queue(QUEUE_SIZE)

    def encode(self, batch: Batch) -> Any:
        """Nothing is shared: the generator's caller executes the selection."""
        return None

    def offer(self, batch: Batch, encoded: Any) -> None:
        """Queue a live batch without waiting."""
        if self.queue.full():
            self.fail(SubscriptionError("the consumer fell behind: resume", "SLOW_CONSUMER"))
            return
        self.queue.put_nowait(batch)

    async def put(self, batch: Batch) -> None:
        """Queue a catch-up page (waits for room)."""
        await self.queue.put(batch)

    def fail(self, error: SubscriptionError) -> None:
        """End the generator with ``error``."""
        while self.queue.full():
            self.queue.get_nowait()
        self.queue.put_nowait(error)

    def revoke(self, reason: str) -> None:
        """The user was deactivated or the token revoked."""
        self.fail(SubscriptionError(reason, "UNAUTHENTICATED"))


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
        device_id: Annotated[
            strawberry.ID, strawberry.argument(description="Your registered device.")
        ],
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
        """Catch up from `since`, then follow the hub's live batches."""
        user = await info.context.user()
        secret = info.context.settings.secret_key
        assert secret is not None
        assert info.context.token is not None
        claims = read_token(secret, info.context.token)
        feed = feed_types(types)
        # Omitted: the server's own position for the feed (db/commands/sync.py).
        position = None if since is strawberry.UNSET else feed_position(since, feed)
        try:
            device = record_uuid(device_id, "deviceId")
        except RecordValidationError as exc:
            raise PublicError(str(exc), "BAD_USER_INPUT") from None
        hub: Hub = info.context.request.app.state.hub
        sink = QueueSink()
        subscriber = Subscriber(
            org_id=user.org_id,
            user_id=user.id,
            device_id=device,
            token_epoch=claims.epoch,
            sink=sink,
            since=position,
            types=None if types is None else frozenset(t.value for t in feed),
            feed=commands.feed_name(feed),
        )
        hub.add(subscriber)
        try:
            while True:
                item = await sink.queue.get()
                if isinstance(item, SubscriptionError):
                    raise PublicError(str(item), item.code)
                yield ChangeBatch(
                    changes=[change_from(c) for c in item.changes],  # type: ignore[arg-type]
                    checkpoint=item.checkpoint,
                    reset=item.reset,
                )
        finally:
            hub.remove(subscriber)
