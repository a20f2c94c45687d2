"""Push: apply a device's batch of offline changes, one outcome each.

Each change runs in its own savepoint, so one bad change never blocks or half-applies
another. ``clientMutationId`` makes a push idempotent: a replay returns the first outcome
from ``push_receipts`` and writes nothing; a reused id with a different payload is refused.
The decision itself (applied, merged, conflict, deleted, validation failed) is the pure
``sync.decision.decide``; writes go through the one write path with the device's replica.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import orjson
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from db.commands.records import field_definitions, merge_keyed_fields, server_record
from db.entities import CUSTOMER, ENTITIES, EntitySpec, EntityType
from db.queries import devices as device_queries
from db.queries import records
from db.queries.customers import email_owner
from db.queries.orgs import conflict_policies
from db.tables import push_receipts, sync_conflicts
from db.write_path import RecordWrite, Row, lock_rows, write_records
from sync.decision import ConflictPolicy, IncomingChange, Op, Outcome, decide
from sync.validation import validate_record


@dataclass(frozen=True)
class PushChange:
    """One change of a push, in table terms (patch keys are column names)."""

    client_mutation_id: str
    entity: EntityType
    record_id: UUID
    op: Op
    base_version: Mapping[str, int] | None
    patch: Mapping[str, Any]
    links: Mapping[str, UUID]
    counter: int

    def fingerprint(self) -> str:
        """A digest of the payload, to tell a replay from a reused id."""
        body = orjson.dumps(
            [
                self.entity.value,
                str(self.record_id),
                self.op.value,
                self.base_version,
                self.patch,
                {k: str(v) for k, v in self.links.items()},
                self.counter,
            ],
            option=orjson.OPT_SORT_KEYS,
            default=str,
        )
        return hashlib.sha256(body).hexdigest()


@dataclass
class ChangeResult:
    """The outcome of one change, as stored for replays and returned to the client."""

    client_mutation_id: str
    entity: str
    record_id: str
    outcome: str
    version: dict[str, int] | None = None
    conflict_id: str | None = None
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    field_errors: dict[str, str] = field(default_factory=dict)
    message: str = ""
    replayed: bool = False


@dataclass(frozen=True)
class PushResult:
    """Every change's outcome, in input order."""

    results: list[ChangeResult]
    reregister_required: bool


def _jsonable(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value, default=str))


async def _links_for_create(
    conn: AsyncConnection, org_id: UUID, spec: EntitySpec, change: PushChange
) -> dict[str, UUID] | dict[str, str]:
    """Parents of a new record, or field errors when they are missing or gone."""
    if spec.type is EntityType.CUSTOMER:
        return {}
    if spec.type is EntityType.ASSET:
        facility_id = change.links.get("facility_id")
        found = (
            await records.by_ids(conn, ENTITIES[EntityType.FACILITY], org_id, [facility_id])
            if facility_id
            else []
        )
        if not found:
            return {"facilityId": "is required and must be a live facility"}
        return {"facility_id": found[0]["id"], "customer_id": found[0]["customer_id"]}
    customer_id = change.links.get("customer_id")
    if not customer_id or not await records.by_ids(conn, CUSTOMER, org_id, [customer_id]):
        return {"customerId": "is required and must be a live customer"}
    return {"customer_id": customer_id}


