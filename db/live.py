"""Reads for live subscriptions: one tenant's new changes, and the facts that re-filter them.

The hub (``sync/hub.py``) reads each tenant once per poke with :func:`read_batch`: every
synced row whose current seq lies in ``(after, head]``, with the record's JSON exactly as a
pull page carries it (``db/pull.py``'s expression). The rows come from the entity tables'
``(org_id, seq)`` indexes rather than from ``change_log``: a record written twice in the
range is delivered once, in its newest state, as a pull would deliver it. ``head`` is read
in the same statement (one snapshot); seqs are handed out in commit order
(``db/write_path.py``), so every row at or below it is committed and none can appear there
later.

Anything that changes *which* customers a device sees (a selection or mode change, an
archive or restore) is reported alongside, so the hub can send the affected devices through
a real pull (``db/pull.py``) instead of deciding visibility itself. ``DatabaseSource.users`` is the
periodic re-check of the users behind open subscriptions (deactivation, token revocation,
the sync-by-customer capability), which do not pass through the change log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection

from db import raw
from db.catch_up import pull_group
from db.commands import sync as commands
from db.engine import Database
from db.entities import ENTITIES, EntitySpec, EntityType
from db.errors import NotFoundError, RecordValidationError
from db.pull import BY_RANK, RANK, PulledChange, data_expression
from db.queries import devices as device_queries
from db.queries.devices import selected_customer_ids
from db.queries.users import get_user
from db.user_facts import UserFacts, user_facts
from sync.checkpoint import Checkpoint
from sync.hub import PulledPage, Subscriber, SubscriptionError
from sync.record_shape import complete


@dataclass(frozen=True)
class LiveBatch:
    """A tenant's new rows in ``(after, head]`` and what they change about visibility."""

    after: int
    head: int
    changes: list[PulledChange]
    # Per change (same index): the customer is archived now, so no device sees the row.
    archived: list[bool]
    # Customers archived or restored in the range: devices seeing them need a real pull.
    visibility_changed: frozenset[UUID]
    # Devices (among those asked about) whose selection or mode changed in the range.
    reselected_devices: frozenset[UUID]


def _rows(spec: EntitySpec) -> str:
    rank = RANK[spec.type]
    # For a customer row, "archived or restored in this range" is read off the row itself.
    if spec.type is EntityType.CUSTOMER:
        moved = "(t.archived OR t.restored_seq > $2)"
        archived = "t.archived"
        join = ""
    else:
        moved = "false"
        archived = "c.archived"
        join = "JOIN customers c ON c.org_id = t.org_id AND c.id = t.customer_id"
    return f"""
    (SELECT 1 AS kind, {rank} AS rank, t.id, t.customer_id, t.deleted, t.version, t.seq,
       CASE WHEN t.deleted THEN NULL ELSE {data_expression(spec)} END AS data,
       {archived} AS archived, {moved} AS moved
     FROM {spec.table.name} t {join}
     WHERE t.org_id = $1 AND t.seq > $2 AND t.seq <= (SELECT head FROM h))"""


# A tenant's new rows in one statement (one round trip, one snapshot): the head (kind 0,
# in ``seq``), every row in ``(after, head]`` (kind 1) and, among the devices this process
# serves (``$3``), those whose selection or mode changed in the range (kind 2, in ``id``;
# read by range on the indexes of migration 0013: the window's few rows, whatever the
# number of devices). Seqs are handed out in commit order (``db/write_path.py``) under the
# tenant's ``org_seq`` row lock, so a snapshot that sees the head sees every row below it.
BATCH_SQL = (
    "WITH h AS (SELECT coalesce(max(last_seq), 0) AS head FROM org_seq WHERE org_id = $1)"
    " SELECT 0 AS kind, NULL::int AS rank, NULL::uuid AS id, NULL::uuid AS customer_id,"
    " NULL::boolean AS deleted, NULL::jsonb AS version, h.head AS seq, NULL::jsonb AS data,"
    " NULL::boolean AS archived, NULL::boolean AS moved FROM h"
    " UNION ALL"
    + " UNION ALL".join(_rows(spec) for spec in ENTITIES.values())
    + """
    UNION ALL
    (SELECT 2, NULL, r.device_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL
     FROM (SELECT dc.device_id FROM device_customers dc
           WHERE dc.org_id = $1 AND dc.changed_seq > $2
             AND dc.changed_seq <= (SELECT head FROM h)
           UNION
           SELECT d.id FROM devices d
           WHERE d.org_id = $1 AND d.mode_since_seq > $2
             AND d.mode_since_seq <= (SELECT head FROM h)) r
     WHERE r.device_id = ANY($3::uuid[]))
    ORDER BY kind, seq"""
)


