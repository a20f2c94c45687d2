"""The external-system sync window's writes: sources, imports, sync runs and admin actions.

Every change to a customer goes through the one write path (``db.write_path``) as the
server replica, like an online admin edit, so it lands in the change log and reaches
devices. The rules (parsing, three-way comparison, direction, categories) are in
``sync.external``; this module moves rows.

An import is one transaction: the source row is locked (imports of one source queue), the
records are upserted set-based (``unnest`` arrays), records absent from the file are marked
deleted, unpaired records are matched to customers by email, and every pair is compared
and sorted (a *sync run*). A refused import rolls back and leaves only a REFUSED batch with
its problems: nothing is half-imported.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

import orjson
from sqlalchemy import func, insert, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from db import raw
from db.commands.records import SERVER_REPLICA, field_definitions
from db.engine import Database
from db.entities import CUSTOMER, EntityType
from db.errors import DuplicateError, NotFoundError, RecordValidationError
from db.queries import external as queries
from db.queries.pages import Row
from db.tables import external_import_batches, external_sources
from db.write_path import RecordWrite, lock_rows, write_records
from sync.external import (
    MAX_NAME,
    Category,
    Direction,
    ImportFormat,
    PairState,
    RowProblem,
    Side,
    Values,
    categorise,
    compare,
    customer_patch,
    local_values,
    mapped_fields,
    mapping_problems,
    parse_import,
    plan,
    resolve,
    sniff_format,
)
from sync.validation import text_problem, validate_record

Progress = Callable[[str, int, int], None]
# Problems kept with a refused batch: enough to fix a file, bounded for a hostile one.
MAX_STORED_PROBLEMS = 1000


@dataclass(frozen=True)
class Actor:
    """Who acts: a signed-in user, or the command line (``id`` None)."""

    id: UUID | None
    name: str


# --------------------------------------------------------------------------- sources


def _mapping(raw_mapping: Sequence[tuple[str, str]]) -> list[list[str]]:
    problems = mapping_problems(raw_mapping)
    if problems:
        raise RecordValidationError(problems)
    return [[column.strip(), target] for column, target in raw_mapping]


def source_mapping(source: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A stored source's mapping as (column, target) pairs."""
    return [(column, target) for column, target in source["mapping"]]


async def create_source(
    conn: AsyncConnection,
    *,
    org_id: UUID,
    name: str,
    kind: str,
    direction: Direction,
    mapping: Sequence[tuple[str, str]],
) -> Row:
    """Register a source; its mapping must name existing customer fields (else refused)."""
    problems: dict[str, str] = {}
    if not name.strip():
        problems["name"] = "is empty"
    for label, value in (("name", name), ("kind", kind)):
        problem = text_problem(value, MAX_NAME)
        if problem is not None:
            problems[label] = problem
    try:
        stored = _mapping(mapping)
    except RecordValidationError as exc:
        problems.update(exc.field_errors)
    if problems:
        raise RecordValidationError(problems)
    if await queries.source_by_name(conn, org_id, name) is not None:
        raise DuplicateError(f"a source named {name.strip()!r} already exists")
    source_id = uuid4()
    row = {
        "org_id": org_id,
        "id": source_id,
        "name": name.strip(),
        "kind": kind.strip() or "other",
        "direction": direction.value,
        "mapping": stored,
    }
    await conn.execute(insert(external_sources).values(**row))
    found = await queries.get_source(conn, org_id, source_id)
    assert found is not None
    return found


async def update_source(
    conn: AsyncConnection,
    *,
    org_id: UUID,
    source_id: UUID,
    direction: Direction | None,
    mapping: Sequence[tuple[str, str]] | None,
) -> Row:
    """Change a source's direction or mapping (applies from the next import)."""
    if await queries.get_source(conn, org_id, source_id) is None:
        raise NotFoundError("external source", source_id)
    values: dict[str, Any] = {"updated_at": func.now()}
    if direction is not None:
        values["direction"] = direction.value
    if mapping is not None:
        values["mapping"] = _mapping(mapping)
    await conn.execute(
        update(external_sources)
        .where(external_sources.c.org_id == org_id, external_sources.c.id == source_id)
        .values(**values)
    )
    found = await queries.get_source(conn, org_id, source_id)
    assert found is not None
    return found


async def _source(conn: AsyncConnection, org_id: UUID, source_id: UUID, *, lock: bool) -> Row:
    rows = await raw.fetch(
        conn,
        "SELECT id, name, direction, mapping FROM external_sources WHERE org_id = $1 AND id = $2"
        + (" FOR UPDATE" if lock else ""),
        org_id,
        source_id,
    )
    if not rows:
        raise NotFoundError("external source", source_id)
    return dict(rows[0])


# --------------------------------------------------------------------------- audit


@dataclass(frozen=True)
class AuditEntry:
    """One audit line before it is stored."""

    action: str
    external_id: str | None
    customer_id: UUID | None
    details: Mapping[str, Any] = field(default_factory=dict)


