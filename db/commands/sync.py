"""Device sync commands: register, select customers, pull bookkeeping, state, conflicts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import bindparam, select, text, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from db import raw
from db.commands.records import (
    CHILDREN,
    PLURAL,
    field_definitions,
    merge_keyed_fields,
    write_one,
)
from db.engine import READ_PLANNING
from db.entities import ENTITIES, EntityType
from db.errors import (
    EMAIL_TAKEN,
    EmailTakenError,
    ForbiddenError,
    HasAttachedRecordsError,
    NotFoundError,
    RecordValidationError,
)
from db.pull import PullPage, pull_page
from db.queries import devices as queries
from db.queries import records
from db.queries.orgs import head_seq
from db.tables import devices, orgs, sync_conflicts
from db.write_path import RecordWrite, lock_rows
from sync.checkpoint import Checkpoint, feed_of
from sync.sync_status import DeviceFacts, SyncStatus, status
from sync.validation import shape_errors, validate_record, values_from_json

Row = dict[str, Any]
SERVER_REPLICA = "server"


async def owned_device(
    conn: AsyncConnection,
    org_id: UUID,
    user_id: UUID,
    device_id: UUID,
    *,
    lock: bool = False,
    admin: bool = False,
) -> Row:
    """The caller's device (an admin may read any device of the tenant); else NotFound."""
    device = await queries.get(conn, org_id, device_id, lock=lock)
    if device is None or (device["user_id"] != user_id and not admin) or not device["active"]:
        raise NotFoundError("device", device_id)
    return device


async def select_customers(
    conn: AsyncConnection,
    *,
    org_id: UUID,
    device: Row,
    may_select: bool,
    mode: str,
    customer_ids: Sequence[UUID],
) -> Row:
    """Set a device's selection; SELECTED needs the sync-by-customer capability."""
    if mode == "SELECTED" and not may_select:
        raise ForbiddenError("choosing customers needs the 'sync by customer' capability")
    missing = set(customer_ids) - await queries.live_customer_ids(conn, org_id, customer_ids)
    if missing:
        raise RecordValidationError(
            {"customerIds": f"unknown customers: {sorted(map(str, missing))}"}
        )
    return await queries.set_selection(
        conn, org_id=org_id, device=device, mode=mode, customer_ids=customer_ids
    )


def feed_name(types: frozenset[EntityType]) -> str:
    """The checkpoint feed name of ``types`` (``sync/checkpoint.py``)."""
    return feed_of([t.value for t in types], [t.value for t in EntityType])


def resume_position(device: Row, types: frozenset[EntityType]) -> tuple[Checkpoint, bool]:
    """Where a feed resumes when the device sends no checkpoint, and whether it restarts.

    The slowest of the types' positions: a faster type gets some changes again, which is
    harmless, where a later start would skip changes. A type with no position was never
    pulled: the feed starts from the beginning, marked reset if the device holds some of
    its other types (a start from the beginning sends no deletes).
    """
    feed = feed_name(types)
    positions = device["feed_positions"]
    held = [positions[t.value] for t in types if t.value in positions]
    if held and len(held) == len(types) and min(held) > 0:
        return Checkpoint(int(min(held)), feed=feed), False
    return Checkpoint(feed=feed), bool(held)


# Only the feed's own types are merged into the positions, in one statement on the locked
# row: a concurrent feed's UPDATE waits for this transaction and then merges into the row
# as committed, so neither overwrites the other's types, and checkpoint_seq (the slowest
# type) is computed from the merged positions.
RECORD_PULL = text(
    """
    UPDATE devices SET
      last_pull_at = :now,
      head_at_last_pull = GREATEST(head_at_last_pull, :head),
      feed_positions = feed_positions || :positions,
      last_synced = last_synced || :synced,
      checkpoint_seq = (
        SELECT coalesce(min(p.value::bigint), 0)
        FROM jsonb_each_text(feed_positions || :positions) p)
    WHERE org_id = :org AND id = :device
    """
).bindparams(bindparam("positions", type_=JSONB), bindparam("synced", type_=JSONB))
# A page that leaves the feed's positions as the device row has them (a pull under way,
# from a position already recorded) only records the pull: nearly every page, so a fixed
# text on asyncpg (``db.raw``) rather than a statement through SQLAlchemy.
RECORD_PAGE = """
    UPDATE devices SET last_pull_at = $3, head_at_last_pull = GREATEST(head_at_last_pull, $4)
    WHERE org_id = $1 AND id = $2
    """


