"""Types of the external-system sync window: sources, imports, pairs, actions, audit."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any

import strawberry

from resolvers.context import Info
from schema.customers import Customer
from schema.errors import (
    Duplicate,
    ErrorCode,
    Forbidden,
    NotFound,
    UserError,
    ValidationError,
)
from schema.node import Node, to_global_id
from schema.scalars import JSON
from sync import window as rules

API_NAME = {stored: api for api, stored in rules.FIELDS.items()}


@strawberry.enum(description="Which side's one-sided changes an import applies automatically.")
class SyncDirection(enum.Enum):
    """See docs/external-sync.md."""

    EXTERNAL_TO_LOCAL = strawberry.enum_value(
        "EXTERNAL_TO_LOCAL",
        description="The external system is the master: a field changed only externally is"
        " written to the customer, and a field changed only here is set back to the"
        " external value.",
    )
    LOCAL_TO_EXTERNAL = strawberry.enum_value(
        "LOCAL_TO_EXTERNAL",
        description="fieldsync is the master: imports never write customers; local values"
        " go out with the export.",
    )
    BOTH = strawberry.enum_value(
        "BOTH",
        description="A field changed only externally is written to the customer; a field"
        " changed only here waits for the export.",
    )


@strawberry.enum(description="Where a pair shows in the sync window.")
class SyncCategory(enum.Enum):
    """The seven categories of the window."""

    CONFLICT = strawberry.enum_value(
        "CONFLICT",
        description="Paired, and both sides changed a field since the last sync to different"
        " values (or a fresh pair differs): choose a side.",
    )
    NEW_LOCAL = strawberry.enum_value(
        "NEW_LOCAL", description="A live customer here with no pair in this source."
    )
    NEW_EXTERNAL = strawberry.enum_value(
        "NEW_EXTERNAL", description="An active external record with no pair here."
    )
    DELETED = strawberry.enum_value(
        "DELETED",
        description="Paired, and gone on one side since: the external record left the import,"
        " or the customer was deleted.",
    )
    DEACTIVATED = strawberry.enum_value(
        "DEACTIVATED", description="Paired, with sync switched off for this pair."
    )
    SYNCHRONIZED = strawberry.enum_value(
        "SYNCHRONIZED",
        description="Paired and in sync (fields changed here only may wait for the export).",
    )
    INACTIVE = strawberry.enum_value(
        "INACTIVE", description="An external record imported as inactive, not paired."
    )


@strawberry.enum(description="One side of a pair.")
class SyncSide(enum.Enum):
    """Local (fieldsync) or external."""

    LOCAL = strawberry.enum_value("LOCAL", description="The customer in fieldsync.")
    EXTERNAL = strawberry.enum_value("EXTERNAL", description="The external system's record.")


@strawberry.enum(description="Formats an import may come in.")
class ImportFormat(enum.Enum):
    """CSV or JSON."""

    CSV = strawberry.enum_value("CSV", description="UTF-8 CSV with a header row.")
    JSON = strawberry.enum_value(
        "JSON", description='A UTF-8 JSON array of objects (or {"records": [...]}).'
    )


@strawberry.enum(description="How a field of a pair compares with its last-synced value.")
class SyncFieldState(enum.Enum):
    """Per-field state."""

    SAME = strawberry.enum_value("SAME", description="Both sides hold the same value.")
    LOCAL_CHANGED = strawberry.enum_value(
        "LOCAL_CHANGED", description="Changed here only since the last sync."
    )
    EXTERNAL_CHANGED = strawberry.enum_value(
        "EXTERNAL_CHANGED", description="Changed externally only since the last sync."
    )
    CONFLICT = strawberry.enum_value(
        "CONFLICT", description="Changed on both sides to different values."
    )
    ONE_SIDED = strawberry.enum_value(
        "ONE_SIDED", description="Only one side exists (a new or deleted record)."
    )


@strawberry.type(description="One column of an external file and the customer field it fills.")
class FieldMapping:
    """A mapping entry."""

    column: str = strawberry.field(description="Column name in the external file.")
    field: str = strawberry.field(
        description="Customer field: externalId, active, businessName, firstName, lastName,"
        " email or phone."
    )


@strawberry.input(description="One column of an external file and the customer field it fills.")
class FieldMappingInput:
    """A mapping entry to store."""

    column: str = strawberry.field(description="Column name in the external file.")
    field: str = strawberry.field(
        description="Customer field: externalId (required once), active, businessName,"
        " firstName, lastName, email or phone."
    )


@strawberry.type(
    description="A connected external system (accounting, ERP) and its mapping. Admins only:"
    " `node(id:)` gives null to anyone else."
)
class ExternalSource(Node):
    """An external source."""

    id: strawberry.ID = strawberry.field(description="Global id.")
    name: str = strawberry.field(description="Unique name, e.g. `Accounting`.")
    kind: str = strawberry.field(description="What kind of system, free text.")
    direction: SyncDirection = strawberry.field(
        description="Which one-sided changes imports apply."
    )
    mapping: list[FieldMapping] = strawberry.field(
        description="File columns and the fields they fill, in export column order."
    )
    created_at: datetime = strawberry.field(description="When it was registered.")
    updated_at: datetime = strawberry.field(description="Last change of direction or mapping.")

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ExternalSource:
        """From an ``external_sources`` row."""
        return cls(
            id=to_global_id("ExternalSource", row["id"]),
            name=row["name"],
            kind=row["kind"],
            direction=SyncDirection(row["direction"]),
            mapping=[FieldMapping(column=c, field=t) for c, t in row["mapping"]],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )


@strawberry.input(description="A new external source.")
class CreateExternalSourceInput:
    """Source registration."""

    name: str = strawberry.field(description="Unique name (any case).")
    mapping: list[FieldMappingInput] = strawberry.field(
        description="Columns to import; exactly one maps to `externalId`."
    )
    kind: str = strawberry.field(default="accounting", description="What kind of system.")
    direction: SyncDirection = strawberry.field(
        default=SyncDirection.BOTH, description="Which one-sided changes imports apply."
    )


@strawberry.input(description="Changes to a source; omitted parts stay.")
class UpdateExternalSourceInput:
    """Source changes (they apply from the next import)."""

    direction: SyncDirection | None = strawberry.field(default=None, description="New direction.")
    mapping: list[FieldMappingInput] | None = strawberry.field(
        default=None, description="New mapping (replaces the old one)."
    )


ExternalSourceResult = Annotated[
    ExternalSource | ValidationError | Duplicate | NotFound | Forbidden,
    strawberry.union("ExternalSourceResult", description="The source, or why it was refused."),
]


@strawberry.type(description="One problem of a refused import.")
class ImportRowError:
    """A bad row (or the whole file when `line` is 0 or 1 for the header)."""

    line: int = strawberry.field(
        description="CSV line (1 is the header) or JSON record position; 0: the whole file."
    )
    column: str | None = strawberry.field(description="The column at fault, when known.")
    reason: str = strawberry.field(description="What is wrong and how to fix it.")


@strawberry.type(description="How many pairs one category holds.")
class SyncCategoryCount:
    """A category and its count."""

    category: SyncCategory = strawberry.field(description="The category.")
    count: int = strawberry.field(description="Pairs in it.")


def category_counts(
    counts: Mapping[str, int] | Mapping[rules.Category, int],
) -> list[SyncCategoryCount]:
    """Counts of every category, in window order."""
    by_name = {str(getattr(k, "value", k)): v for k, v in counts.items()}
    return [
        SyncCategoryCount(category=SyncCategory(c.value), count=int(by_name.get(c.value, 0)))
        for c in rules.Category
    ]


@strawberry.type(
    description="One import of a source's file: its counts, status and problems. Admins only:"
    " `node(id:)` gives null to anyone else."
)
class ImportBatch(Node):
    """An import batch."""

    id: strawberry.ID = strawberry.field(description="Global id of the batch.")
    # A String, not an enum: `SyncConflict.status` (also a Node) is a String, and a `node`
    # selection of both members' `status` is refused by graphql-js, codegen and Relay unless
    # the two fields have one type.
    status: str = strawberry.field(
        description="APPLIED (every row was imported) or REFUSED (nothing was imported;"
        " `errors` lists why): an import is always whole."
    )
    file_name: str | None = strawberry.field(description="Name of the imported file.")
    file_format: ImportFormat = strawberry.field(description="CSV or JSON.")
    sha256: str = strawberry.field(description="SHA-256 of the file's bytes.")
    byte_size: int = strawberry.field(description="Size of the file.")
    rows: int = strawberry.field(description="Records in the file.")
    created: int = strawberry.field(description="Records seen for the first time.")
    updated: int = strawberry.field(description="Known records whose values changed.")
    unchanged: int = strawberry.field(description="Known records with the same values.")
    removed: int = strawberry.field(description="Records absent from this file (now deleted).")
    matched_by_email: int = strawberry.field(description="Records paired by primary email.")
    applied_to_local: int = strawberry.field(
        description="Customers written with external changes (devices receive them)."
    )
    counts: list[SyncCategoryCount] = strawberry.field(
        description="The window's categories after this import."
    )
    errors: list[ImportRowError] = strawberry.field(
        description="Why a refused import was refused (the first 1000 problems)."
    )
    problem_count: int = strawberry.field(description="How many problems a refusal found.")
    actor: str = strawberry.field(description="Who imported.")
    created_at: datetime = strawberry.field(description="When.")
    already_imported: bool = strawberry.field(
        description="True when this file is the same as the last applied import: nothing"
        " changed, and this is that earlier batch."
    )

    @classmethod
    def from_row(cls, row: Mapping[str, Any], *, already_imported: bool = False) -> ImportBatch:
        """From an ``external_import_batches`` row."""
        counts = row["counts"] or {}
        return cls(
            id=to_global_id("ImportBatch", row["id"]),
            status=row["status"],
            file_name=row["file_name"],
            file_format=ImportFormat(row["file_format"]),
            sha256=row["file_sha256"],
            byte_size=row["byte_size"],
            rows=counts.get("rows", 0),
            created=counts.get("created", 0),
            updated=counts.get("updated", 0),
            unchanged=counts.get("unchanged", 0),
            removed=counts.get("removed", 0),
            matched_by_email=counts.get("matched", 0),
            applied_to_local=counts.get("applied", 0),
            counts=category_counts(counts.get("categories", {})),
            errors=[
                ImportRowError(line=e["line"], column=e.get("column"), reason=e["reason"])
                for e in row["errors"] or []
            ],
            problem_count=counts.get("problems", 0),
            actor=row["actor"],
            created_at=row["created_at"],
            already_imported=already_imported,
        )


@strawberry.type(
    description="The import was refused as a whole: nothing was imported. Fix the rows listed"
    " (or the file's header or encoding) and import again."
)
class ImportRefused(UserError):  # noqa: N818 - a GraphQL error type, not an exception
    """A refused import (code VALIDATION_FAILED)."""

    batch: ImportBatch = strawberry.field(description="The refused batch, kept for the record.")
    errors: list[ImportRowError] = strawberry.field(description="Every problem found (up to 1000).")

    @classmethod
    def from_batch(cls, batch: ImportBatch) -> ImportRefused:
        """From a refused batch."""
        return cls(
            code=ErrorCode.VALIDATION_FAILED,
            message=f"Import refused: {batch.problem_count} problem(s); nothing was imported."
            + (
                f" First: line {batch.errors[0].line}: {batch.errors[0].reason}"
                if batch.errors
                else ""
            ),
            batch=batch,
            errors=batch.errors,
        )


ImportResult = Annotated[
    ImportBatch | ImportRefused | ValidationError | NotFound | Forbidden,
    strawberry.union("ImportResult", description="The applied batch, or why nothing was imported."),
]


@strawberry.type(description="One synced field of a pair, both sides side by side.")
class SyncFieldValue:
    """A field's local, external and last-synced values."""

    field: str = strawberry.field(description="Customer field (API name), e.g. `email`.")
    local_value: str | None = strawberry.field(description="The value here.")
    external_value: str | None = strawberry.field(description="The external system's value.")
    synced_value: str | None = strawberry.field(
        description="The value both had at the last sync (null before the first)."
    )
    state: SyncFieldState = strawberry.field(description="Which side changed it.")