async def push(
    conn: AsyncConnection,
    *,
    org_id: UUID,
    device: Row,
    user_can_write: bool,
    changes: Sequence[PushChange],
    max_length: int,
) -> PushResult:
    """Apply ``changes`` from ``device`` in order; one savepoint and one outcome each."""
    device_id = device["id"]
    replica = device["replica_id"]
    receipts = await _receipts(conn, org_id, device_id, [c.client_mutation_id for c in changes])
    policies = await conflict_policies(conn, org_id)
    definitions = {t: await field_definitions(conn, org_id, t) for t in {c.entity for c in changes}}
    max_counter = int(device["max_counter"])
    reregister = False
    results: list[ChangeResult] = []
    for change in changes:
        fingerprint = change.fingerprint()
        stored = receipts.get(change.client_mutation_id)
        if stored is not None:
            if stored[0] == fingerprint:
                results.append(ChangeResult(**{**stored[1], "replayed": True}))
            else:
                results.append(
                    _refused(
                        change,
                        Outcome.VALIDATION_FAILED,
                        {"clientMutationId": "was already used for a different change"},
                    )
                )
            continue
        if change.counter <= max_counter:
            reregister = True
            results.append(
                _refused(
                    change,
                    Outcome.VALIDATION_FAILED,
                    {
                        "counter": f"went backwards ({change.counter} <= {max_counter}): this"
                        " device's state is older than what it already pushed; register it again"
                    },
                )
            )
            continue
        max_counter = change.counter
        if not user_can_write:
            result = _refused(change, Outcome.FORBIDDEN, {}, "your role may not change records")
        else:
            try:
                async with conn.begin_nested():
                    result = await _apply_one(
                        conn,
                        org_id=org_id,
                        device=device,
                        replica=replica,
                        change=change,
                        policy=policies[change.entity],
                        definitions=definitions[change.entity],
                        max_length=max_length,
                    )
            except IntegrityError as exc:
                # A unique index (primary email) lost a race the pre-check could not see.
                result = _refused(
                    change,
                    Outcome.VALIDATION_FAILED,
                    {"email": "is already used by another customer"},
                )
                del exc
        await _store_receipt(
            conn, org_id, device_id, change.client_mutation_id, fingerprint, result
        )
        receipts[change.client_mutation_id] = (fingerprint, asdict(result))
        results.append(result)
    await device_queries.update_device(
        conn, org_id, device_id, {"max_counter": max_counter, "last_push_at": datetime.now(UTC)}
    )
    return PushResult(results=results, reregister_required=reregister)


def _refused(
    change: PushChange, outcome: Outcome, errors: Mapping[str, str], message: str = ""
) -> ChangeResult:
    return ChangeResult(
        client_mutation_id=change.client_mutation_id,
        entity=change.entity.value,
        record_id=str(change.record_id),
        outcome=outcome.value,
        field_errors=dict(errors),
        message=message or "; ".join(f"{k} {v}" for k, v in errors.items()),
    )


