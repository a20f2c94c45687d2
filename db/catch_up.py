"""Grouped catch-up: the first pull pages of subscribers that join together, in one go.

A subscription starts with a pull from its checkpoint (``db/live.py``'s
``DatabaseSource.pull``): a transaction of its own, a user lookup, the pull's statements
(the device read, its lock, the head, the page's setup, the page, the bookkeeping) and two
reads of the device's selection, with the page statement planned for its values (2-4 ms
of PostgreSQL CPU, more than running it). When thousands of devices subscribe at once (a
reconnect storm, a server restart), that was ~10 round trips, a pooled connection and a
plan each: 5,000 subscribers took 4-5 ms of PostgreSQL CPU apiece, most of a minute.

:func:`pull_group` serves the next page of each member of a group of subscribers of one
tenant in one transaction of set-based statements, whatever the number of members: one
lookup of every user behind them, one lock of every device (in id order), the head, one
page statement for all of them (``db.pull.pull_pages``: the pull's own statement run per
member through a lateral join, planned once per connection), one bookkeeping update and
one read of the selections. Pages, checkpoints and bookkeeping are exactly a single
pull's (``db.commands.sync.pull``). A member the group cannot serve that way is left to
pull alone (its result is None): a device whose owner lost the sync-by-customer
capability (its pull switches it to ALL, under a stronger lock) and a second member on the
same device (each feed's bookkeeping merges into the row the other left). A member's own
refusal (revoked token, unknown device, a checkpoint ahead of the server) is its own
result; anything else (a database error, a deadlock) fails the group and the hub pulls
its members one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from db import raw
from db.commands.sync import resume_position
from db.engine import READ_PLANNING, Database
from db.entities import EntityType
from db.errors import RecordValidationError
from db.pull import PageRequest, PullPage, pull_pages
from db.user_facts import UserFacts, user_facts
from sync.checkpoint import Checkpoint
from sync.hub import PulledPage, Subscriber, SubscriptionError

# One transaction holds a FOR KEY SHARE lock on each member's device until it commits
# (pushes of those devices wait that long): groups stay small enough to commit quickly.
MAX_GROUP = 64

# Planner settings of a group's transaction (transaction-local, set with the tenant in one
# round trip). The page statement runs once per member with values the planner cannot
# see, so it is planned once per connection (a generic plan) instead of per group. Without
# the values, it guessed that a member selects a third of the tenant's customers and
# hashed the whole customers table once per member (1 ms each, 2,000 customers) where a
# member selecting ten needs ten key lookups: nested loops over the index walks serve
# every member, and no statement of the group needs a hash or merge join. JIT is off: the
# estimated cost of 64 lateral pages put the statement above ``jit_above_cost``, and
# compiling it took 0.7 s for a statement that runs in 10 ms.
GROUP_PLANNING = {
    **READ_PLANNING,
    "plan_cache_mode": "force_generic_plan",
    "enable_hashjoin": "off",
    "enable_mergejoin": "off",
    "jit": "off",
}
_GROUP_CONFIG = "".join(
    f", set_config('{name}', '{value}', true)" for name, value in GROUP_PLANNING.items()
)


def _begin(org_id: UUID) -> str:
    """BEGIN, the tenant and the planner settings as one script (one round trip). The
    tenant is a formatted UUID, never client text."""
    return f"BEGIN; SELECT set_config('app.org_id', '{UUID(str(org_id))}', true){_GROUP_CONFIG}"


def _transaction(db: Database, org_id: UUID) -> AbstractAsyncContextManager[AsyncConnection]:
    """A transaction scoped to ``org_id`` with the group's planner settings, run on the
    asyncpg connection (``db.raw.transaction``: a group's statements are few and set-based,
    and each statement through SQLAlchemy cost more Python than PostgreSQL); commits on
    success."""
    return raw.transaction(db.engine, _begin(org_id))


# The members' devices with the tenant's compaction horizon, locked as a pull locks its
# device (``db.commands.sync.lock_for_feed``: FOR KEY SHARE keeps selection changes and
# pushes out while the pages are built, not the devices' other feeds), in id order so two
# groups locking overlapping devices queue instead of deadlocking.
LOCK_DEVICES = """
SELECT d.*, o.compacted_seq FROM devices d JOIN orgs o ON o.org_id = d.org_id
WHERE d.org_id = $1 AND d.id = ANY($2::uuid[])
ORDER BY d.id
FOR KEY SHARE OF d
"""

# A pull's bookkeeping (``db.commands.sync.RECORD_PULL`` and ``RECORD_PAGE``) for every
# member at once: ``record`` false is a page that leaves the feed's positions as they are
# (a pull under way from a position already recorded), which records only the pull.
RECORD_PULLS = """
UPDATE devices d SET
  last_pull_at = $2,
  head_at_last_pull = GREATEST(d.head_at_last_pull, $3),
  feed_positions = CASE WHEN u.record THEN d.feed_positions || u.positions::jsonb
    ELSE d.feed_positions END,
  last_synced = CASE WHEN u.record THEN d.last_synced || u.synced::jsonb
    ELSE d.last_synced END,
  checkpoint_seq = CASE WHEN u.record THEN (
      SELECT coalesce(min(p.value::bigint), 0)
      FROM jsonb_each_text(d.feed_positions || u.positions::jsonb) p)
    ELSE d.checkpoint_seq END