_AUDIT = (
    "INSERT INTO external_audit"
    " (org_id, id, source_id, external_id, customer_id, action, actor_id, actor, at, details)"
    " SELECT $1::uuid, u.id, $2::uuid, u.external_id, u.customer_id, u.action, $3::uuid,"
    " $4::text, now(), u.details::jsonb"
    " FROM unnest($5::uuid[], $6::text[], $7::uuid[], $8::text[], $9::text[])"
    " AS u(id, external_id, customer_id, action, details)"
)


async def _audit(
    conn: AsyncConnection,
    org_id: UUID,
    source_id: UUID,
    actor: Actor,
    entries: Sequence[AuditEntry],
) -> None:
    if not entries:
        return
    await raw.execute(
        conn,
        _AUDIT,
        org_id,
        source_id,
        actor.id,
        actor.name,
        [uuid4() for _ in entries],
        [e.external_id for e in entries],
        [e.customer_id for e in entries],
        [e.action for e in entries],
        [_json(e.details) for e in entries],
    )


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


# --------------------------------------------------------------------------- imports


@dataclass(frozen=True)
class ImportOutcome:
    """An import's batch row, and whether it was the same file as the last applied one."""

    batch: Row
    already_imported: bool = False


class _RefusedError(Exception):
    """Raised inside the import transaction to roll it back with these problems."""

    def __init__(self, problems: Sequence[RowProblem]) -> None:
        super().__init__(f"{len(problems)} problem(s)")
        self.problems = list(problems)


async def import_file(
    db: Database,
    *,
    org_id: UUID,
    source_id: UUID,
    data: bytes,
    file_name: str | None,
    file_format: ImportFormat | None,
    actor: Actor,
    max_bytes: int,
    max_length: int = 10_000,
    progress: Progress | None = None,
) -> ImportOutcome:
    """Import one file of a source: applied whole in one transaction, or refused whole.

    The file is the source's full customer list. The same bytes as the last applied
    import change nothing and return that batch.
    """
    report = progress or (lambda phase, done, total: None)
    digest = hashlib.sha256(data).hexdigest()
    fmt = file_format or sniff_format(data[:64], file_name)
    async with db.tenant(org_id) as conn:
        source = await _source(conn, org_id, source_id, lock=False)
    mapping = source_mapping(source)
    report("checking rows", 0, 1)
    # Parsing 20 MB of CSV takes a second or two of CPU: off the event loop.
    parsed = await asyncio.to_thread(
        parse_import, data, mapping, fmt, max_bytes=max_bytes, max_length=max_length
    )
    report("checking rows", 1, 1)
    meta = _BatchMeta(_storable_name(file_name), fmt, digest, len(data), actor)
    if parsed.problems:
        return await _refuse(db, org_id, source_id, meta, parsed.problems)
    try:
        async with db.tenant(org_id) as conn:
            source = await _source(conn, org_id, source_id, lock=True)
            last = await queries.last_applied_batch(conn, org_id, source_id)
            if last is not None and last["file_sha256"] == digest:
                return ImportOutcome(batch=last, already_imported=True)
            batch_id = uuid4()
            rows = parsed.rows
            report("storing records", 0, len(rows))
            created, updated = await _upsert_records(conn, org_id, source_id, batch_id, rows)
            removed = await _mark_removed(conn, org_id, source_id, batch_id)
            report("storing records", len(rows), len(rows))
            report("matching by email", 0, 1)
            matched = await _match_by_email(conn, org_id, source_id, actor, batch_id)
            report("matching by email", 1, 1)
            run = await sync_run(
                conn,
                org_id=org_id,
                source=source,
                actor=actor,
                batch_id=batch_id,
                line_of={r.external_id: r.line for r in rows},
                progress=report,
            )
            counts = {
                "rows": len(rows),
                "created": created,
                "updated": updated,
                "unchanged": len(rows) - created - updated,
                "removed": removed,
                "matched": matched,
                "applied": run.applied,
                "categories": {c.value: n for c, n in run.categories.items()},
            }
            batch = await _insert_batch(conn, org_id, source_id, batch_id, meta, "APPLIED", counts)
            return ImportOutcome(batch=batch)
    except _RefusedError as exc:
        return await _refuse(db, org_id, source_id, meta, exc.problems)


def _storable_name(file_name: str | None) -> str | None:
    """The upload's file name as a batch can keep it: only a label, so one PostgreSQL
    cannot store (NUL, a lone surrogate, absurd length) is mended rather than refused."""
    if file_name is None or text_problem(file_name, MAX_NAME) is None:
        return file_name
    mended = file_name[:MAX_NAME].replace("\x00", "\ufffd")
    return mended.encode("utf-8", "replace").decode("utf-8")


@dataclass(frozen=True)
class _BatchMeta:
    file_name: str | None
    file_format: ImportFormat
    sha256: str
    byte_size: int
    actor: Actor