@strawberry.type(description="One recorded action on a pair: who, when, what.")
class SyncAuditEntry:
    """An audit entry."""

    action: str = strawberry.field(
        description="MATCHED_BY_EMAIL, AUTO_APPLIED, PAIRED, CREATED_CUSTOMER, KEPT_LOCAL,"
        " KEPT_EXTERNAL, DEACTIVATED, REACTIVATED, UNLINKED or REMOVED."
    )
    actor: str = strawberry.field(description="Who: the user's email, or `cli`.")
    at: datetime = strawberry.field(description="When.")
    external_id: str | None = strawberry.field(description="The external record.")
    customer_id: strawberry.ID | None = strawberry.field(description="The customer's global id.")
    details: JSON = strawberry.field(description="What: fields with their values, the batch.")

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> SyncAuditEntry:
        """From an ``external_audit`` row."""
        customer_id = row["customer_id"]
        return cls(
            action=row["action"],
            actor=row["actor"],
            at=row["at"],
            external_id=row["external_id"],
            customer_id=to_global_id("Customer", customer_id) if customer_id else None,
            details=JSON(row["details"]),
        )


@strawberry.type(description="An external record and/or a customer, as the window shows them.")
class SyncPair:
    """One line of the sync window."""

    category: SyncCategory = strawberry.field(description="Where it shows.")
    external_id: str | None = strawberry.field(
        description="The external record's id (null for NEW_LOCAL)."
    )
    customer_id: strawberry.ID | None = strawberry.field(
        description="The paired customer's global id (null while unpaired)."
    )
    sync_active: bool = strawberry.field(description="False when sync is switched off.")
    external_active: bool = strawberry.field(description="The external record's active flag.")
    external_deleted: bool = strawberry.field(description="Gone from the latest import.")
    local_deleted: bool = strawberry.field(description="The paired customer was deleted.")
    fields: list[SyncFieldValue] = strawberry.field(description="Every synced field, both sides.")
    conflicts: list[SyncFieldValue] = strawberry.field(
        description="The fields changed on both sides (CONFLICT pairs)."
    )
    pending_export: list[str] = strawberry.field(
        description="Fields whose local value waits for the export to reach the other side."
    )
    audit_trail: list[SyncAuditEntry] = strawberry.field(
        description="Actions on this pair, oldest first."
    )
    customer_uuid: strawberry.Private[Any]

    @strawberry.field(description="The paired customer (null while unpaired or deleted).")
    async def customer(self, info: Info) -> Customer | None:
        """Through the request's customer loader (one query per page)."""
        if self.customer_uuid is None:
            return None
        row = await info.context.loaders.customer_by_id.load(self.customer_uuid)
        return Customer.from_row(row) if row else None


