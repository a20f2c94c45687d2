"""Create, update, archive and delete of synced records, through the one write path."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from db.entities import ASSET, CONTACT, CREDENTIAL, CUSTOMER, FACILITY, EntitySpec, EntityType
from db.errors import (
    EditConflictError,
    EmailTakenError,
    HasAttachedRecordsError,
    NotFoundError,
    RecordValidationError,
)
from db.queries import custom_fields, records
from db.queries.customers import email_owner
from db.queries.orgs import conflict_policies
from db.write_path import RecordWrite, Row, lock_rows, write_records
from sync.decision import IncomingChange, Op, Outcome, ServerRecord, decide
from sync.field_dots import dots_from_json
from sync.validation import FieldDefinition, shape_errors, validate_record

# Online edits (GraphiQL, web frontends) write as the server's own replica.
SERVER_REPLICA = "server"

PLURAL = {
    "contact": "contacts",
    "facility": "facilities",
    "asset": "assets",
    "credential": "credentials",
}

# What must be gone before a record of each type may be deleted.
CHILDREN: Mapping[EntityType, tuple[EntitySpec, ...]] = {
    EntityType.CUSTOMER: (CONTACT, FACILITY, ASSET, CREDENTIAL),
    EntityType.FACILITY: (ASSET,),
    EntityType.CONTACT: (CREDENTIAL,),
}


async def field_definitions(
    conn: AsyncConnection, org_id: UUID, entity: EntityType
) -> list[FieldDefinition]:
    """The tenant's custom field definitions for ``entity`` in validation's terms."""
    rows = await custom_fields.definitions_for(conn, org_id, [entity.value.upper()])
    return [
        FieldDefinition(
            key=r["key"],
            label=r["label"],
            field_type=r["field_type"],
            required=r["required"],
            options=tuple(o["value"] for o in r["options"]),
        )
        for r in rows
    ]


# Object-valued fields a patch updates key by key (a None value removes the key).
KEYED_FIELDS = ("settings", "custom_fields")


def merge_keyed_fields(patch: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """The patch with settings and custom field values merged into the current ones.

    A patch value that is not an object is left as it is, for validation to refuse; a
    current value that is not one (a row written before shapes were checked) counts as
    empty, so the write replaces it with an object.
    """
    merged = dict(patch)
    for name in KEYED_FIELDS:
        if isinstance(patch.get(name), Mapping):
            stored = current.get(name)
            combined = {**(stored if isinstance(stored, Mapping) else {}), **patch[name]}
            merged[name] = {k: v for k, v in combined.items() if v is not None}
    return merged


async def _parent_links(
    conn: AsyncConnection, org_id: UUID, spec: EntitySpec, links: Mapping[str, UUID]
) -> dict[str, UUID]:
    """Resolve and check the parents of a new record; an asset's customer is its facility's."""
    if spec is ASSET:
        found = await records.by_ids(conn, FACILITY, org_id, [links["facility_id"]])
        if not found:
            raise NotFoundError("facility", links["facility_id"])
        return {"facility_id": found[0]["id"], "customer_id": found[0]["customer_id"]}
    if spec in (CONTACT, FACILITY):
        if not await records.by_ids(conn, CUSTOMER, org_id, [links["customer_id"]]):
            raise NotFoundError("customer", links["customer_id"])
        return {"customer_id": links["customer_id"]}
    return {}


async def save(
    conn: AsyncConnection,
    *,
    org_id: UUID,
    spec: EntitySpec,
    record_id: UUID | None,
    patch: Mapping[str, Any],
    links: Mapping[str, UUID] | None = None,
    replica: str = SERVER_REPLICA,
    max_length: int = 10_000,
    base_version: Mapping[str, int] | None = None,
) -> Row:
    """Create (``record_id`` None) or update one record after validating the result.

    With ``base_version`` an update follows the sync rules (``sync.decision``): fields the
    server changed since that version are not overwritten silently; the tenant's policy
    decides, and under MANUAL the edit is refused with :class:`EditConflictError`.
    """
    # Wrong shapes are named before anything else (a conflict or a missing parent would
    # hide them); validate_record below judges the merged record again.
    errors = shape_errors(spec.type.value, patch)
    if errors:
        raise RecordValidationError(errors)
    current: Row | None = None
    if record_id is None:
        record_id = uuid4()
        resolved = await _parent_links(conn, org_id, spec, links or {})
        defaults = spec.new_row_defaults()
        merged: dict[str, Any] = {**{f: defaults[f] for f in spec.fields}, **patch}
    else:
        current = (await lock_rows(conn, spec, org_id, [record_id])).get(record_id)
        if current is None or current["deleted"]:
            raise NotFoundError(spec.type.value, record_id)
        resolved = {}
        merged = {**{f: current[f] for f in spec.fields}, **patch}
    patch = merge_keyed_fields(patch, current or spec.new_row_defaults())
    if base_version is not None and current is not None:
        patch = await _decide_online_edit(conn, org_id, spec, current, patch, base_version, replica)
    merged.update(patch)
    definitions = await field_definitions(conn, org_id, spec.type)
    errors = validate_record(
        spec.type.value,
        merged,
        definitions,
        max_length=max_length,
        stored=current,
    )
    if errors:
        raise RecordValidationError(errors)
    write = RecordWrite(record_id=record_id, patch=patch, links=resolved)
    return await write_one(
        conn, org_id=org_id, spec=spec, write=write, replica=replica, current=current
    )


async def write_one(
    conn: AsyncConnection,
    *,
    org_id: UUID,
    spec: EntitySpec,
    write: RecordWrite,
    replica: str,
    current: Row | None,
) -> Row:
    """One record's write through the write path, its values already validated.

    A customer's primary email that another live customer holds raises
    :class:`EmailTakenError`: checked first, and by the unique index when two writers race
    past the check.
    """
    email = write.patch.get("email")
    if spec is CUSTOMER and not write.delete and isinstance(email, str) and email.strip():
        owner = await email_owner(conn, org_id, email, exclude=write.record_id)
        if owner is not None:
            raise EmailTakenError(email, owner)
    try:
        [row] = await write_records(
            conn,
            org_id=org_id,
            spec=spec,
            writes=[write],
            replica=replica,
            current={write.record_id: current} if current is not None else {},
        )
    except IntegrityError as exc:
        if spec is CUSTOMER and "uq_customers_org_email" in str(exc.orig):
            raise EmailTakenError(str(email), None) from exc
        raise
    return row


def server_record(spec: EntitySpec, row: Row | None) -> ServerRecord | None:
    """A stored row as the sync decision sees it."""
    if row is None:
        return None
    return ServerRecord(
        values={f: row[f] for f in spec.fields},
        version=row["version"],
        dots=dots_from_json(row["field_dots"]),
        deleted=row["deleted"],
    )


async def _decide_online_edit(
    conn: AsyncConnection,
    org_id: UUID,
    spec: EntitySpec,
    current: Row,
    patch: Mapping[str, Any],
    base_version: Mapping[str, int],
    replica: str,
) -> dict[str, Any]:
    policy = (await conflict_policies(conn, org_id))[spec.type]
    decision = decide(
        server_record(spec, current),
        IncomingChange(op=Op.UPSERT, base_version=base_version, patch=patch, replica=replica),
        policy,
    )
    if decision.outcome is Outcome.CONFLICT:
        raise EditConflictError(
            [(c.field, c.server_value, c.client_value) for c in decision.conflicts],
            current["version"],
        )
    if decision.outcome is Outcome.VALIDATION_FAILED:
        raise RecordValidationError(decision.field_errors)
    if decision.outcome is Outcome.DELETED:
        raise NotFoundError(spec.type.value, current["id"])
    return dict(decision.apply)


async def delete(
    conn: AsyncConnection,
    *,
    org_id: UUID,
    spec: EntitySpec,
    record_id: UUID,
    replica: str = SERVER_REPLICA,
) -> Row:
    """Tombstone one record, refused while live children remain attached."""
    current = (await lock_rows(conn, spec, org_id, [record_id])).get(record_id)
    if current is None or current["deleted"]:
        raise NotFoundError(spec.type.value, record_id)
    children = CHILDREN.get(spec.type, ())
    if spec is CUSTOMER:
        kinds = await records.has_live_children(conn, children, org_id, record_id)
        attached = [PLURAL[k] for k in kinds]
    else:
        # A facility's assets, a contact's credentials: children point at the parent's id.
        column = f"{spec.type.value}_id"
        attached = [
            PLURAL[child.type.value]
            for child in children
            if (await records.by_parent(conn, child, org_id, column, [record_id]))[0]
        ]
    if attached:
        raise HasAttachedRecordsError(attached)
    [row] = await write_records(
        conn,
        org_id=org_id,
        spec=spec,
        writes=[RecordWrite(record_id=record_id, delete=True)],
        replica=replica,
        current={record_id: current},
    )
    return row
