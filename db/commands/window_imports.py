"""Imports of the external-system sync window: one file of a source, applied or refused whole.

An import is one transaction: the source row is locked (imports of one source queue), the
records are upserted set-based (``unnest`` arrays), records absent from the file are marked
deleted, unpaired records are matched to customers by email, and every pair is compared
and sorted (a sync run, ``db.commands.window_runs``). A refused import rolls back and
leaves only a REFUSED batch with its problems: nothing is half-imported. The parsing rules
are in ``sync.window``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from db import raw
from db.commands.window_audit import Actor, AuditEntry, json_text, write_audit
from db.commands.window_runs import Progress, RefusedError, sync_run
from db.commands.window_sources import load_source, source_mapping
from db.engine import Database
from db.queries import external as queries
from db.queries.pages import Row
from db.tables import external_import_batches
from sync.validation import text_problem
from sync.window import (
    MAX_NAME,
    ImportFormat,
    RowProblem,
    parse_import,
    sniff_format,
)

# Problems kept with a refused batch: enough to fix a file, bounded for a hostile one.
MAX_STORED_PROBLEMS = 1000


@dataclass(frozen=True)
class ImportOutcome:
    """An import's batch row, and whether it was the same file as the last applied one."""

    batch: Row
    already_imported: bool = False


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
        source = await load_source(conn, org_id, source_id, lock=False)
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
            source = await load_source(conn, org_id, source_id, lock=True)
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
    except RefusedError as exc:
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
        [json_text(r.values) for r in rows],
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
    await write_audit(
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
