"""The `changes` subscription resolver: an async generator that hands off to the hub.

The WebSocket endpoint (``server/websocket.py``) serves `changes` itself, sharing one
encoded payload between subscribers; this resolver is what ``schema.subscribe`` (and so
GraphiQL, SDL and any other transport) runs. Both register a ``sync.hub.Subscriber``, so
catch-up, the no-gap rule and re-filtering are the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Hashable
from typing import Any

import strawberry

from db.errors import RecordValidationError
from resolvers.context import Info, PublicError
from resolvers.sync import change_from, record_uuid
from schema.subscriptions import ChangeBatch
from server.auth import read_token
from sync import checkpoint as checkpoints
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
        description="Changes for a device's customers: everything after `since` (null: from"
        " the start), then live batches, in seq order, never a gap."
    )
    async def changes(
        self, info: Info, device_id: strawberry.ID, since: str | None = None
    ) -> AsyncGenerator[ChangeBatch, None]:
        """Catch up from `since`, then follow the hub's live batches."""
        user = await info.context.user()
        secret = info.context.settings.secret_key
        assert secret is not None
        assert info.context.token is not None
        claims = read_token(secret, info.context.token)
        try:
            device = record_uuid(device_id, "deviceId")
            position = checkpoints.decode(since)
        except (RecordValidationError, checkpoints.InvalidCheckpointError) as exc:
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
                    evicted_customer_ids=[strawberry.ID(str(c)) for c in item.evicted],
                )
        finally:
            hub.remove(subscriber)