async def _insert_batch(
    conn: AsyncConnection,
    org_id: UUID,
    source_id: UUID,
    batch_id: UUID,
    meta: _BatchMeta,
    status: str,
    counts: Mapping[str, Any],
    errors: Sequence[Mapping[str, Any]] = (),
) -> Row:
    values = {
        "org_id": org_id,
        "id": batch_id,
        "source_id": source_id,
        "status": status,
        "file_name": meta.file_name,
        "file_format": meta.file_format.value,
        "file_sha256": meta.sha256,
        "byte_size": meta.byte_size,
        "counts": dict(counts),
        "errors": list(errors),
        "actor_id": meta.actor.id,
        "actor": meta.actor.name,
    }
    result = await conn.execute(
        insert(external_import_batches).values(**values).returning(external_import_batches)
    )
    return dict(result.mappings().one())


async def _refuse(
    db: Database, org_id: UUID, source_id: UUID, meta: _BatchMeta, problems: Sequence[RowProblem]
) -> ImportOutcome:
    """Keep a REFUSED batch with the problems (its own transaction: nothing else stays)."""
    errors = [
        {"line": p.line, "column": p.column, "reason": p.reason}
        for p in problems[:MAX_STORED_PROBLEMS]
    ]
    counts = {"problems": len(problems)}
    async with db.tenant(org_id) as conn:
        batch = await _insert_batch(
            conn, org_id, source_id, uuid4(), meta, "REFUSED", counts, errors
        )
    return ImportOutcome(batch=batch)


_UPSERT = (
    "WITH incoming AS ("
    " SELECT * FROM unnest($4::text[], $5::text[], $6::bool[], $7::int[])"
    " AS u(external_id, vals, active, line)),"
    " old AS (SELECT r.external_id, r.values, r.active, r.deleted FROM external_records r"
    " JOIN incoming i ON i.external_id = r.external_id"
    " WHERE r.org_id = $1 AND r.source_id = $2),"
    " up AS (INSERT INTO external_records"
    " (org_id, source_id, external_id, values, active, deleted, line, last_batch_id, updated_at)"
    " SELECT $1::uuid, $2::uuid, i.external_id, i.vals::jsonb, i.active, false, i.line,"
    " $3::uuid, now() FROM incoming i"
    " ON CONFLICT (org_id, source_id, external_id) DO UPDATE SET values = EXCLUDED.values,"
    " active = EXCLUDED.active, deleted = false, line = EXCLUDED.line,"
    " last_batch_id = EXCLUDED.last_batch_id, updated_at = now()"
    " RETURNING external_id, values, active)"
    " SELECT count(*) FILTER (WHERE o.external_id IS NULL) AS created,"
    " count(*) FILTER (WHERE o.external_id IS NOT NULL"
    " AND (o.values, o.active, o.deleted) IS DISTINCT FROM (up.values, up.active, false))"
    " AS updated FROM up LEFT JOIN old o ON o.external_id = up.external_id"
)


async def _upsert_records(
    conn: AsyncConnection, org_id: UUID, source_id: UUID, batch_id: UUID, rows: Sequence[Any]
) -> tuple[int, int]:
    """Store every row of the import in one statement; (created, updated) counts."""
    [counts] = await raw.fetch(
        conn,
        _UPSERT,
        org_id,
        source_id,
        batch_id,
        [r.external_id for r in rows],
        [_json(r.values) for r in rows],
        [r.active for r in rows],
        [r.line for r in rows],
    )
    return int(counts["created"]), int(counts["updated"])


async def _mark_removed(
    conn: AsyncConnection, org_id: UUID, source_id: UUID, batch_id: UUID
) -> int:
    """Records absent from this import left the external system: marked deleted."""
    status = await raw.execute(
        conn,
        "UPDATE external_records SET deleted = true, updated_at = now()"
        " WHERE org_id = $1 AND source_id = $2 AND NOT deleted"
        " AND last_batch_id IS DISTINCT FROM $3",
        org_id,
        source_id,
        batch_id,
    )
    return int(status.split()[-1])


# Unpaired records that may be matched, and customers by lower-cased email. The emails go
# in as values: a join on lower(e.values->>'email') cannot use uq_customers_org_email under
# row-level security (lower() is not leakproof), and scans every customer per record.
_UNPAIRED = (
    "SELECT external_id, values->>'email' AS email FROM external_records"
    " WHERE org_id = $1 AND source_id = $2 AND customer_id IS NULL AND auto_match AND active"
    " AND NOT deleted AND values->>'email' IS NOT NULL ORDER BY external_id"
)
_BY_EMAIL = (
    "SELECT c.id, lower(c.email) AS email FROM customers c WHERE c.org_id = $1"
    " AND NOT c.deleted AND c.email IS NOT NULL AND lower(c.email) = ANY($3::text[])"
    " AND NOT EXISTS (SELECT 1 FROM external_records l WHERE l.org_id = $1"
    " AND l.source_id = $2 AND l.customer_id = c.id)"
)
_LINK = (
    "UPDATE external_records r SET customer_id = u.customer_id, synced = NULL,"
    " sync_active = true, linked_at = now(), updated_at = now()"
    " FROM unnest($3::text[], $4::uuid[]) AS u(external_id, customer_id)"
    " WHERE r.org_id = $1 AND r.source_id = $2 AND r.external_id = u.external_id"
)