async def read_batch(
    conn: AsyncConnection, *, org_id: UUID, after: int, devices: Sequence[UUID]
) -> LiveBatch:
    """Rows of ``org_id`` with seq in ``(after, head]`` in seq order, and visibility facts
    (``conn``'s transaction is scoped to the tenant)."""
    rows = await raw.fetch(conn, BATCH_SQL, org_id, after, list(devices))
    head = int(rows[0][6])
    if head <= after:
        return LiveBatch(after, after, [], [], frozenset(), frozenset())
    changes: list[PulledChange] = []
    archived: list[bool] = []
    moved: set[UUID] = set()
    reselected: set[UUID] = set()
    for r in rows[1:]:
        if r[0] == 2:
            # Only the devices this process serves: the others' workers read their own.
            reselected.add(r[2])
            continue
        entity = BY_RANK[r[1]]
        data = r[7]
        changes.append(
            PulledChange(
                entity=entity,
                record_id=r[2],
                customer_id=r[3],
                deleted=r[4],
                version=r[5],
                seq=int(r[6]),
                # The row's JSON as stored, completed to the sync shape as a pull's
                # (settings with defaults, addresses with every key, no `archived`).
                data=None if data is None else complete(entity.value, data),
            )
        )
        archived.append(bool(r[8]))
        if r[9]:
            moved.add(r[3])
    return LiveBatch(
        after=after,
        head=head,
        changes=changes,
        archived=archived,
        visibility_changed=frozenset(moved),
        reselected_devices=frozenset(reselected),
    )


def _begin(org_id: UUID) -> str:
    """BEGIN and the tenant as one script (one round trip). The tenant is a formatted UUID,
    never client text."""
    return f"BEGIN READ ONLY; SELECT set_config('app.org_id', '{UUID(str(org_id))}', true)"


def read_only(db: Database, org_id: UUID) -> AbstractAsyncContextManager[AsyncConnection]:
    """A read-only transaction scoped to ``org_id``, begun and committed on the asyncpg
    connection (``db.raw.transaction``): three round trips with one statement where
    ``Database.tenant`` takes four, and none of SQLAlchemy's Python per statement. Each
    round trip waits for a turn of the event loop behind whatever else the worker has to
    do (a reconnect storm's handshakes and catch-up pages)."""
    return raw.transaction(db.engine, _begin(org_id))


async def device_selection(
    conn: AsyncConnection, *, org_id: UUID, device: dict[str, Any]
) -> frozenset[UUID] | None:
    """The customers a device syncs: None for ALL, else its selected customer ids."""
    if device["selection_mode"] == "ALL":
        return None
    return frozenset(await selected_customer_ids(conn, org_id, device["id"]))


async def _discard(conn: AsyncConnection) -> None:
    """Give up a connection whose transaction may be half-way (not handed out again)."""
    try:
        await conn.invalidate()
    finally:
        await conn.close()


async def _commit(conn: AsyncConnection, driver: asyncpg.Connection) -> None:
    """End a live read's transaction and hand its connection back to the pool."""
    try:
        await driver.execute("COMMIT")
    except asyncio.CancelledError:
        await _discard(conn)
        raise
    except Exception:  # noqa: BLE001 - nothing was written: only the connection is lost
        await _discard(conn)
        return
    await conn.close()