async def _apply_one(
    conn: AsyncConnection,
    *,
    org_id: UUID,
    device: Row,
    replica: str,
    change: PushChange,
    policy: ConflictPolicy,
    definitions: Any,
    max_length: int,
) -> ChangeResult:
    spec = ENTITIES[change.entity]
    row = (await lock_rows(conn, spec, org_id, [change.record_id])).get(change.record_id)
    links: dict[str, UUID] = {}
    if row is None and change.op is Op.UPSERT and not change.base_version:
        resolved = await _links_for_create(conn, org_id, spec, change)
        if resolved and all(isinstance(v, str) for v in resolved.values()):
            return _refused(change, Outcome.VALIDATION_FAILED, resolved)  # type: ignore[arg-type]
        links = resolved  # type: ignore[assignment]
    customer_id = (
        row["customer_id"] if row is not None else links.get("customer_id", change.record_id)
    )
    if not await _customer_visible(
        conn, org_id, customer_id, creating=spec is CUSTOMER and row is None
    ):
        return _refused(
            change, Outcome.FORBIDDEN, {}, "the customer is archived or not visible to you"
        )
    base_values = {f: row[f] for f in spec.fields} if row is not None else spec.new_row_defaults()
    patch = merge_keyed_fields(change.patch, base_values)

    def validate(values: Mapping[str, object]) -> Mapping[str, str]:
        merged = {**base_values, **values}
        return validate_record(spec.type.value, merged, definitions, max_length=max_length)

    decision = decide(
        server_record(spec, row),
        IncomingChange(
            op=change.op, base_version=change.base_version, patch=patch, replica=replica
        ),
        policy,
        validate,
    )
    result = ChangeResult(
        client_mutation_id=change.client_mutation_id,
        entity=change.entity.value,
        record_id=str(change.record_id),
        outcome=decision.outcome.value,
        version=dict(row["version"]) if row is not None else None,
        conflicts=[
            _jsonable(
                {"field": c.field, "serverValue": c.server_value, "clientValue": c.client_value}
            )
            for c in decision.conflicts
        ],
        field_errors=dict(decision.field_errors),
        message=decision.message,
    )
    if decision.outcome in (Outcome.APPLIED, Outcome.MERGED) and (
        decision.apply or decision.delete
    ):
        email = decision.apply.get("email")
        if (
            spec is CUSTOMER
            and isinstance(email, str)
            and email.strip()
            and await email_owner(conn, org_id, email, exclude=change.record_id) is not None
        ):
            return _refused(
                change,
                Outcome.VALIDATION_FAILED,
                {"email": "is already used by another customer"},
            )
        [written] = await write_records(
            conn,
            org_id=org_id,
            spec=spec,
            replica=replica,
            device_id=device["id"],
            writes=[RecordWrite(change.record_id, decision.apply, decision.delete, links)],
            current={change.record_id: row} if row is not None else {},
        )
        if written:
            result.version = dict(written["version"])
            if spec is CUSTOMER and row is None and device["selection_mode"] == "SELECTED":
                await device_queries.add_to_selection(
                    conn,
                    org_id=org_id,
                    device_id=device["id"],
                    customer_id=change.record_id,
                    seq=written["seq"],
                )
    elif (
        decision.outcome is Outcome.CONFLICT and policy is ConflictPolicy.MANUAL and row is not None
    ):
        conflict_id = uuid4()
        await conn.execute(
            sync_conflicts.insert().values(
                org_id=org_id,
                id=conflict_id,
                device_id=device["id"],
                user_id=device["user_id"],
                entity=change.entity.value,
                record_id=change.record_id,
                customer_id=row["customer_id"],
                op=change.op.value,
                base_version=dict(change.base_version or {}),
                server_version=row["version"],
                client_patch=_jsonable(dict(patch)),
                fields=result.conflicts,
            )
        )
        result.conflict_id = str(conflict_id)
    return result


async def _customer_visible(
    conn: AsyncConnection, org_id: UUID, customer_id: UUID, *, creating: bool
) -> bool:
    if creating:
        return True
    rows = await conn.execute(
        select(CUSTOMER.table.c.archived, CUSTOMER.table.c.deleted).where(
            CUSTOMER.table.c.org_id == org_id, CUSTOMER.table.c.id == customer_id
        )
    )
    found = rows.first()
    # A deleted customer is not "invisible": the decision reports DELETED for its records.
    return found is None or not found.archived


async def _receipts(
    conn: AsyncConnection, org_id: UUID, device_id: UUID, ids: Sequence[str]
) -> dict[str, tuple[str, dict[str, Any]]]:
    result = await conn.execute(
        select(
            push_receipts.c.client_mutation_id,
            push_receipts.c.request_hash,
            push_receipts.c.outcome,
        ).where(
            push_receipts.c.org_id == org_id,
            push_receipts.c.device_id == device_id,
            push_receipts.c.client_mutation_id.in_(list(ids)),
        )
    )
    return {r[0]: (r[1], r[2]) for r in result}


async def _store_receipt(
    conn: AsyncConnection,
    org_id: UUID,
    device_id: UUID,
    client_mutation_id: str,
    fingerprint: str,
    result: ChangeResult,
) -> None:
    await conn.execute(
        push_receipts.insert().values(
            org_id=org_id,
            device_id=device_id,
            client_mutation_id=client_mutation_id,
            request_hash=fingerprint,
            outcome=asdict(result),
        )
    )
