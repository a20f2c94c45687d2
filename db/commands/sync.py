"""Device sync commands: register, select customers, pull bookkeeping, state, conflicts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from db.commands.records import (
    CHILDREN,
    PLURAL,
    field_definitions,
    merge_keyed_fields,
    write_one,
)
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
from db.queries.orgs import get_org, head_seq
from db.tables import orgs, sync_conflicts
from db.write_path import RecordWrite, lock_rows
from sync.checkpoint import Checkpoint
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


async def pull(
    conn: AsyncConnection,
    *,
    org_id: UUID,
    device: Row,
    may_select: bool,
    since: Checkpoint,
    limit: int,
) -> PullPage:
    """One page for the device, and the device's bookkeeping (last pull, checkpoint)."""
    org = await get_org(conn, org_id)
    assert org is not None
    if device["selection_mode"] == "SELECTED" and not may_select:
        # The capability was withdrawn: the device syncs everything again.
        device = await queries.set_selection(
            conn, org_id=org_id, device=device, mode="ALL", customer_ids=[]
        )
    head = await head_seq(conn, org_id)
    if since.seq > head:
        raise RecordValidationError({"since": "is ahead of the server: not a checkpoint it issued"})
    page = await pull_page(
        conn,
        org_id=org_id,
        device=device,
        since=since,
        limit=limit,
        compacted_seq=int(org["compacted_seq"]),
        head=head,
    )
    now = datetime.now(UTC)
    values: dict[str, Any] = {"last_pull_at": now, "head_at_last_pull": page.head}
    if not page.has_more and not page.resync_required:
        values["checkpoint_seq"] = page.checkpoint.seq
        values["last_synced"] = {t.value: now.isoformat() for t in EntityType}
    await queries.update_device(conn, org_id, device["id"], values)
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
) -> list[Row]:
    """Conflicts, newest first, optionally by status, device and user."""
    query = select(sync_conflicts).where(sync_conflicts.c.org_id == org_id)
    if status_ is not None:
        query = query.where(sync_conflicts.c.status == status_)
    if device_id is not None:
        query = query.where(sync_conflicts.c.device_id == device_id)
    if user_id is not None:
        query = query.where(sync_conflicts.c.user_id == user_id)
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
        errors = validate_record(entity, merged, definitions, max_length=max_length)
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