def _field_values(
    fields: Sequence[str], row: Mapping[str, Any]
) -> tuple[list[SyncFieldValue], list[SyncFieldValue]]:
    linked_local = row.get("c_id") is not None and not row.get("c_deleted")
    local = rules.local_values(row, fields) if linked_local else {}
    external = row.get("values") or {}
    synced = row.get("synced")
    conflicts = row.get("conflicts") or {}
    out: list[SyncFieldValue] = []
    both = linked_local and row.get("external_id") is not None and not row.get("deleted")
    comparison = rules.compare(fields, synced, local, external) if both else None
    for name in fields:
        if comparison is None:
            state = SyncFieldState.ONE_SIDED
        elif name in conflicts or name in comparison.conflicts:
            state = SyncFieldState.CONFLICT
        elif name in comparison.local_only:
            state = SyncFieldState.LOCAL_CHANGED
        elif name in comparison.external_only:
            state = SyncFieldState.EXTERNAL_CHANGED
        else:
            state = SyncFieldState.SAME
        out.append(
            SyncFieldValue(
                field=API_NAME[name],
                local_value=local.get(name),
                external_value=external.get(name) if row.get("external_id") else None,
                synced_value=(synced or {}).get(name),
                state=state,
            )
        )
    stored = [v for v in out if v.state is SyncFieldState.CONFLICT and _stored_name(v) in conflicts]
    return out, stored


