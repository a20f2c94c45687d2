"""A sync run: compare every pair of a source, apply one-sided changes, store categories.

Imports end with one; ``refresh`` runs one without a file (after local edits). Writes to
customers go through the one write path as the server replica and are checked first: a
write that would make a customer invalid or take another's email refuses the whole run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from db import raw
from db.commands.records import SERVER_REPLICA
from db.commands.window_audit import Actor, AuditEntry, json_text, write_audit
from db.commands.window_sources import load_source, source_mapping
from db.entities import CUSTOMER
from db.errors import RecordValidationError
from db.queries import external as queries
from db.queries.pages import Row
from db.write_path import RecordWrite, lock_rows, write_records
from sync.validation import validate_record
from sync.window import (
    Category,
    Direction,
    PairState,
    RowProblem,
    Values,
    categorise,
    compare,
    customer_patch,
    local_values,
    mapped_fields,
    plan,
)

# Reports progress: (phase, done, total).
Progress = Callable[[str, int, int], None]


class RefusedError(Exception):
    """Raised inside a run's transaction to roll it back with these problems (an import
    keeps them with a REFUSED batch; a refresh answers VALIDATION_FAILED)."""

    def __init__(self, problems: Sequence[RowProblem]) -> None:
        super().__init__(f"{len(problems)} problem(s)")
        self.problems = list(problems)


@dataclass
class RunResult:
    """What a sync run did: customers written and the category counts afterwards."""

    applied: int
    categories: dict[Category, int]


@dataclass(frozen=True)
class PairEvaluation:
    """One pair compared and sorted: its category, last-synced values, conflicts, fields
    waiting for the export and values to write to the customer."""

    category: Category | None
    synced: Values | None
    conflicts: dict[str, tuple[str | None, str | None]]
    pending: tuple[str, ...]
    apply_local: Values


def evaluate_pair(
    row: Mapping[str, Any], fields: Sequence[str], direction: Direction, *, auto_apply: bool
) -> PairEvaluation:
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
    return PairEvaluation(category, synced, conflicts, pending, apply_local)


def _stored_state(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return (
        row["category"],
        row["synced"],
        {k: list(v) for k, v in (row["conflicts"] or {}).items()},
        list(row["pending"] or []),
    )


def pair_state(evaluation: PairEvaluation) -> tuple[Any, ...]:
    """What ``save_states`` stores of an evaluation (compared with the stored one)."""
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


async def save_states(
    conn: AsyncConnection,
    org_id: UUID,
    source_id: UUID,
    states: Sequence[tuple[str, tuple[Any, ...]]],
) -> None:
    """Store each pair's new state (``pair_state``) in one statement."""
    if not states:
        return
    await raw.execute(
        conn,
        _SAVE_STATES,
        org_id,
        source_id,
        [external_id for external_id, _ in states],
        [state[0] for _, state in states],
        [None if state[1] is None else json_text(state[1]) for _, state in states],
        [json_text(state[2]) for _, state in states],
        [json_text(state[3]) for _, state in states],
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
        evaluation = evaluate_pair(row, fields, direction, auto_apply=True)
        if evaluation.category is not None:
            counts[evaluation.category] += 1
        state = pair_state(evaluation)
        if state != _stored_state(row):
            changed.append((row["external_id"], state))
        if evaluation.apply_local:
            applies[row["customer_id"]] = (row, evaluation.apply_local)
    report("comparing", len(rows), len(rows))
    report("applying to customers", 0, len(applies))
    await apply_to_customers(conn, org_id, applies, line_of or {})
    await save_states(conn, org_id, source_id, changed)
    await write_audit(
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


# Live customers holding any of some (lower-cased) emails.
EMAIL_OWNERS = (
    "SELECT id, lower(email) AS email FROM customers WHERE org_id = $1 AND NOT deleted"
    " AND lower(email) = ANY($2::text[])"
)


async def apply_to_customers(
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
        for owner in await raw.fetch(conn, EMAIL_OWNERS, org_id, list(emails)):
            customer_id, row = emails[owner["email"]]
            if owner["id"] != customer_id:
                problems.append(
                    RowProblem(
                        line_of.get(row["external_id"], row["line"]),
                        f"email {owner['email']!r} belongs to another customer ({owner['id']})",
                    )
                )
    if problems:
        raise RefusedError(problems)
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
            raise RefusedError(
                [RowProblem(0, "two customers would swap or share an email: change one first")]
            ) from exc
        raise


async def refresh(
    conn: AsyncConnection, *, org_id: UUID, source_id: UUID, actor: Actor
) -> RunResult:
    """A sync run against the last imported values (after local edits), without a file."""
    source = await load_source(conn, org_id, source_id, lock=True)
    try:
        return await sync_run(conn, org_id=org_id, source=source, actor=actor)
    except RefusedError as exc:
        raise RecordValidationError({f"line {p.line}": p.reason for p in exc.problems}) from exc