# Starts a pull page (migration 0014): the device read, ownership checked and locked FOR KEY
# SHARE as :func:`lock_for_feed` locks it, with the tenant's compaction horizon, the head seq
# read after the lock, and, given a checkpoint, the page setup of ``db.pull.PAGE_SETUP``
# (whether the page needs its backfill parts, and the plan cache mode). No row: no such
# device of the caller's; ``locked`` false: a device in SELECTED mode whose user may not
# select, read but neither locked nor set up.
PULL_START = "SELECT * FROM fieldsync_pull_start($1, $2, $3, $4, $5, $6, $7)"
# Transaction-local settings the start applies once the device is locked: the read planner
# settings, and an asynchronous commit. A pull page writes only the device's bookkeeping
# (positions, last pull), which a crash may lose without harm: a device whose positions are
# older than what it pulled is sent some changes again and keeps tombstones from compaction
# a little longer. Waiting for the WAL flush at every page's COMMIT cost 2-4 ms a page
# (110 pages of an initial sync; loaded machine). The switch of a device to ALL (its user lost the
# capability) is not a page's bookkeeping: that path sets nothing and commits durably.
PULL_SETTINGS = {
    **{name: value for name, value in READ_PLANNING.items() if name != "plan_cache_mode"},
    "synchronous_commit": "off",
}
PULL_START_SETTINGS = (list(PULL_SETTINGS), list(PULL_SETTINGS.values()))


async def lock_for_feed(conn: AsyncConnection, org_id: UUID, user_id: UUID, device_id: UUID) -> Row:
    """The caller's device, locked FOR KEY SHARE until the transaction ends.

    That lock keeps selection changes and pushes (FOR UPDATE) out while the page is built,
    so the page sees one selection, but not the device's other feeds: their locks share it,
    and their bookkeeping UPDATEs (FOR NO KEY UPDATE) do not conflict with it either.
    """
    query = (
        select(devices)
        .where(devices.c.org_id == org_id, devices.c.id == device_id)
        .with_for_update(read=True, key_share=True)
    )
    row = (await conn.execute(query)).mappings().first()
    if row is None or row["user_id"] != user_id or not row["active"]:
        raise NotFoundError("device", device_id)
    return dict(row)


async def pull(
    conn: AsyncConnection,
    *,
    org_id: UUID,
    user_id: UUID,
    device_id: UUID,
    may_select: bool,
    since: Checkpoint | None,
    limit: int,
    types: frozenset[EntityType] = frozenset(EntityType),
) -> PullPage:
    """One page of the caller's device's feed of ``types``, and the device's bookkeeping.

    ``since`` is a checkpoint of that feed (``Checkpoint(feed=...)``: from the beginning);
    None resumes from the device's own position for those types (:func:`resume_position`).
    Records, per type of the feed, where the device stands: the page's checkpoint once the
    feed is caught up, else the seq the pull started from; the device's checkpoint_seq is
    the slowest type's.
    """
    # The device, its lock, the head and the page's setup in one round trip
    # (``fieldsync_pull_start``, migration 0014: the same statements in the same order).
    rows = await raw.fetch(
        conn,
        PULL_START,
        org_id,
        user_id,
        device_id,
        may_select,
        None if since is None else since.since,
        *PULL_START_SETTINGS,
    )
    if not rows:
        raise NotFoundError("device", device_id)
    start = rows[0]
    compacted_seq = int(start["compacted"])
    backfill: bool | None = start["backfill"]
    if start["locked"]:
        device: Row = {
            "id": device_id,
            "user_id": user_id,
            "active": True,
            "selection_mode": start["mode"],
            "mode_since_seq": start["mode_since"],
            "selected_since_seq": start["selected_since"],
            "feed_positions": start["positions"],
        }
        head = int(start["head"])
    else:
        # The capability was withdrawn: the device syncs everything again. Locked for the
        # switch before any share lock is held: two feeds switching at once queue here
        # instead of deadlocking on upgrading their share locks.
        device = await owned_device(conn, org_id, user_id, device_id, lock=True)
        if device["selection_mode"] == "SELECTED":
            device = await queries.set_selection(
                conn, org_id=org_id, device=device, mode="ALL", customer_ids=[]
            )
        # The head is read under the device lock: a selection change committed before it
        # is below the head, and none can commit until this page is done.
        head = await head_seq(conn, org_id)
    restart = False
    if since is None:
        since, restart = resume_position(device, types)
    if since.seq > head:
        raise RecordValidationError({"since": "is ahead of the server: not a checkpoint it issued"})
    page = await pull_page(
        conn,
        org_id=org_id,
        device=device,
        since=since,
        limit=limit,
        compacted_seq=compacted_seq,
        head=head,
        types=types,
        # Set up by the start for the checkpoint given (None: a resumed one, set up there).
        backfill=backfill,
    )
    if restart and not page.reset:
        page = replace(page, reset=True)
    now = datetime.now(UTC)
    # Mid-pull the type stands where the pull started (0 after a reset): its tombstones
    # from there on are still due, and compaction must keep them.
    mark = page.checkpoint.since if page.has_more else page.checkpoint.seq
    held = device["feed_positions"]
    if page.has_more and all(held.get(t.value) == mark for t in types):
        await raw.execute(conn, RECORD_PAGE, org_id, device_id, now, page.head)
        return page
    positions = {t.value: mark for t in types}
    synced = {} if page.has_more else {t.value: now.isoformat() for t in types}
    await conn.execute(
        RECORD_PULL,
        {
            "org": org_id,
            "device": device_id,
            "now": now,
            "head": page.head,
            "positions": positions,
            "synced": synced,
        },
    )
    return page