async def _match_by_email(
    conn: AsyncConnection, org_id: UUID, source_id: UUID, actor: Actor, batch_id: UUID
) -> int:
    """Pair unpaired, active external records with the customer of the same primary email
    (case-insensitive) that has no link to this source yet."""
    unpaired = await raw.fetch(conn, _UNPAIRED, org_id, source_id)
    if not unpaired:
        return 0
    owners = {
        r["email"]: r["id"]
        for r in await raw.fetch(
            conn, _BY_EMAIL, org_id, source_id, list({r["email"].lower() for r in unpaired})
        )
    }
    matched: list[dict[str, Any]] = []
    for record in unpaired:
        # Emails are unique among an import's active rows and among live customers, so each
        # customer meets at most one record here.
        customer_id = owners.pop(record["email"].lower(), None)
        if customer_id is not None:
            matched.append({"external_id": record["external_id"], "customer_id": customer_id})
    if matched:
        await raw.execute(
            conn,
            _LINK,
            org_id,
            source_id,
            [r["external_id"] for r in matched],
            [r["customer_id"] for r in matched],
        )
    await _audit(
        conn,
        org_id,
        source_id,
        actor,
        [
            AuditEntry(
                "MATCHED_BY_EMAIL", r["external_id"], r["customer_id"], {"batch": str(batch_id)}
            )
            for r in matched
        ],
    )
    return len(matched)


# --------------------------------------------------------------------------- sync run


@dataclass
class RunResult:
    """What a sync run did: customers written and the category counts afterwards."""

    applied: int
    categories: dict[Category, int]


@dataclass(frozen=True)
class _Evaluation:
    category: Category | None
    synced: Values | None
    conflicts: dict[str, tuple[str | None, str | None]]
    pending: tuple[str, ...]
    apply_local: Values


def _evaluate(
    row: Mapping[str, Any], fields: Sequence[str], direction: Direction, *, auto_apply: bool
) -> _Evaluation:
    """Compare and sort one stored pair (``queries.PAIR_COLUMNS`` row)."""
    linked = row["customer_id"] is not None
    local_deleted = linked and (row["c_id"] is None or row["c_deleted"])
    synced: Values | None = row["synced"]
    conflicts: dict[str, tuple[str | None, str | None]] = {}
    pending: tuple[str, ...] = ()
    apply_local: Values = {}
    if linked and row["sync_active"] and not row["deleted"] and not local_deleted:
        comparison = compare(fields, synced, local_values(row, fields), row["values"])
        decided = plan(direction, comparison, synced, auto_apply=auto_apply)
        synced, conflicts = decided.synced, decided.conflicts
        pending, apply_local = decided.pending_export, decided.apply_local
    category = categorise(
        PairState(
            linked=linked,
            sync_active=row["sync_active"],
            external_active=row["active"],
            external_deleted=row["deleted"],
            local_deleted=local_deleted,
            has_conflicts=bool(conflicts),
        )
    )
    return _Evaluation(category, synced, conflicts, pending, apply_local)


