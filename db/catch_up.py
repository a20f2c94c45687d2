"""Grouped catch-up: the first pull pages of subscribers that join together, in one go.

A subscription starts with a pull from its checkpoint (``db/live.py``'s
``DatabaseSource.pull``): a transaction of its own, a user lookup, the pull's statements
and two reads of the device's selection. When thousands of devices subscribe at once (a
reconnect storm, a server restart), that is ~10 round trips and a pooled connection each,
and catch-up is bound by their latency rather than by the machine.

:func:`pull_group` serves the first pages of a group of subscribers of one tenant in one
transaction: one lookup of every user behind them, then each subscriber's pull
(``db.commands.sync.pull``: the pull's own statements, so its pages, positions and
bookkeeping are exactly those of a single pull), then one read of the selections of every
device whose pull ended. A subscriber's own refusal (revoked token, unknown device, a
checkpoint ahead of the server) is its own result; anything else (a database error, a
deadlock) fails the group and the hub pulls its members one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from db.commands import sync as commands
from db.engine import Database
from db.entities import EntityType
from db.errors import NotFoundError, RecordValidationError
from db.live import user_facts
from db.pull import PullPage
from db.queries.devices import selections
from db.tables import devices
from sync.checkpoint import Checkpoint
from sync.hub import PulledPage, Subscriber, SubscriptionError

# One transaction holds a FOR KEY SHARE lock on each member's device until it commits
# (pushes of those devices wait that long): groups stay small enough to commit quickly.
MAX_GROUP = 64


async def device_selections(
    conn: AsyncConnection, org_id: UUID, device_ids: Sequence[UUID]
) -> dict[UUID, frozenset[UUID] | None]:
    """Per device: None for ALL, else its selected customers (two statements in all)."""
    if not device_ids:
        return {}
    result = await conn.execute(
        select(devices.c.id, devices.c.selection_mode).where(
            devices.c.org_id == org_id, devices.c.id.in_(list(device_ids))
        )
    )
    modes = {row.id: row.selection_mode for row in result}
    chosen = await selections(conn, org_id, [d for d, mode in modes.items() if mode != "ALL"])
    return {d: None if mode == "ALL" else frozenset(chosen.get(d, ())) for d, mode in modes.items()}


async def pull_group(
    db: Database,
    requests: Sequence[tuple[Subscriber, Checkpoint | None]],
    limit: int,
) -> list[PulledPage | SubscriptionError]:
    """The next page of each ``(subscriber, since)`` of one tenant, in one transaction.

    Results are in the order of ``requests``; raises if the transaction fails.
    """
    if not requests:
        return []
    org_id = requests[0][0].org_id
    assert all(sub.org_id == org_id for sub, _ in requests)
    results: list[PulledPage | SubscriptionError | None] = [None] * len(requests)
    async with db.tenant(org_id) as conn:
        users = await user_facts(
            conn, org_id=org_id, user_ids=list({sub.user_id for sub, _ in requests})
        )
        pages: dict[int, PullPage] = {}
        for n, (sub, since) in enumerate(requests):
            facts = users.get(sub.user_id)
            if facts is None or not facts.active or facts.token_epoch != sub.token_epoch:
                results[n] = SubscriptionError(
                    "This token was revoked: sign in again", "UNAUTHENTICATED"
                )
                continue
            types = (
                frozenset(EntityType)
                if sub.types is None
                else frozenset(EntityType(t) for t in sub.types)
            )
            try:
                pages[n] = await commands.pull(
                    conn,
                    org_id=org_id,
                    user_id=sub.user_id,
                    device_id=sub.device_id,
                    may_select=facts.may_select,
                    since=since,
                    limit=limit,
                    types=types,
                )
            except NotFoundError:
                results[n] = SubscriptionError(
                    "no such device of yours: register it first", "NOT_FOUND"
                )
            except RecordValidationError as exc:
                results[n] = SubscriptionError(str(exc), "BAD_USER_INPUT")
        # Read after the pages, as a single pull does: a capability withdrawal switched a
        # device to ALL.
        finished = [requests[n][0].device_id for n, page in pages.items() if not page.has_more]
        chosen = await device_selections(conn, org_id, finished)
    for n, page in pages.items():
        results[n] = PulledPage(
            changes=page.changes,
            checkpoint=page.checkpoint,
            has_more=page.has_more,
            reset=page.reset,
            selection=None if page.has_more else chosen.get(requests[n][0].device_id),
        )
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]