class DatabaseSource:
    """The hub's view of the database: live reads, pull pages, user facts.

    Each call is one short tenant-scoped transaction from the pool.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        # Commits of live reads still under way (see :meth:`read`).
        self._commits: set[asyncio.Task[None]] = set()

    async def read(self, org_id: UUID, after: int, devices: Sequence[UUID]) -> LiveBatch:
        """One tenant's new rows (see :func:`read_batch`), back after two round trips on
        the asyncpg connection: BEGIN with the scope, then the statement.

        The read-only transaction commits after the batch has been returned, in a task of
        its own that then hands the connection back to the pool: there is nothing to
        commit, and each round trip of a live read waits for a turn of the event loop,
        behind whatever else the worker has to do (a reconnect storm's handshakes and
        catch-up pages). Through SQLAlchemy the read took six before its batch could go
        out (BEGIN, the scope, the head, the rows, the reselected devices, COMMIT).
        """
        conn = await self.db.engine.connect()
        try:
            driver = await raw.driver(conn)
            await driver.execute(_begin(org_id))
            batch = await read_batch(conn, org_id=org_id, after=after, devices=devices)
        except BaseException:
            await _discard(conn)
            raise
        task = asyncio.create_task(_commit(conn, driver))
        self._commits.add(task)
        task.add_done_callback(self._commits.discard)
        return batch

    async def pull(
        self, subscriber: Subscriber, since: Checkpoint | None, limit: int
    ) -> PulledPage:
        """A page of the subscriber's feed, with the same checks as the `pull` query.

        The user is re-read first, so a re-filtering pull also notices a deactivation.
        """
        org_id = subscriber.org_id
        types = (
            frozenset(EntityType)
            if subscriber.types is None
            else frozenset(EntityType(t) for t in subscriber.types)
        )
        async with self.db.tenant(org_id) as conn:
            user = await get_user(conn, org_id, subscriber.user_id)
            if user is None or not user["active"] or user["token_epoch"] != subscriber.token_epoch:
                raise SubscriptionError("This token was revoked: sign in again", "UNAUTHENTICATED")
            try:
                page = await commands.pull(
                    conn,
                    org_id=org_id,
                    user_id=subscriber.user_id,
                    device_id=subscriber.device_id,
                    may_select=user["role"] == "ADMIN" or bool(user["can_sync_by_customer"]),
                    since=since,
                    limit=limit,
                    types=types,
                )
            except NotFoundError:
                raise SubscriptionError(
                    "no such device of yours: register it first", "NOT_FOUND"
                ) from None
            except RecordValidationError as exc:
                raise SubscriptionError(str(exc), "BAD_USER_INPUT") from None
            selection: frozenset[UUID] | None = None
            if not page.has_more:
                # Read after the page: a capability withdrawal switched the device to ALL.
                current = await device_queries.get(conn, org_id, subscriber.device_id)
                assert current is not None
                selection = await device_selection(conn, org_id=org_id, device=current)
        return PulledPage(
            changes=page.changes,
            checkpoint=page.checkpoint,
            has_more=page.has_more,
            reset=page.reset,
            selection=selection,
        )

    async def pull_group(
        self, requests: Sequence[tuple[Subscriber, Checkpoint | None]], limit: int
    ) -> list[PulledPage | SubscriptionError | None]:
        """First pages of subscribers that join together (see ``db/catch_up.py``)."""
        return await pull_group(self.db, requests, limit)

    async def users(self, org_id: UUID, user_ids: Sequence[UUID]) -> dict[UUID, UserFacts]:
        """Current facts of the users behind a tenant's subscriptions."""
        async with self.db.tenant(org_id) as conn:
            return await user_facts(conn, org_id, user_ids)