FROM unnest($4::uuid[], $5::boolean[], $6::text[], $7::text[]) AS u(id, record, positions, synced)
WHERE d.org_id = $1 AND d.id = u.id
"""

# The head, read under the device locks (a selection change committed before it is below
# it, and none can commit until the pages are done), with the selected customers of the
# devices, which the locks keep as the pages see them. The head comes on every row; a
# row without a device when none selects any customer.
HEAD_AND_SELECTIONS = """
SELECT h.head, dc.device_id, dc.customer_id
FROM (SELECT coalesce(max(last_seq), 0) AS head FROM org_seq WHERE org_id = $1) h
LEFT JOIN device_customers dc
  ON dc.org_id = $1 AND dc.device_id = ANY($2::uuid[]) AND dc.selected
"""

_REVOKED = ("This token was revoked: sign in again", "UNAUTHENTICATED")
_NO_DEVICE = ("no such device of yours: register it first", "NOT_FOUND")
_AHEAD = RecordValidationError({"since": "is ahead of the server: not a checkpoint it issued"})


def _types(subscriber: Subscriber) -> frozenset[EntityType]:
    if subscriber.types is None:
        return frozenset(EntityType)
    return frozenset(EntityType(t) for t in subscriber.types)


async def _head_and_selections(
    conn: AsyncConnection, org_id: UUID, device_ids: Sequence[UUID]
) -> tuple[int, dict[UUID, frozenset[UUID]]]:
    """The tenant's head and the selected customers of each of ``device_ids``."""
    rows = await raw.fetch(conn, HEAD_AND_SELECTIONS, org_id, list(device_ids))
    chosen: dict[UUID, set[UUID]] = {d: set() for d in device_ids}
    for row in rows:
        if row[1] is not None:
            chosen[row[1]].add(row[2])
    return int(rows[0][0]), {d: frozenset(c) for d, c in chosen.items()}


