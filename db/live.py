"""Reads for live subscriptions: one tenant's new changes, and the facts that re-filter them.

The hub (``sync/hub.py``) reads each tenant once per poke with :func:`read_batch`: every
synced row whose current seq lies in ``(after, head]``, with the record's JSON exactly as a
pull page carries it (``db/pull.py``'s expression). The rows come from the entity tables'
``(org_id, seq)`` indexes rather than from ``change_log``: a record written twice in the
range is delivered once, in its newest state, as a pull would deliver it. ``head`` is read
first; seqs are handed out in commit order (``db/write_path.py``), so every row at or below
it is committed and none can appear there later.

Anything that changes *which* customers a device sees (a selection or mode change, an
archive or restore) is reported alongside, so the hub can send the affected devices through
a real pull (``db/pull.py``) instead of deciding visibility itself. ``DatabaseSource.users`` is the
periodic re-check of the users behind open subscriptions (deactivation, token revocation,
the sync-by-customer capability), which do not pass through the change log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sqlalchemy import BigInteger, bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection

from db.catch_up import pull_group
from db.commands import sync as commands
from db.engine import Database
from db.entities import ENTITIES, EntitySpec, EntityType
from db.errors import NotFoundError, RecordValidationError
from db.pull import BY_RANK, RANK, PulledChange, data_expression
from db.queries import devices as device_queries
from db.queries.devices import selected_customer_ids
from db.queries.orgs import head_seq
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
        moved = "(t.archived OR t.restored_seq > :after)"
        archived = "t.archived"
        join = ""
    else:
        moved = "false"
        archived = "c.archived"
        join = "JOIN customers c ON c.org_id = t.org_id AND c.id = t.customer_id"
    return f"""
    (SELECT {rank} AS rank, t.id, t.customer_id, t.deleted, t.version, t.seq,
       CASE WHEN t.deleted THEN NULL ELSE {data_expression(spec)} END AS data,
       {archived} AS archived, {moved} AS moved
     FROM {spec.table.name} t {join}
     WHERE t.org_id = :org AND t.seq > :after AND t.seq <= :head)"""


BATCH_SQL = text(
    "SELECT * FROM ("
    + " UNION ALL ".join(_rows(spec) for spec in ENTITIES.values())
    + ") u ORDER BY seq"
).bindparams(bindparam("after", type_=BigInteger), bindparam("head", type_=BigInteger))

# The devices whose selection or mode changed within the window, read by range on the
# indexes of migration 0013: the window's few rows, whatever the number of devices.
RESELECTED_SQL = text(
    """
    SELECT dc.device_id FROM device_customers dc
    WHERE dc.org_id = :org AND dc.changed_seq > :after AND dc.changed_seq <= :head
    UNION
    SELECT d.id FROM devices d
    WHERE d.org_id = :org AND d.mode_since_seq > :after AND d.mode_since_seq <= :head
    """
).bindparams(bindparam("after", type_=BigInteger), bindparam("head", type_=BigInteger))


async def read_batch(
    conn: AsyncConnection, *, org_id: UUID, after: int, devices: Sequence[UUID]
) -> LiveBatch:
    """Rows of ``org_id`` with seq in ``(after, head]`` in seq order, and visibility facts."""
    head = await head_seq(conn, org_id)
    if head <= after:
        return LiveBatch(after, after, [], [], frozenset(), frozenset())
    params: dict[str, Any] = {"org": org_id, "after": after, "head": head}
    rows = (await conn.execute(BATCH_SQL, params)).mappings().all()
    reselected: frozenset[UUID] = frozenset()
    if devices:
        # Only the devices this process serves matter; the others' workers read their own.
        result = await conn.execute(RESELECTED_SQL, params)
        reselected = frozenset(result.scalars()).intersection(devices)
    changes = [
        PulledChange(
            entity=BY_RANK[r["rank"]],
            record_id=r["id"],
            customer_id=r["customer_id"],
            deleted=r["deleted"],
            version=r["version"],
            seq=int(r["seq"]),
            # The row's JSON as stored, completed to the sync shape as a pull's (settings
            # with defaults, addresses with every key, no `archived`).
            data=None if r["data"] is None else complete(BY_RANK[r["rank"]].value, r["data"]),
        )
        for r in rows
    ]
    return LiveBatch(
        after=after,
        head=head,
        changes=changes,
        archived=[bool(r["archived"]) for r in rows],
        visibility_changed=frozenset(r["customer_id"] for r in rows if r["moved"]),
        reselected_devices=reselected,
    )


async def device_selection(
    conn: AsyncConnection, *, org_id: UUID, device: dict[str, Any]
) -> frozenset[UUID] | None:
    """The customers a device syncs: None for ALL, else its selected customer ids."""
    if device["selection_mode"] == "ALL":
        return None
    return frozenset(await selected_customer_ids(conn, org_id, device["id"]))


class DatabaseSource:
    """The hub's view of the database: live reads, pull pages, user facts.

    Each call is one short tenant-scoped transaction from the pool.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    async def read(self, org_id: UUID, after: int, devices: Sequence[UUID]) -> LiveBatch:
        """One tenant's new rows (see :func:`read_batch`)."""
        async with self.db.tenant(org_id) as conn:
            return await read_batch(conn, org_id=org_id, after=after, devices=devices)

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