@dataclass(frozen=True)
class SyncState:
    """A device's sync state with the facts behind it."""

    status: SyncStatus
    checkpoint_seq: int | None
    head_seq: int
    pending_changes: int
    open_conflicts: int
    last_pull_at: datetime | None
    last_push_at: datetime | None
    last_synced: Mapping[str, str]


async def sync_states(
    conn: AsyncConnection, org_id: UUID, devices: Sequence[Row]
) -> list[SyncState]:
    """Sync state of each device (two queries for any number of devices)."""
    head = await head_seq(conn, org_id)
    conflicts = await queries.open_conflict_counts(conn, org_id, [d["id"] for d in devices])
    now = datetime.now(UTC)
    states = []
    for d in devices:
        facts = DeviceFacts(
            checkpoint_seq=int(d["checkpoint_seq"]),
            head_seq=head,
            last_pull_at=d["last_pull_at"],
            pending_changes=int(d["pending_changes"]),
            open_conflicts=conflicts.get(d["id"], 0),
            longest_auto_sync_seconds=max(d["auto_sync"].values(), default=None),
        )
        states.append(
            SyncState(
                status=status(facts, now),
                checkpoint_seq=int(d["checkpoint_seq"]) if d["last_pull_at"] else None,
                head_seq=head,
                pending_changes=facts.pending_changes,
                open_conflicts=facts.open_conflicts,
                last_pull_at=d["last_pull_at"],
                last_push_at=d["last_push_at"],
                last_synced=d["last_synced"],
            )
        )
    return states


async def set_conflict_policy(
    conn: AsyncConnection, org_id: UUID, entity: EntityType, policy: str
) -> dict[str, str]:
    """Set the tenant's policy for one entity type; returns all policies."""
    current = (
        await conn.execute(
            select(orgs.c.conflict_policies).where(orgs.c.org_id == org_id).with_for_update()
        )
    ).scalar_one()
    policies = {**current, entity.value: policy}
    await conn.execute(
        update(orgs).where(orgs.c.org_id == org_id).values(conflict_policies=policies)
    )
    return policies


async def list_conflicts(
    conn: AsyncConnection,
    org_id: UUID,
    *,
    status_: str | None,
    device_id: UUID | None,
    user_id: UUID | None,
    conflict_id: UUID | None = None,
) -> list[Row]:
    """Conflicts, newest first, optionally by status, device, user and id.

    Open ones are those someone can still resolve, as ``syncState`` counts them: a conflict
    whose record was deleted since is moot.
    """
    query = select(sync_conflicts).where(sync_conflicts.c.org_id == org_id)
    if status_ is not None:
        query = query.where(sync_conflicts.c.status == status_)
    if status_ == "OPEN":
        query = query.where(queries.RESOLVABLE)
    if device_id is not None:
        query = query.where(sync_conflicts.c.device_id == device_id)
    if user_id is not None:
        query = query.where(sync_conflicts.c.user_id == user_id)
    if conflict_id is not None:
        query = query.where(sync_conflicts.c.id == conflict_id)
    result = await conn.execute(query.order_by(sync_conflicts.c.created_at.desc()).limit(500))
    return [dict(r) for r in result.mappings()]