def _stored_state(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return (
        row["category"],
        row["synced"],
        {k: list(v) for k, v in (row["conflicts"] or {}).items()},
        list(row["pending"] or []),
    )


def _new_state(evaluation: _Evaluation) -> tuple[Any, ...]:
    return (
        evaluation.category.value if evaluation.category else None,
        evaluation.synced,
        {k: list(v) for k, v in evaluation.conflicts.items()},
        list(evaluation.pending),
    )


_SAVE_STATES = (
    "UPDATE external_records r SET category = u.category, synced = u.synced::jsonb,"
    " conflicts = u.conflicts::jsonb, pending = u.pending::jsonb, updated_at = now()"
    " FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[])"
    " AS u(external_id, category, synced, conflicts, pending)"
    " WHERE r.org_id = $1 AND r.source_id = $2 AND r.external_id = u.external_id"
)


async def _save_states(
    conn: AsyncConnection,
    org_id: UUID,
    source_id: UUID,
    states: Sequence[tuple[str, tuple[Any, ...]]],
) -> None:
    if not states:
        return
    await raw.execute(
        conn,
        _SAVE_STATES,
        org_id,
        source_id,
        [external_id for external_id, _ in states],
        [state[0] for _, state in states],
        [None if state[1] is None else _json(state[1]) for _, state in states],
        [_json(state[2]) for _, state in states],
        [_json(state[3]) for _, state in states],
    )


async def sync_run(
    conn: AsyncConnection,
    *,
    org_id: UUID,
    source: Mapping[str, Any],
    actor: Actor,
    batch_id: UUID | None = None,
    line_of: Mapping[str, int] | None = None,
    progress: Progress | None = None,
) -> RunResult:
    """Compare every pair of a source, apply one-sided changes per its direction and store
    each pair's category. Used by imports and by a refresh without a file.

    Writes to customers are validated first; a write that would make a customer invalid or
    take another customer's email refuses the run (with the record's line).
    """
    report = progress or (lambda phase, done, total: None)
    source_id = source["id"]
    fields = mapped_fields(source_mapping(source))
    direction = Direction(source["direction"])
    rows = await queries.all_pairs(conn, org_id, source_id)
    report("comparing", 0, len(rows))
    changed: list[tuple[str, tuple[Any, ...]]] = []
    applies: dict[UUID, tuple[Row, Values]] = {}
    counts = dict.fromkeys(Category, 0)
    for row in rows:
        evaluation = _evaluate(row, fields, direction, auto_apply=True)
        if evaluation.category is not None:
            counts[evaluation.category] += 1
        state = _new_state(evaluation)
        if state != _stored_state(row):
            changed.append((row["external_id"], state))
        if evaluation.apply_local:
            applies[row["customer_id"]] = (row, evaluation.apply_local)
    report("comparing", len(rows), len(rows))
    report("applying to customers", 0, len(applies))
    await _apply_to_customers(conn, org_id, applies, line_of or {})
    await _save_states(conn, org_id, source_id, changed)
    await _audit(
        conn,
        org_id,
        source_id,
        actor,
        [
            AuditEntry(
                "AUTO_APPLIED",
                row["external_id"],
                customer_id,
                {
                    "fields": {
                        k: {"from": local_values(row, fields).get(k), "to": v}
                        for k, v in values.items()
                    },
                    "direction": direction.value,
                    **({"batch": str(batch_id)} if batch_id else {}),
                },
            )
            for customer_id, (row, values) in applies.items()
        ],
    )
    report("applying to customers", len(applies), len(applies))
    counts[Category.NEW_LOCAL] = (await queries.category_counts(conn, org_id, source_id))[
        Category.NEW_LOCAL
    ]
    return RunResult(applied=len(applies), categories=counts)


_EMAIL_OWNERS = (
    "SELECT id, lower(email) AS email FROM customers WHERE org_id = $1 AND NOT deleted"
    " AND lower(email) = ANY($2::text[])"
)


async def _apply_to_customers(
    conn: AsyncConnection,
    org_id: UUID,
    applies: Mapping[UUID, tuple[Row, Values]],
    line_of: Mapping[str, int],
) -> None:
    """Write external values to customers in one write-path batch, after checking them."""
    if not applies:
        return
    current = await lock_rows(conn, CUSTOMER, org_id, list(applies))
    problems: list[RowProblem] = []
    writes: list[RecordWrite] = []
    for customer_id, (row, values) in applies.items():
        line = line_of.get(row["external_id"], row["line"])
        customer = current.get(customer_id)
        if customer is None or customer["deleted"]:
            continue
        patch = customer_patch(customer, values)
        merged = {f: customer[f] for f in ("business_name", "first_name", "last_name", "email")}
        merged["phones"] = customer["phones"]
        merged.update(patch)
        for path, message in validate_record("customer", merged, []).items():
            problems.append(
                RowProblem(line, f"would make customer {customer_id} invalid: {path} {message}")
            )
        writes.append(RecordWrite(record_id=customer_id, patch=patch))
    emails = {
        str(values["email"]).lower(): (customer_id, row)
        for customer_id, (row, values) in applies.items()
        if values.get("email")
    }
    if emails:
        for owner in await raw.fetch(conn, _EMAIL_OWNERS, org_id, list(emails)):
            customer_id, row = emails[owner["email"]]
            if owner["id"] != customer_id:
                problems.append(
                    RowProblem(
                        line_of.get(row["external_id"], row["line"]),
                        f"email {owner['email']!r} belongs to another customer ({owner['id']})",
                    )
                )
    if problems:
        raise _RefusedError(problems)
    try:
        await write_records(
            conn,
            org_id=org_id,
            spec=CUSTOMER,
            writes=writes,
            replica=SERVER_REPLICA,
            current=current,
        )
    except IntegrityError as exc:
        # Two customers swapping emails in one run trip the unique index mid-statement.
        if "uq_customers_org_email" in str(exc.orig):
            raise _RefusedError(
                [RowProblem(0, "two customers would swap or share an email: change one first")]
            ) from exc
        raise


async def refresh(
    conn: AsyncConnection, *, org_id: UUID, source_id: UUID, actor: Actor
) -> RunResult:
    """A sync run against the last imported values (after local edits), without a file."""
    source = await _source(conn, org_id, source_id, lock=True)
    try:
        return await sync_run(conn, org_id=org_id, source=source, actor=actor)
    except _RefusedError as exc:
        raise RecordValidationError({f"line {p.line}": p.reason for p in exc.problems}) from exc


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class ItemRefusal:
    """One item of an action that was not done, and why (the others were)."""

    key: str
    code: str
    message: str


@dataclass
class ActionOutcome:
    """External ids whose pairs changed, customers made NEW_LOCAL, and refused items."""

    external_ids: list[str] = field(default_factory=list)
    customer_ids: list[UUID] = field(default_factory=list)
    refused: list[ItemRefusal] = field(default_factory=list)

    def refuse(self, key: str, code: str, message: str) -> None:
        """Record one refused item."""
        self.refused.append(ItemRefusal(key, code, message))


class _Action:
    """Shared steps of an admin action on some pairs of one source, in one transaction."""

    def __init__(self, conn: AsyncConnection, org_id: UUID, source: Row, actor: Actor) -> None:
        self.conn = conn
        self.org_id = org_id
        self.source = source
        self.actor = actor
        self.fields = mapped_fields(source_mapping(source))
        self.direction = Direction(source["direction"])
        self.outcome = ActionOutcome()
        self.audit: list[AuditEntry] = []
        self.states: list[tuple[str, tuple[Any, ...]]] = []

    @classmethod
    async def start(
        cls, conn: AsyncConnection, org_id: UUID, source_id: UUID, actor: Actor
    ) -> _Action:
        # Shares the source lock with imports: an action never interleaves with one.
        return cls(conn, org_id, await _source(conn, org_id, source_id, lock=True), actor)

    async def pairs(self, external_ids: Sequence[str]) -> dict[str, Row]:
        # An id PostgreSQL cannot hold as text (NUL, a lone surrogate) names no record; it
        # would fail the lookup, so it is not looked up and is refused as not found.
        storable = [e for e in dict.fromkeys(external_ids) if text_problem(e) is None]
        found = await queries.pairs_by_external_id(
            self.conn, self.org_id, self.source["id"], storable, lock=True
        )
        for external_id in external_ids:
            if external_id not in found:
                self.outcome.refuse(
                    external_id, "NOT_FOUND", f"no external record {external_id!r} in this source"
                )
        return found

    async def rows(self, external_ids: Sequence[str]) -> list[Row]:
        """The locked pairs of ``external_ids`` that exist, in first-mention order (each
        once); the others are refused as NOT_FOUND."""
        found = await self.pairs(external_ids)
        return [found[e] for e in dict.fromkeys(external_ids) if e in found]

    def resort(self, row: Row) -> None:
        """Store the pair's new category (nothing applied automatically)."""
        evaluation = _evaluate(row, self.fields, self.direction, auto_apply=False)
        self.states.append((row["external_id"], _new_state(evaluation)))
        self.outcome.external_ids.append(row["external_id"])

    async def set_link(
        self,
        external_id: str,
        customer_id: UUID | None,
        synced: Values | None,
        *,
        auto_match: bool = True,
    ) -> None:
        await raw.execute(
            self.conn,
            "UPDATE external_records SET customer_id = $4, synced = $5::text::jsonb,"
            " sync_active = true, auto_match = $6,"
            " linked_at = CASE WHEN $4::uuid IS NULL THEN NULL ELSE now() END,"
            " updated_at = now() WHERE org_id = $1 AND source_id = $2 AND external_id = $3",
            self.org_id,
            self.source["id"],
            external_id,
            customer_id,
            None if synced is None else _json(synced),
            auto_match,
        )

    async def write_customers(self, writes: Sequence[RecordWrite]) -> list[Row]:
        """Customer writes through the one write path, as the server replica."""
        if not writes:
            return []
        return await write_records(
            self.conn,
            org_id=self.org_id,
            spec=CUSTOMER,
            writes=writes,
            replica=SERVER_REPLICA,
        )

    async def finish(self) -> ActionOutcome:
        await _save_states(self.conn, self.org_id, self.source["id"], self.states)
        await _audit(self.conn, self.org_id, self.source["id"], self.actor, self.audit)
        return self.outcome


async def _email_problem(
    conn: AsyncConnection, org_id: UUID, email: str | None, exclude: UUID | None
) -> str | None:
    if not email:
        return None
    for owner in await raw.fetch(conn, _EMAIL_OWNERS, org_id, [email.lower()]):
        if owner["id"] != exclude:
            return f"another customer already uses {email}"
    return None


async def pair(
    conn: AsyncConnection,
    *,
    org_id: UUID,
    source_id: UUID,
    items: Sequence[tuple[str, UUID]],
    actor: Actor,
) -> ActionOutcome:
    """Pair unpaired external records with chosen customers (which must have no link to
    this source). A fresh pair has no last-synced values: differing fields are conflicts."""
    action = await _Action.start(conn, org_id, source_id, actor)
    found = await action.pairs([external_id for external_id, _ in items])
    customers = {
        r["id"]: r
        for r in (await lock_rows(conn, CUSTOMER, org_id, [c for _, c in items])).values()
    }
    taken = await queries.linked_customers(conn, org_id, source_id, [c for _, c in items])
    for external_id, customer_id in items:
        row = found.get(external_id)
        if row is None:
            continue
        customer = customers.get(customer_id)
        if row["customer_id"] is not None or row["deleted"]:
            action.outcome.refuse(
                external_id, "NOT_PAIRABLE", "only new or inactive external records can be paired"
            )
        elif customer is None or customer["deleted"]:
            action.outcome.refuse(external_id, "NOT_FOUND", f"customer {customer_id} not found")
        elif customer_id in taken:
            action.outcome.refuse(
                external_id, "ALREADY_LINKED", "that customer is already paired in this source"
            )
        else:
            taken.add(customer_id)
            await action.set_link(external_id, customer_id, None)
            row.update(customer_id=customer_id, synced=None, sync_active=True)
            row.update(c_id=customer_id, c_deleted=False)
            row.update({k: customer[k] for k in ("business_name", "first_name", "last_name")})
            row.update(email=customer["email"], phones=customer["phones"])
            action.resort(row)
            action.audit.append(AuditEntry("PAIRED", external_id, customer_id))
    return await action.finish()


async def create_customers(
    conn: AsyncConnection,
    *,
    org_id: UUID,
    source_id: UUID,
    external_ids: Sequence[str],
    actor: Actor,
    max_length: int = 10_000,
) -> ActionOutcome:
    """Create a customer from each unpaired external record (validated like any new
    customer, through the write path) and pair them as synchronized."""
    action = await _Action.start(conn, org_id, source_id, actor)
    definitions = await field_definitions(conn, org_id, EntityType.CUSTOMER)
    writes: list[RecordWrite] = []
    made: list[tuple[Row, UUID]] = []
    emails: set[str] = set()
    for row in await action.rows(external_ids):
        external_id = row["external_id"]
        if row["customer_id"] is not None or row["deleted"]:
            action.outcome.refuse(
                external_id, "NOT_PAIRABLE", "only new or inactive external records can be created"
            )
            continue
        patch = customer_patch(None, {f: row["values"].get(f) for f in action.fields})
        values = {**CUSTOMER.new_row_defaults(), **patch}
        errors = validate_record("customer", values, definitions, max_length=max_length)
        email = patch.get("email")
        problem = await _email_problem(conn, org_id, email, None)
        if problem is None and email and email.lower() in emails:
            problem = f"another record of this action also uses {email}"
        if errors:
            action.outcome.refuse(
                external_id,
                "VALIDATION_FAILED",
                "; ".join(f"{k} {v}" for k, v in errors.items()),
            )
        elif problem:
            action.outcome.refuse(external_id, "EMAIL_TAKEN", problem)
        else:
            if email:
                emails.add(email.lower())
            customer_id = uuid4()
            writes.append(RecordWrite(record_id=customer_id, patch=patch))
            made.append((row, customer_id))
    await action.write_customers(writes)
    for row, customer_id in made:
        synced = {f: row["values"].get(f) for f in action.fields}
        await action.set_link(row["external_id"], customer_id, synced)
        action.states.append((row["external_id"], (Category.SYNCHRONIZED.value, synced, {}, [])))
        action.outcome.external_ids.append(row["external_id"])
        action.audit.append(
            AuditEntry("CREATED_CUSTOMER", row["external_id"], customer_id, {"values": synced})
        )
    return await action.finish()


@dataclass(frozen=True)
class Resolution:
    """Keep one side of a conflict, for the named fields (stored names) or all of them."""

    external_id: str
    keep: Side
    fields: tuple[str, ...] | None = None


async def resolve_conflicts(
    conn: AsyncConnection,
    *,
    org_id: UUID,
    source_id: UUID,
    resolutions: Sequence[Resolution],
    actor: Actor,
) -> ActionOutcome:
    """Keep local or keep external for some or all conflicting fields of pairs.

    Keeping external writes the customer through the write path (devices receive it).
    """
    action = await _Action.start(conn, org_id, source_id, actor)
    found = await action.pairs([r.external_id for r in resolutions])
    writes: list[RecordWrite] = []
    for resolution in resolutions:
        row = found.get(resolution.external_id)
        if row is None:
            continue
        conflicts = {k: (v[0], v[1]) for k, v in (row["conflicts"] or {}).items()}
        if row["category"] != Category.CONFLICT.value or not conflicts:
            action.outcome.refuse(
                resolution.external_id, "NOT_A_CONFLICT", "no conflict to resolve"
            )
            continue
        fields = resolution.fields or tuple(conflicts)
        unknown = [f for f in fields if f not in conflicts]
        if unknown:
            action.outcome.refuse(
                resolution.external_id,
                "NOT_A_CONFLICT",
                "not in conflict: " + ", ".join(unknown),
            )
            continue
        apply_local, synced = resolve(conflicts, resolution.keep, fields, row["synced"])
        customer_id = row["customer_id"]
        if apply_local:
            current = (await lock_rows(conn, CUSTOMER, org_id, [customer_id]))[customer_id]
            patch = customer_patch(current, apply_local)
            merged = {**{f: current[f] for f in CUSTOMER.fields if f != "custom_fields"}, **patch}
            errors = validate_record("customer", merged, [])
            problem = await _email_problem(conn, org_id, patch.get("email"), customer_id)
            if errors or problem:
                action.outcome.refuse(
                    resolution.external_id,
                    "EMAIL_TAKEN" if problem else "VALIDATION_FAILED",
                    problem or "; ".join(f"{k} {v}" for k, v in errors.items()),
                )
                continue
            writes.append(RecordWrite(record_id=customer_id, patch=patch))
            row.update({k: v for k, v in patch.items() if k in row})
        row["synced"] = synced
        await raw.execute(
            conn,
            "UPDATE external_records SET synced = $4::text::jsonb WHERE org_id = $1"
            " AND source_id = $2 AND external_id = $3",
            org_id,
            source_id,
            resolution.external_id,
            _json(synced),
        )
        action.resort(row)
        action.audit.append(
            AuditEntry(
                f"KEPT_{resolution.keep.value}",
                resolution.external_id,
                customer_id,
                {
                    "fields": {
                        f: {"local": conflicts[f][0], "external": conflicts[f][1]} for f in fields
                    }
                },
            )
        )
    await action.write_customers(writes)
    return await action.finish()


async def set_sync_active(
    conn: AsyncConnection,
    *,
    org_id: UUID,
    source_id: UUID,
    external_ids: Sequence[str],
    active: bool,
    actor: Actor,
) -> ActionOutcome:
    """Switch sync off (DEACTIVATED) or back on for paired records."""
    action = await _Action.start(conn, org_id, source_id, actor)
    for row in await action.rows(external_ids):
        external_id = row["external_id"]
        if row["customer_id"] is None:
            action.outcome.refuse(external_id, "NOT_LINKED", "only paired records have a sync")
            continue
        await raw.execute(
            conn,
            "UPDATE external_records SET sync_active = $4 WHERE org_id = $1 AND source_id = $2"
            " AND external_id = $3",
            org_id,
            source_id,
            external_id,
            active,
        )
        row["sync_active"] = active
        action.resort(row)
        action.audit.append(
            AuditEntry("REACTIVATED" if active else "DEACTIVATED", external_id, row["customer_id"])
        )
    return await action.finish()


async def unlink(
    conn: AsyncConnection,
    *,
    org_id: UUID,
    source_id: UUID,
    external_ids: Sequence[str],
    actor: Actor,
) -> ActionOutcome:
    """Undo pairs: the record shows as new external, the customer as new local, and later
    imports do not pair them again by email."""
    action = await _Action.start(conn, org_id, source_id, actor)
    for row in await action.rows(external_ids):
        external_id = row["external_id"]
        customer_id = row["customer_id"]
        if customer_id is None:
            action.outcome.refuse(external_id, "NOT_LINKED", "this record is not paired")
            continue
        await action.set_link(external_id, None, None, auto_match=False)
        row.update(customer_id=None, synced=None, sync_active=True)
        action.resort(row)
        action.outcome.customer_ids.append(customer_id)
        action.audit.append(AuditEntry("UNLINKED", external_id, customer_id))
    return await action.finish()


async def remove_deleted(
    conn: AsyncConnection,
    *,
    org_id: UUID,
    source_id: UUID,
    external_ids: Sequence[str],
    archive_local: bool,
    actor: Actor,
) -> ActionOutcome:
    """Settle DELETED pairs: a record gone externally is removed (its customer archived
    with ``archive_local``, through the write path); a customer gone locally leaves its
    record unpaired (new external)."""
    action = await _Action.start(conn, org_id, source_id, actor)
    archive: list[RecordWrite] = []
    for row in await action.rows(external_ids):
        external_id = row["external_id"]
        if row["category"] != Category.DELETED.value:
            action.outcome.refuse(external_id, "NOT_DELETED", "this pair is not deleted on a side")
            continue
        customer_id = row["customer_id"]
        local_gone = row["c_id"] is None or row["c_deleted"]
        if row["deleted"]:
            await raw.execute(
                conn,
                "DELETE FROM external_records WHERE org_id = $1 AND source_id = $2"
                " AND external_id = $3",
                org_id,
                source_id,
                external_id,
            )
            if archive_local and not local_gone and not row["c_archived"]:
                archive.append(RecordWrite(record_id=customer_id, patch={"archived": True}))
            if not local_gone:
                action.outcome.customer_ids.append(customer_id)
        else:
            await action.set_link(external_id, None, None, auto_match=False)
            row.update(customer_id=None, synced=None)
            action.resort(row)
        action.audit.append(
            AuditEntry(
                "REMOVED",
                external_id,
                customer_id,
                {
                    "gone": "external" if row["deleted"] else "local",
                    "archivedLocal": bool(archive and archive[-1].record_id == customer_id),
                },
            )
        )
    await action.write_customers(archive)
    return await action.finish()


__all__ = [
    "ActionOutcome",
    "Actor",
    "ImportOutcome",
    "ItemRefusal",
    "Resolution",
    "RunResult",
    "create_customers",
    "create_source",
    "import_file",
    "pair",
    "refresh",
    "remove_deleted",
    "resolve_conflicts",
    "set_sync_active",
    "sync_run",
    "unlink",
    "update_source",
]