async def pull_group(
    db: Database,
    requests: Sequence[tuple[Subscriber, Checkpoint | None]],
    limit: int,
) -> list[PulledPage | SubscriptionError | None]:
    """The next page of each ``(subscriber, since)`` of one tenant, in one transaction.

    Results are in the order of ``requests``; None: pull that member alone. Raises if the
    transaction fails.
    """
    if not requests:
        return []
    org_id = requests[0][0].org_id
    assert all(sub.org_id == org_id for sub, _ in requests)
    results: list[PulledPage | SubscriptionError | None] = [None] * len(requests)
    async with _transaction(db, org_id) as conn:
        users = await user_facts(conn, org_id, list({sub.user_id for sub, _ in requests}))
        allowed: list[tuple[int, UserFacts]] = []
        for n, (sub, _) in enumerate(requests):
            facts = users.get(sub.user_id)
            if facts is None or not facts.active or facts.token_epoch != sub.token_epoch:
                results[n] = SubscriptionError(*_REVOKED)
            else:
                allowed.append((n, facts))
        if not allowed:
            return results
        device_ids = sorted({requests[n][0].device_id for n, _ in allowed})
        locked = {
            row["id"]: dict(row) for row in await raw.fetch(conn, LOCK_DEVICES, org_id, device_ids)
        }
        head, chosen = await _head_and_selections(
            conn, org_id, [d for d, row in locked.items() if row["selection_mode"] != "ALL"]
        )
        members: list[tuple[int, PageRequest, bool]] = []
        taken: set[UUID] = set()
        compacted_seq = 0
        for n, facts in allowed:
            sub, since = requests[n]
            device = locked.get(sub.device_id)
            if device is None or device["user_id"] != sub.user_id or not device["active"]:
                results[n] = SubscriptionError(*_NO_DEVICE)
                continue
            if (device["selection_mode"] == "SELECTED" and not facts.may_select) or (
                sub.device_id in taken
            ):
                continue  # pulled alone (see the module's docstring)
            taken.add(sub.device_id)
            compacted_seq = int(device["compacted_seq"])
            types = _types(sub)
            restart = False
            if since is None:
                since, restart = resume_position(device, types)
            if since.seq > head:
                results[n] = SubscriptionError(str(_AHEAD), "BAD_USER_INPUT")
                continue
            members.append((n, PageRequest(device, since, types), restart))
        if not members:
            return results
        pages = await pull_pages(
            conn,
            org_id=org_id,
            requests=[request for _, request, _ in members],
            limit=limit,
            compacted_seq=compacted_seq,
            head=head,
        )
        pages = [
            replace(page, reset=True) if restart and not page.reset else page
            for page, (_, _, restart) in zip(pages, members, strict=True)
        ]
        await _record_pulls(conn, org_id, [r for _, r, _ in members], pages)
    for (n, request, _), page in zip(members, pages, strict=True):
        # The selection the device ends its catch-up with (locked: as the pages saw it).
        selection = (
            None if request.device["selection_mode"] == "ALL" else chosen.get(request.device["id"])
        )
        results[n] = PulledPage(
            changes=page.changes,
            checkpoint=page.checkpoint,
            has_more=page.has_more,
            reset=page.reset,
            selection=None if page.has_more else selection,
        )
    return results


async def _record_pulls(
    conn: AsyncConnection,
    org_id: UUID,
    requests: Sequence[PageRequest],
    pages: Sequence[PullPage],
) -> None:
    """Each member's pull bookkeeping, as ``db.commands.sync.pull`` records it, in one
    statement: per type of the feed, where the device stands (the page's checkpoint once
    the feed is caught up, else the seq the pull started from)."""
    now = datetime.now(UTC)
    ids: list[UUID] = []
    record: list[bool] = []
    positions: list[str] = []
    synced: list[str] = []
    for request, page in zip(requests, pages, strict=True):
        # Mid-pull the type stands where the pull started (0 after a reset): its
        # tombstones from there on are still due, and compaction must keep them.
        mark = page.checkpoint.since if page.has_more else page.checkpoint.seq
        held: dict[str, Any] = request.device["feed_positions"]
        ids.append(request.device["id"])
        if page.has_more and all(held.get(t.value) == mark for t in request.types):
            record.append(False)
            positions.append("{}")
            synced.append("{}")
            continue
        record.append(True)
        positions.append(orjson.dumps({t.value: mark for t in request.types}).decode())
        synced.append(
            "{}"
            if page.has_more
            else orjson.dumps({t.value: now.isoformat() for t in request.types}).decode()
        )
    head = max(page.head for page in pages)
    await raw.execute(conn, RECORD_PULLS, org_id, now, head, ids, record, positions, synced)
