"""The one write path for every synced record.

Every create, update, archive and delete of a customer, contact, facility, asset or
credential goes through :func:`write_records`. In the caller's transaction it:

1. locks the current rows (``SELECT ... FOR NO KEY UPDATE``: keys never change, and the
   weaker lock lets a concurrent child insert's foreign-key check, which takes a key-share
   lock on the parent, pass instead of deadlocking against this writer's seq allocation),
2. computes each new row, its version vector (the writer's replica counter bumped) and the
   dot of every field that changed,
3. allocates change seqs from the tenant's counter row, whose lock is held until commit,
   so seq order is commit order and a reader never finds a row below a seq it passed,
4. upserts the rows (deletes become tombstones) and appends one ``change_log`` row each,
5. queues a ``NOTIFY`` with the tenant id (PostgreSQL delivers one per transaction at
   commit) as a poke for listeners, in the statement of step 4's log rows.

No other code writes these tables, except master-key rotation, which re-wraps credential
keys without changing synced data (``db/queries/credentials.py: set_wrapping``).
"""

from __future__ import annotations

from collections.abc import Collection, Container, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
from sqlalchemy import Column
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from db import raw
from db.entities import EntitySpec
from db.tables import org_seq
from sync.field_dots import Dot, changed_fields, dots_from_json, dots_to_json, stamp
from sync.validation import shape_errors
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


class MisshapenValueError(ValueError):
    """A patch held a value that does not fit its field's shape (a bug in the caller: every
    write path checks shapes first, with a typed error for the client)."""


def _writable_columns(spec: EntitySpec) -> list[Column[Any]]:
    return [c for c in spec.table.columns if c.computed is None]


@dataclass(frozen=True)
class _Statements:
    """The write path's SQL for one entity type, rendered once from its table."""

    columns: tuple[str, ...]
    jsonb: frozenset[str]
    lock: str
    update: str
    upsert: str