def _stored_name(value: SyncFieldValue) -> str:
    return rules.FIELDS[value.field]


def pair_from_row(
    row: Mapping[str, Any],
    fields: Sequence[str],
    audit: Sequence[Mapping[str, Any]],
    *,
    category: rules.Category | None = None,
) -> SyncPair:
    """A window line from a ``queries.PAIR_COLUMNS`` row (or a NEW_LOCAL customer row)."""
    values, conflicts = _field_values(fields, row)
    customer_uuid = row.get("customer_id") or (
        row.get("c_id") if row.get("external_id") is None else None
    )
    shown = category or rules.Category(row["category"])
    return SyncPair(
        category=SyncCategory(shown.value),
        external_id=row.get("external_id"),
        customer_id=to_global_id("Customer", customer_uuid) if customer_uuid else None,
        sync_active=bool(row.get("sync_active", True)),
        external_active=bool(row.get("active", True)),
        external_deleted=bool(row.get("deleted", False)),
        local_deleted=row.get("customer_id") is not None
        and (row.get("c_id") is None or bool(row.get("c_deleted"))),
        fields=values,
        conflicts=conflicts,
        pending_export=[API_NAME[f] for f in row.get("pending") or []],
        audit_trail=[SyncAuditEntry.from_row(a) for a in audit],
        customer_uuid=customer_uuid,
    )


