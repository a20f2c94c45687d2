"""Admin actions of the sync window on chosen pairs: pair, create customers, resolve
conflicts, pause or resume a pair's sync, unlink, remove deleted pairs.

Each action is one transaction holding the source's lock (shared with imports); the items
it cannot do come back as refusals while the others are done. Every customer write goes
through the one write path as the server replica, so it reaches devices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy.ext.asyncio import AsyncConnection

from db import raw
from db.commands.records import SERVER_REPLICA, field_definitions
from db.commands.window_audit import Actor, AuditEntry, json_text, write_audit
from db.commands.window_runs import EMAIL_OWNERS, evaluate_pair, pair_state, save_states
from db.commands.window_sources import load_source, source_mapping
from db.entities import CUSTOMER, EntityType
from db.queries import external as queries
from db.queries.pages import Row
from db.write_path import RecordWrite, lock_rows, write_records
from sync.validation import text_problem, validate_record
from sync.window import (
    Category,
    Direction,
    Side,
    Values,
    customer_patch,
    mapped_fields,
    resolve,
)


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
        return cls(conn, org_id, await load_source(conn, org_id, source_id, lock=True), actor)

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
        evaluation = evaluate_pair(row, self.fields, self.direction, auto_apply=False)
        self.states.append((row["external_id"], pair_state(evaluation)))
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
            None if synced is None else json_text(synced),
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
        await save_states(self.conn, self.org_id, self.source["id"], self.states)
        await write_audit(self.conn, self.org_id, self.source["id"], self.actor, self.audit)
        return self.outcome


async def _email_problem(
    conn: AsyncConnection, org_id: UUID, email: str | None, exclude: UUID | None
) -> str | None:
    if not email:
        return None
    for owner in await raw.fetch(conn, EMAIL_OWNERS, org_id, [email.lower()]):
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
            json_text(synced),
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
