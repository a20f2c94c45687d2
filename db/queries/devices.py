"""Devices and their customer selection."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from db.entities import ENTITIES
from db.tables import customers, device_customers, devices, sync_conflicts
from db.write_path import allocate_seqs, notify_change

Row = dict[str, Any]


def new_replica_id() -> str:
    """A fresh, never reused replica id (128 random bits)."""
    return "d" + secrets.token_hex(16)


async def register(
    conn: AsyncConnection, *, org_id: UUID, user_id: UUID, values: Mapping[str, Any]
) -> Row:
    """A new device of ``user_id`` with a fresh replica id."""
    result = await conn.execute(
        devices.insert()
        .values(
            {
                **values,
                "org_id": org_id,
                "id": uuid4(),
                "user_id": user_id,
                "replica_id": new_replica_id(),
            }
        )
        .returning(devices)
    )
    return dict(result.mappings().one())


async def get(
    conn: AsyncConnection, org_id: UUID, device_id: UUID, *, lock: bool = False
) -> Row | None:
    """A device of the tenant, optionally locked for this transaction."""
    query = select(devices).where(devices.c.org_id == org_id, devices.c.id == device_id)
    if lock:
        query = query.with_for_update()
    row = (await conn.execute(query)).mappings().first()
    return dict(row) if row else None


async def update_device(
    conn: AsyncConnection, org_id: UUID, device_id: UUID, values: Mapping[str, Any]
) -> Row:
    """Set columns of a device; returns the new row."""
    result = await conn.execute(
        update(devices)
        .where(devices.c.org_id == org_id, devices.c.id == device_id)
        .values(values)
        .returning(devices)
    )
    return dict(result.mappings().one())


async def list_devices(
    conn: AsyncConnection, org_id: UUID, *, user_id: UUID | None = None
) -> list[Row]:
    """Devices of the tenant (or of one user), newest first."""
    query = select(devices).where(devices.c.org_id == org_id)
    if user_id is not None:
        query = query.where(devices.c.user_id == user_id)
    result = await conn.execute(query.order_by(devices.c.created_at.desc(), devices.c.id))
    return [dict(r) for r in result.mappings()]


async def selected_customer_ids(conn: AsyncConnection, org_id: UUID, device_id: UUID) -> list[UUID]:
    """Customers currently selected on a device (SELECTED mode)."""
    result = await conn.execute(
        select(device_customers.c.customer_id).where(
            device_customers.c.org_id == org_id,
            device_customers.c.device_id == device_id,
            device_customers.c.selected.is_(True),
        )
    )
    return list(result.scalars())


async def selections(
    conn: AsyncConnection, org_id: UUID, device_ids: Sequence[UUID]
) -> dict[UUID, list[UUID]]:
    """Selected customers of each device, in one query."""
    if not device_ids:
        return {}
    result = await conn.execute(
        select(device_customers.c.device_id, device_customers.c.customer_id).where(
            device_customers.c.org_id == org_id,
            device_customers.c.device_id.in_(list(device_ids)),
            device_customers.c.selected.is_(True),
        )
    )
    grouped: dict[UUID, list[UUID]] = {d: [] for d in device_ids}
    for device_id, customer_id in result:
        grouped[device_id].append(customer_id)
    return grouped


async def live_customer_ids(conn: AsyncConnection, org_id: UUID, ids: Sequence[UUID]) -> set[UUID]:
    """Which of ``ids`` are live customers of the tenant."""
    if not ids:
        return set()
    result = await conn.execute(
        select(customers.c.id).where(
            customers.c.org_id == org_id,
            customers.c.id.in_(list(ids)),
            customers.c.deleted.is_(False),
        )
    )
    return set(result.scalars())


async def set_selection(
    conn: AsyncConnection,
    *,
    org_id: UUID,
    device: Row,
    mode: str,
    customer_ids: Sequence[UUID],
) -> Row:
    """Switch a device to ALL or to exactly ``customer_ids``.

    The change gets a seq like a write, so pulls from before it receive newly selected
    customers whole and removed ones as evictions; nothing is deleted on the server.
    ``left_seq`` and ``selected_since_seq`` remember when customers left the device's view
    (db/pull.py evicts them first if they came back since).
    """
    seq = await allocate_seqs(conn, org_id, 1)
    device_id = device["id"]
    values: dict[str, Any] = {"selection_mode": mode}
    if mode != device["selection_mode"]:
        values["mode_since_seq"] = seq
        if mode == "SELECTED":
            values["selected_since_seq"] = seq
    current = set(await selected_customer_ids(conn, org_id, device_id))
    wanted = set(customer_ids) if mode == "SELECTED" else set()
    changes = [(cid, True) for cid in wanted - current] + [(cid, False) for cid in current - wanted]
    if changes:
        stmt = pg_insert(device_customers)
        stmt = stmt.on_conflict_do_update(
            index_elements=["org_id", "device_id", "customer_id"],
            set_={
                "selected": stmt.excluded.selected,
                "changed_seq": stmt.excluded.changed_seq,
                "left_seq": func.greatest(device_customers.c.left_seq, stmt.excluded.left_seq),
            },
        )
        await conn.execute(
            stmt,
            [
                {
                    "org_id": org_id,
                    "device_id": device_id,
                    "customer_id": cid,
                    "selected": selected,
                    "changed_seq": seq,
                    # Switching to ALL unselects every row without hiding any customer.
                    "left_seq": seq if not selected and mode == "SELECTED" else 0,
                }
                for cid, selected in changes
            ],
        )
    await notify_change(conn, org_id)
    return await update_device(conn, org_id, device_id, values)


async def add_to_selection(
    conn: AsyncConnection, *, org_id: UUID, device_id: UUID, customer_id: UUID, seq: int
) -> None:
    """Select a customer the device itself created (it already holds it, so no backfill)."""
    stmt = pg_insert(device_customers).values(
        org_id=org_id, device_id=device_id, customer_id=customer_id, selected=True, changed_seq=seq
    )
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["org_id", "device_id", "customer_id"],
            set_={"selected": True, "changed_seq": seq},
        )
    )


# A conflict someone can still settle: its record is live. resolveConflict writes the
# record and refuses a deleted (or compacted) one, and a push naming the conflict gets
# DELETED, which closes nothing: counted, such a conflict would hold the device in
# CONFLICTS for good.
# A conflict someone can still resolve: its record is live (resolveConflict answers NotFound
# for a deleted one, so it would otherwise stay open for ever).
RESOLVABLE = or_(
    *(
        and_(
            sync_conflicts.c.entity == spec.type.value,
            exists().where(
                spec.table.c.org_id == sync_conflicts.c.org_id,
                spec.table.c.id == sync_conflicts.c.record_id,
                spec.table.c.deleted.is_(False),
            ),
        )
        for spec in ENTITIES.values()
    )
)


async def open_conflict_counts(
    conn: AsyncConnection, org_id: UUID, device_ids: Sequence[UUID]
) -> dict[UUID, int]:
    """Open conflicts per device that someone can still resolve (their record is live)."""
    if not device_ids:
        return {}
    result = await conn.execute(
        select(sync_conflicts.c.device_id, func.count())
        .where(
            sync_conflicts.c.org_id == org_id,
            sync_conflicts.c.device_id.in_(list(device_ids)),
            sync_conflicts.c.status == "OPEN",
            RESOLVABLE,
        )
        .group_by(sync_conflicts.c.device_id)
    )
    return {row[0]: int(row[1]) for row in result}