@strawberry.type(description="A page of one category of the window, with every category's count.")
class SyncWindow:
    """The sync window of one source."""

    source: ExternalSource = strawberry.field(description="The source.")
    category: SyncCategory = strawberry.field(description="The category of `pairs`.")
    counts: list[SyncCategoryCount] = strawberry.field(description="Every category's count.")
    pairs: list[SyncPair] = strawberry.field(description="This page of the category.")
    total_count: int = strawberry.field(description="Pairs in the category.")
    has_next_page: bool = strawberry.field(description="More pairs follow `endCursor`.")
    end_cursor: str | None = strawberry.field(description="Pass as `after` for the next page.")


@strawberry.input(description="Pair an external record with a chosen customer.")
class PairInput:
    """One pairing."""

    external_id: str = strawberry.field(description="An unpaired external record.")
    customer_id: strawberry.ID = strawberry.field(
        description="A customer with no pair in this source."
    )


@strawberry.input(description="Settle a conflict by keeping one side.")
class ConflictResolutionInput:
    """One resolution."""

    external_id: str = strawberry.field(description="The conflicting pair's external id.")
    keep: SyncSide = strawberry.field(description="The side whose values stay.")
    fields: list[str] | None = strawberry.field(
        default=None,
        description="Only these fields (API names); omitted: every conflicting field.",
    )


@strawberry.type(description="One item of an action that was not done, and why.")
class SyncItemRefusal:
    """A refused item (the others were done)."""

    external_id: str = strawberry.field(description="The item's external id.")
    code: str = strawberry.field(
        description="NOT_FOUND, NOT_PAIRABLE, ALREADY_LINKED, NOT_LINKED, NOT_A_CONFLICT,"
        " NOT_DELETED, VALIDATION_FAILED or EMAIL_TAKEN."
    )
    message: str = strawberry.field(description="Why, for people.")


@strawberry.type(description="What an action did: the pairs it changed and the items it refused.")
class SyncActionResult:
    """Result of a window action (one transaction; refused items changed nothing)."""

    pairs: list[SyncPair] = strawberry.field(description="The changed pairs as they are now.")
    new_local_customer_ids: list[strawberry.ID] = strawberry.field(
        description="Customers the action left unpaired (they show as NEW_LOCAL)."
    )
    refused: list[SyncItemRefusal] = strawberry.field(description="Items not done, and why.")


SyncActionPayload = Annotated[
    SyncActionResult | NotFound | Forbidden,
    strawberry.union(
        "SyncActionPayload", description="The action's result, or why it was refused."
    ),
]


@strawberry.type(description="A re-comparison of a source against its last import.")
class SyncRefreshResult:
    """What a refresh did."""

    applied_to_local: int = strawberry.field(description="Customers written.")
    counts: list[SyncCategoryCount] = strawberry.field(description="The categories afterwards.")


SyncRefreshPayload = Annotated[
    SyncRefreshResult | ValidationError | NotFound | Forbidden,
    strawberry.union("SyncRefreshPayload", description="The refresh, or why it was refused."),
]