async def resolve_conflict(
    conn: AsyncConnection,
    *,
    org_id: UUID,
    user_id: UUID,
    is_admin: bool,
    conflict_id: UUID,
    resolution: str,
    values: Mapping[str, Any] | None,
    max_length: int,
) -> Row:
    """Settle a conflict as a new versioned write by the server replica.

    The push already wrote the patch's fields that were not in conflict; a resolution
    settles the held ones. KEEP_SERVER rewrites the server's values (a new version the
    device will pull over its own edit), KEEP_CLIENT applies the device's values of the
    conflicting fields (or its delete), MERGE applies ``values`` (column name -> value, as
    JSON: dates as ``YYYY-MM-DD``) for some of the conflicting fields, the device's values
    for the others. The values are checked like any write's: a value of the
    wrong shape, an invalid record or another customer's email is refused with a typed
    error and nothing is written.
    """
    row = (
        (
            await conn.execute(
                select(sync_conflicts)
                .where(sync_conflicts.c.org_id == org_id, sync_conflicts.c.id == conflict_id)
                .with_for_update()
            )
        )
        .mappings()
        .first()
    )
    if row is None or (row["user_id"] != user_id and not is_admin):
        raise NotFoundError("conflict", conflict_id)
    if row["status"] != "OPEN":
        raise RecordValidationError({"id": "this conflict is already resolved"})
    spec = ENTITIES[EntityType(row["entity"])]
    current = (await lock_rows(conn, spec, org_id, [row["record_id"]])).get(row["record_id"])
    if current is None or current["deleted"]:
        raise NotFoundError(spec.type.value, row["record_id"])
    conflicting = {c["field"] for c in row["fields"]}
    delete = False
    entity = spec.type.value
    # The stored patch is JSON too (a date is text there).
    client_patch = values_from_json(entity, row["client_patch"])
    # The push already wrote the patch's other fields: a resolution settles the held ones.
    held = {name: value for name, value in client_patch.items() if name in conflicting}
    if resolution == "KEEP_SERVER":
        patch: dict[str, Any] = {}
    elif resolution == "KEEP_CLIENT":
        patch = held
        delete = row["op"] == "DELETE"
    else:
        if not values or not set(values) <= conflicting:
            raise RecordValidationError(
                {"values": f"give a value for fields among {sorted(conflicting)}"}
            )
        given = values_from_json(entity, values)
        errors = shape_errors(entity, given)
        if errors:
            raise RecordValidationError(errors)
        patch = {**held, **given}
    if delete:
        kinds = (
            [
                PLURAL[k]
                for k in await records.has_live_children(
                    conn, CHILDREN.get(spec.type, ()), org_id, current["id"]
                )
            ]
            if spec.type is EntityType.CUSTOMER
            else []
        )
        if kinds:
            raise HasAttachedRecordsError(kinds)
    else:
        patch = merge_keyed_fields(patch, current)
        merged = {**{f: current[f] for f in spec.fields}, **patch}
        definitions = await field_definitions(conn, org_id, spec.type)
        errors = validate_record(
            entity,
            merged,
            definitions,
            max_length=max_length,
            stored=current,
        )
        if errors:
            raise RecordValidationError(errors)
    try:
        await write_one(
            conn,
            org_id=org_id,
            spec=spec,
            write=RecordWrite(current["id"], patch, delete=delete, force=True),
            replica=SERVER_REPLICA,
            current=current,
        )
    except EmailTakenError as exc:
        # Reported as push reports it (ResolveConflictResult has no EmailTaken member).
        raise RecordValidationError({"email": EMAIL_TAKEN}) from exc
    result = await conn.execute(
        update(sync_conflicts)
        .where(sync_conflicts.c.org_id == org_id, sync_conflicts.c.id == conflict_id)
        .values(
            status="RESOLVED",
            resolution=resolution,
            resolved_by=user_id,
            resolved_at=datetime.now(UTC),
        )
        .returning(sync_conflicts)
    )
    return dict(result.mappings().one())
