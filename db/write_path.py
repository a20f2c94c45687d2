"""The one write path for every synced record.

Every create, update, archive and delete of a customer, contact, facility, asset or
credential goes through :func:`write_records`. In the caller's transaction it:

1. locks the current rows (``SELECT ... FOR UPDATE``),
2. computes each new row, its version vector (the writer's replica counter bumped) and the
   dot of every field that changed,
3. allocates change seqs from the tenant's counter row, whose lock is held until commit,
   so seq order is commit order and a reader never finds a row below a seq it passed,
4. upserts the rows (deletes become tombstones) and appends one ``change_log`` row each,
5. queues a ``NOTIFY`` with the tenant id (PostgreSQL delivers one per transaction at
   commit) as a poke for listeners.

No other code writes these tables, except master-key rotation, which re-wraps credential
keys without changing synced data (``db/queries/credentials.py: set_wrapping``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Column, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from db.entities import EntitySpec
from db.tables import change_log, org_seq
from sync.field_dots import Dot, changed_fields, dots_from_json, dots_to_json, stamp
from sync.version_vector import increment

NOTIFY_CHANNEL = "fieldsync_changes"

Row = dict[str, Any]
# Placeholder for "the seq this write gets", filled in once seqs are allocated.
RESTORED = object()


@dataclass(frozen=True)
class RecordWrite:
    """One intended write: a patch of fields, or a delete.

    ``links`` (``customer_id``, ``facility_id``) are read only when the record is created.
    """

    record_id: UUID
    patch: Mapping[str, Any] = field(default_factory=dict)
    delete: bool = False
    links: Mapping[str, UUID] = field(default_factory=dict)
    # Write a new version even when no value changes (a resolved conflict must reach the
    # device that still holds its own edit).
    force: bool = False


class UnknownFieldError(ValueError):
    """A patch named a column that is not a writable field of the entity."""


def _writable_columns(spec: EntitySpec) -> list[Column[Any]]:
    return [c for c in spec.table.columns if c.computed is None]


async def lock_rows(
    conn: AsyncConnection, spec: EntitySpec, org_id: UUID, ids: Sequence[UUID]
) -> dict[UUID, Row]:
    """Current rows (tombstones included) of ``ids``, locked until the transaction ends."""
    if not ids:
        return {}
    table = spec.table
    result = await conn.execute(
        select(*_writable_columns(spec))
        .where(table.c.org_id == org_id, table.c.id.in_(list(ids)))
        .with_for_update()
    )
    return {row["id"]: dict(row) for row in result.mappings()}


def next_row(
    spec: EntitySpec,
    org_id: UUID,
    current: Row | None,
    write: RecordWrite,
    replica: str,
    now: datetime,
) -> Row | None:
    """The row after ``write``, or None when the write changes nothing.

    Pure: bumps the writer's counter in the version vector and stamps the dot of every
    field whose value changed; a delete turns the row into a tombstone.
    """
    unknown = set(write.patch) - set(spec.fields)
    if unknown:
        raise UnknownFieldError(f"unknown field(s) for {spec.type.value}: {sorted(unknown)}")
    if current is None:
        if write.delete:
            return None
        row: Row = spec.new_row_defaults()
        row.update(org_id=org_id, id=write.record_id, version={}, field_dots={}, deleted=False)
        row["customer_id"] = write.links.get("customer_id", write.record_id)
        for link in spec.links:
            # An optional link (a credential's contact) stays NULL when not given.
            row[link] = write.links.get(link)
        row["created_at"] = now
        changed = [f for f in spec.fields if f in write.patch or row.get(f) is not None]
    else:
        if current["deleted"]:
            return None
        row = dict(current)
        if write.delete:
            changed = []
        else:
            changed = changed_fields(current, write.patch, spec.fields)
            if not changed and not write.force:
                return None
    restored = (
        current is not None and current.get("archived") and write.patch.get("archived") is False
    )
    row.update(write.patch)
    if restored:
        # Devices evicted this customer while it was archived: they take it whole again
        # from the seq of this write (see db/pull.py); the marker becomes that seq.
        row["restored_seq"] = RESTORED
    version = increment(row["version"], replica)
    dot: Dot = (replica, version[replica])
    row["version"] = version
    row["field_dots"] = dots_to_json(stamp(dots_from_json(row["field_dots"]), changed, dot))
    row["deleted"] = write.delete
    row["updated_at"] = now
    return row


async def allocate_seqs(conn: AsyncConnection, org_id: UUID, count: int) -> int:
    """Reserve ``count`` seqs for this transaction; returns the first.

    The counter row stays locked until commit: concurrent writers of the same tenant queue
    here, so their seqs are handed out in the order they will commit.
    """
    result = await conn.execute(
        update(org_seq)
        .where(org_seq.c.org_id == org_id)
        .values(last_seq=org_seq.c.last_seq + count)
        .returning(org_seq.c.last_seq)
    )
    last = result.scalar_one()
    return int(last) - count + 1


async def write_records(
    conn: AsyncConnection,
    *,
    org_id: UUID,
    spec: EntitySpec,
    writes: Sequence[RecordWrite],
    replica: str,
    device_id: UUID | None = None,
    current: Mapping[UUID, Row] | None = None,
) -> list[Row]:
    """Apply ``writes`` in order; returns the resulting row of each (old row if unchanged).

    ``current`` lets a caller that already locked the rows skip the second lock query.
    Writes to a tombstone or deletes of an unknown id change nothing and return the
    tombstone or an empty dict.
    """
    rows: dict[UUID, Row] = dict(
        current
        if current is not None
        else await lock_rows(conn, spec, org_id, [w.record_id for w in writes])
    )
    now = datetime.now(UTC)
    changed: list[Row] = []
    results: list[Row] = []
    for write in writes:
        new = next_row(spec, org_id, rows.get(write.record_id), write, replica, now)
        if new is None:
            results.append(rows.get(write.record_id, {}))
            continue
        rows[write.record_id] = new
        changed.append(new)
        results.append(new)
    if not changed:
        return results
    first_seq = await allocate_seqs(conn, org_id, len(changed))
    log: list[Row] = []
    for offset, row in enumerate(changed):
        row["seq"] = first_seq + offset
        if row.get("restored_seq") is RESTORED:
            row["restored_seq"] = row["seq"]
        log.append(
            {
                "org_id": org_id,
                "seq": row["seq"],
                "entity": spec.type.value,
                "record_id": row["id"],
                "customer_id": row["customer_id"],
                "op": "DELETE" if row["deleted"] else "UPSERT",
                "version": row["version"],
                "replica": replica,
                "device_id": device_id,
                "changed_at": now,
            }
        )
    # A record written twice in one batch keeps its last state; the log keeps both seqs.
    final = {row["id"]: row for row in changed}
    await _upsert(conn, spec, list(final.values()))
    await conn.execute(change_log.insert(), log)
    await notify_change(conn, org_id)
    return results


async def notify_change(conn: AsyncConnection, org_id: UUID) -> None:
    """Poke listeners that ``org_id`` has new changes, once per transaction.

    The payload is only the tenant id: PostgreSQL folds identical notifications of one
    transaction into one, and listeners read the change log for the rows themselves.
    """
    await conn.execute(select(func.pg_notify(NOTIFY_CHANNEL, str(org_id))))


async def _upsert(conn: AsyncConnection, spec: EntitySpec, rows: list[Row]) -> None:
    columns = _writable_columns(spec)
    stmt = pg_insert(spec.table)
    keys = {"org_id", "id"}
    stmt = stmt.on_conflict_do_update(
        index_elements=["org_id", "id"],
        set_={
            c.name: stmt.excluded[c.name] for c in columns if c.name not in keys | {"created_at"}
        },
    )
    names = [c.name for c in columns]
    await conn.execute(stmt, [{name: row[name] for name in names} for row in rows])