def _array_columns(spec: EntitySpec, skip: set[str]) -> list[tuple[str, str, str]]:
    """(name, array parameter type, select expression) per column passed as an array."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    quote = dialect.identifier_preparer.quote
    out = []
    for column in _writable_columns(spec):
        if column.name in skip:
            continue
        sql_type = column.type.compile(dialect=dialect)
        name = quote(column.name)
        if sql_type == "JSONB":
            # Sent as text and cast here: asyncpg's jsonb codec on these connections
            # takes one encoded document, not an array of them.
            out.append((name, "TEXT[]", f"u.{name}::jsonb"))
        else:
            out.append((name, f"{sql_type}[]", f"u.{name}"))
    return out


_STATEMENTS: dict[str, _Statements] = {}
_FIELD_NAMES: dict[str, frozenset[str]] = {}
# Columns every write of an existing row may set besides its patch's fields (next_row,
# persist_rows); the other columns of a locked row stay as they were read.
_BOOKKEEPING = frozenset({"version", "field_dots", "deleted", "updated_at", "seq", "restored_seq"})
# UPDATE statements of a table that set only some columns, by the columns they set.
_PARTIAL_UPDATES: dict[tuple[str, frozenset[str]], tuple[str, tuple[str, ...]]] = {}


def _partial_update(spec: EntitySpec, columns: frozenset[str]) -> tuple[str, tuple[str, ...]]:
    """An UPDATE of the locked rows that sets ``columns`` (and nothing else), and the
    columns its arrays carry, in order: a push that edits two fields of a
    thousand customers neither encodes nor sends the other ones, and PostgreSQL parses
    no JSON it already holds."""
    key = (spec.table.name, columns)
    found = _PARTIAL_UPDATES.get(key)
    if found is None:
        names = [c.name for c in _writable_columns(spec) if c.name != "org_id"]
        arrays = [
            (name, array)
            for name, array in zip(names, _array_columns(spec, {"org_id"}), strict=True)
            if name == "id" or name in columns
        ]
        unnest = ", ".join(f"${i}::{t}" for i, (_, (_, t, _)) in enumerate(arrays, start=2))
        alias = ", ".join(n for _, (n, _, _) in arrays)
        sql = (
            f"UPDATE {spec.table.name} AS t SET "
            + ", ".join(f"{n} = {e}" for name, (n, _, e) in arrays if name != "id")
            + f" FROM unnest({unnest}) AS u({alias}) WHERE t.org_id = $1 AND t.id = u.id"
        )
        found = _PARTIAL_UPDATES[key] = (sql, tuple(name for name, _ in arrays))
    return found


def _field_names(spec: EntitySpec) -> frozenset[str]:
    """The writable fields of ``spec`` as a set (a patch's keys are checked against it)."""
    found = _FIELD_NAMES.get(spec.table.name)
    if found is None:
        found = _FIELD_NAMES[spec.table.name] = frozenset(spec.fields)
    return found


def _statements(spec: EntitySpec) -> _Statements:
    found = _STATEMENTS.get(spec.table.name)
    if found is None:
        found = _STATEMENTS[spec.table.name] = _render(spec)
    return found


def _render(spec: EntitySpec) -> _Statements:
    table = spec.table.name
    columns = _writable_columns(spec)
    names = [c.name for c in columns]
    jsonb = frozenset(c.name for c in columns if isinstance(c.type, postgresql.JSONB))
    arrays = _array_columns(spec, {"org_id"})
    unnest = ", ".join(f"${i}::{t}" for i, (_, t, _) in enumerate(arrays, start=2))
    alias = ", ".join(n for n, _, _ in arrays)
    source = f"unnest({unnest}) AS u({alias})"
    kept = {"org_id", "id", "created_at"}
    updated = [(n, e) for n, _, e in arrays if n not in kept]
    return _Statements(
        columns=tuple(names),
        jsonb=jsonb,
        lock=f"SELECT {', '.join(names)} FROM {table}"
        " WHERE org_id = $1 AND id = ANY($2::uuid[]) FOR NO KEY UPDATE",
        update=f"UPDATE {table} AS t SET "
        + ", ".join(f"{n} = {e}" for n, e in updated)
        + f" FROM {source} WHERE t.org_id = $1 AND t.id = u.id",
        upsert=f"INSERT INTO {table} (org_id, {alias})"
        f" SELECT $1::uuid, {', '.join(e for _, _, e in arrays)} FROM {source}"
        " ON CONFLICT (org_id, id) DO UPDATE SET "
        + ", ".join(f"{n} = EXCLUDED.{n}" for n, _ in updated),
    )


async def lock_rows(
    conn: AsyncConnection, spec: EntitySpec, org_id: UUID, ids: Sequence[UUID]
) -> dict[UUID, Row]:
    """Current rows (tombstones included) of ``ids``, locked until the transaction ends."""
    if not ids:
        return {}
    records = await raw.fetch(conn, _statements(spec).lock, org_id, list(ids))
    return {record["id"]: dict(record) for record in records}


def next_row(
    spec: EntitySpec,
    org_id: UUID,
    current: Row | None,
    write: RecordWrite,
    replica: str,
    now: datetime,
    *,
    current_dots: Mapping[str, Dot] | None = None,
    validated: bool = False,
) -> Row | None:
    """The row after ``write``, or None when the write changes nothing.

    Pure: bumps the writer's counter in the version vector and stamps the dot of every
    field whose value changed; a delete turns the row into a tombstone. ``current_dots``:
    the field dots of ``current`` as :func:`sync.field_dots.dots_from_json` decoded them,
    for a caller that already did (a push decides on them first). ``validated``: the
    caller has just had ``sync.validation.validate_record`` accept a record holding every
    value of the patch, which checks their shapes first (a push's decisions do): the
    shape check below would only repeat it.
    """
    fields = _field_names(spec)
    if not write.patch.keys() <= fields:
        unknown = write.patch.keys() - fields
        raise UnknownFieldError(f"unknown field(s) for {spec.type.value}: {sorted(unknown)}")
    # The last wall: a value stored in the wrong shape makes every later read fail.
    misshapen = None if validated else shape_errors(spec.type.value, write.patch)
    if misshapen:
        raise MisshapenValueError(f"{spec.type.value} values of the wrong shape: {misshapen}")
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
    if current_dots is None:
        current_dots = dots_from_json(row["field_dots"])
    row["field_dots"] = dots_to_json(stamp(current_dots, changed, dot))
    row["deleted"] = write.delete
    row["updated_at"] = now
    return row


async def allocate_seqs(conn: AsyncConnection, org_id: UUID, count: int) -> int:
    """Reserve ``count`` seqs for this transaction; returns the first.

    The counter row stays locked until commit: concurrent writers of the same tenant queue
    here, so their seqs are handed out in the order they will commit.
    """
    found = await raw.fetch(conn, _ALLOCATE_SEQS, org_id, count)
    # The row is created with the tenant: an UPDATE that found none is a broken tenant.
    (row,) = found
    return int(row[0]) - count + 1


# On the asyncpg connection (db.raw): a push allocates once per chunk it writes.
_ALLOCATE_SEQS = (
    f"UPDATE {org_seq.name} SET last_seq = last_seq + $2::bigint"
    " WHERE org_id = $1::uuid RETURNING last_seq"
)


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
    existing = set(rows)
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
    await persist_rows(
        conn,
        org_id=org_id,
        spec=spec,
        rows=changed,
        existing=existing,
        replica=replica,
        device_id=device_id,
        now=now,
    )
    return results


async def persist_rows(
    conn: AsyncConnection,
    *,
    org_id: UUID,
    spec: EntitySpec,
    rows: Sequence[Row],
    existing: Container[UUID],
    replica: str,
    device_id: UUID | None,
    now: datetime,
    fields: Collection[str] | None = None,
) -> None:
    """Store rows made by :func:`next_row` (in write order), as steps 3-5 of this module.

    Sets each row's ``seq`` (and a restored customer's ``restored_seq``). ``existing``
    holds the ids whose rows this transaction locked: those are updated, the others
    inserted. ``fields``: every field the patches of these rows' writes name (None: any);
    an update then sets only those and the bookkeeping columns, the rest of a locked row
    being as it was read. For callers that decided the rows themselves (the batched push)
    and :func:`write_records`.
    """
    if not rows:
        return
    first_seq = await allocate_seqs(conn, org_id, len(rows))
    for offset, row in enumerate(rows):
        row["seq"] = first_seq + offset
        if row.get("restored_seq") is RESTORED:
            row["restored_seq"] = row["seq"]
    # A record written twice in one batch keeps its last state; the log keeps both seqs.
    final = {row["id"]: row for row in rows}
    versions = {record_id: _json(row["version"]) for record_id, row in final.items()}
    updates = [row for record_id, row in final.items() if record_id in existing]
    inserts = [row for record_id, row in final.items() if record_id not in existing]
    statements = _statements(spec)
    if updates:
        if fields is None:
            update, columns = statements.update, statements.columns
        else:
            update, columns = _partial_update(spec, frozenset(fields) | _BOOKKEEPING)
        status = await raw.execute(
            conn, update, org_id, *_arrays(statements, columns, updates, versions)
        )
        if status != f"UPDATE {len(updates)}":
            # A locked row cannot vanish, but a caller's ``existing`` may be stale: the
            # upsert below writes the same values whichever rows are there.
            inserts = updates + inserts
    if inserts:
        await raw.execute(
            conn,
            statements.upsert,
            org_id,
            *_arrays(statements, statements.columns, inserts, versions),
        )
    await raw.execute(
        conn,
        _CHANGE_LOG,
        org_id,
        spec.type.value,
        replica,
        device_id,
        now,
        [row["seq"] for row in rows],
        [row["id"] for row in rows],
        [row["customer_id"] for row in rows],
        ["DELETE" if row["deleted"] else "UPSERT" for row in rows],
        # The log keeps the version of each write, also of a record written twice.
        [versions[row["id"]] if row is final[row["id"]] else _json(row["version"]) for row in rows],
        NOTIFY_CHANNEL,
        str(org_id),
    )


# The log rows, and the poke of notify_change in the same statement (one round trip less
# per write; PostgreSQL still delivers one notification per transaction, at commit).
_CHANGE_LOG = (
    "WITH logged AS (INSERT INTO change_log"
    " (org_id, seq, entity, record_id, customer_id, op, version, replica, device_id, changed_at)"
    " SELECT $1::uuid, u.seq, $2::text, u.record_id, u.customer_id, u.op, u.version::jsonb,"
    " $3::text, $4::uuid, $5::timestamptz"
    " FROM unnest($6::bigint[], $7::uuid[], $8::uuid[], $9::text[], $10::text[])"
    " AS u(seq, record_id, customer_id, op, version))"
    " SELECT pg_notify($11::text, $12::text)"
)


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


def _arrays(
    statements: _Statements,
    columns: Sequence[str],
    rows: Sequence[Row],
    versions: Mapping[UUID, str],
) -> list[list[Any]]:
    """One array per column of ``columns`` but org_id (the first parameter), in order."""
    arrays: list[list[Any]] = []
    for name in columns:
        if name == "org_id":
            continue
        if name == "version":
            arrays.append([versions[row["id"]] for row in rows])
        elif name in statements.jsonb:
            # None is stored as JSON null, as SQLAlchemy's JSONB type did.
            arrays.append([_json(row[name]) for row in rows])
        else:
            arrays.append([row[name] for row in rows])
    return arrays


async def notify_change(conn: AsyncConnection, org_id: UUID) -> None:
    """Poke listeners that ``org_id`` has new changes, once per transaction.

    The payload is only the tenant id: PostgreSQL folds identical notifications of one
    transaction into one, and listeners read the change log for the rows themselves.
    """
    await raw.execute(conn, "SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, str(org_id))
