"""Sync API types: devices, pull, push, conflicts, sync state (DESIGN.md section 5)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated
from uuid import UUID

import strawberry

from db.entities import EntityType
from schema.assets import AssetFields
from schema.contacts import ContactFields
from schema.customers import UpdateCustomerInput
from schema.encoding import Nested, ObjectSpec
from schema.errors import (
    FIELD_CONFLICT,
    FIELD_ERROR,
    FieldConflict,
    FieldError,
    Forbidden,
    NotFound,
    ValidationError,
)
from schema.facilities import FacilityFields
from schema.input_plans import convert_by_plan
from schema.node import Node, to_global_id
from schema.scalars import JSON, VersionVector


@strawberry.enum(description="How the phone decides when to talk to the server.")
class OfflineMode(enum.Enum):
    """Offline modes a device reports."""

    _value_: str  # for mypy: `.value` is the string, not the enum_value()

    AUTOMATIC = strawberry.enum_value(
        "AUTOMATIC",
        description="The app decides by itself when to work online or offline (the default).",
    )
    ALWAYS_ONLINE = strawberry.enum_value(
        "ALWAYS_ONLINE", description="The app is set to stay online."
    )
    ALWAYS_OFFLINE = strawberry.enum_value(
        "ALWAYS_OFFLINE", description="The app is set to work offline."
    )


@strawberry.enum(description="Which customers a device syncs.")
class SelectionMode(enum.Enum):
    """All customers, or the ones the technician picked."""

    _value_: str  # for mypy: `.value` is the string, not the enum_value()

    ALL = strawberry.enum_value("ALL", description="Every customer the user may see.")
    SELECTED = strawberry.enum_value(
        "SELECTED",
        description="Only the chosen customers (needs the 'sync by customer' capability).",
    )


@strawberry.enum(
    description="Record types that sync to devices (also the data types of auto-sync)."
)
class SyncEntity(enum.Enum):
    """Synced record types."""

    _value_: str  # for mypy: `.value` is the string, not the enum_value()

    CUSTOMER = strawberry.enum_value("customer", description="Customers.")
    CONTACT = strawberry.enum_value("contact", description="Contacts.")
    FACILITY = strawberry.enum_value("facility", description="Facilities.")
    ASSET = strawberry.enum_value("asset", description="Assets.")
    CREDENTIAL = strawberry.enum_value("credential", description="Credentials (without passwords).")


@strawberry.enum(description="A write or a delete.")
class ChangeOp(enum.Enum):
    """Change operations."""

    _value_: str  # for mypy: `.value` is the string, not the enum_value()

    UPSERT = strawberry.enum_value(
        "UPSERT", description="Create the record, or change the fields in `patch`."
    )
    DELETE = strawberry.enum_value("DELETE", description="Delete the record.")


@strawberry.enum(
    description="What a pulled change asks the device to do with its copy of the record."
)
class PullOp(enum.Enum):
    """Operations of pulled changes: a device's own changes are only UPSERT or DELETE."""

    UPSERT = strawberry.enum_value("UPSERT", description="Store `data` and `version`.")
    DELETE = strawberry.enum_value(
        "DELETE", description="The record was deleted: drop it (a tombstone)."
    )
    EVICT = strawberry.enum_value(
        "EVICT",
        description="The record left the device's view (its customer was unselected or"
        " archived): drop the local copy; the record still exists.",
    )


@strawberry.enum(description="What happened to one pushed change.")
class ChangeOutcome(enum.Enum):
    """Per-change outcomes (see docs/sync-protocol.md)."""

    _value_: str  # for mypy: `.value` is the string, not the enum_value()

    APPLIED = strawberry.enum_value(
        "APPLIED", description="Written as sent; `record` is the new record."
    )
    MERGED = strawberry.enum_value(
        "MERGED",
        description="Written, and others' changes to other fields (or a policy-settled conflict)"
        " kept; `record` is the merged record.",
    )
    CONFLICT = strawberry.enum_value(
        "CONFLICT",
        description="Some fields were changed on both sides and wait (see `conflicts`); the others"
        " were written.",
    )
    DELETED = strawberry.enum_value(
        "DELETED",
        description="The record was deleted meanwhile; `record` is its tombstone (or null): drop"
        " it.",
    )
    VALIDATION_FAILED = strawberry.enum_value(
        "VALIDATION_FAILED",
        description="Refused: a value or rule is invalid (see `fieldErrors`); fix it and push a"
        " new change.",
    )
    FORBIDDEN = strawberry.enum_value(
        "FORBIDDEN",
        description="Refused: the user's role may not write, or the record's customer is archived.",
    )
    NOT_TRIED = strawberry.enum_value(
        "NOT_TRIED",
        description="Not decided: too many changes of this push were refused by the database."
        " No receipt is kept and the counter is unused: push the change again as it is.",
    )


@strawberry.enum(
    description="Who settles a field changed on both sides for a device: SERVER applies the"
    " tenant's conflict policy (MANUAL stores a SyncConflict for a person); CLIENT gets every"
    " conflict back in the push result, with the record, and pushes its own decision."
)
class ConflictResolver(enum.Enum):
    """Per-device conflict resolver."""

    _value_: str  # for mypy: `.value` is the string, not the enum_value()

    SERVER = strawberry.enum_value(
        "SERVER", description="The tenant's conflict policy settles conflicts (the default)."
    )
    CLIENT = strawberry.enum_value(
        "CLIENT", description="The device gets every conflict back and pushes its own decision."
    )


@strawberry.enum(description="How a field changed on both sides is settled, per record type.")
class ConflictPolicy(enum.Enum):
    """Tenant conflict policies."""

    _value_: str  # for mypy: `.value` is the string, not the enum_value()

    SERVER_WINS = strawberry.enum_value(
        "SERVER_WINS",
        description="Keep the server's value; settled at once (the push reports MERGED).",
    )
    CLIENT_WINS = strawberry.enum_value(
        "CLIENT_WINS",
        description="Write the device's value; settled at once (the push reports MERGED).",
    )
    MANUAL = strawberry.enum_value(
        "MANUAL",
        description="Store a SyncConflict for a person to settle (the default); the push reports"
        " CONFLICT.",
    )


@strawberry.enum(
    description="How a stored conflict is settled: KEEP_SERVER, KEEP_CLIENT, or MERGE (the"
    " given values; also how a conflict reads once a change naming it in"
    " `resolvesConflictId` was accepted)."
)
class ConflictResolution(enum.Enum):
    """Resolutions."""

    _value_: str  # for mypy: `.value` is the string, not the enum_value()

    KEEP_SERVER = strawberry.enum_value(
        "KEEP_SERVER", description="Keep the server's values of the conflicting fields."
    )
    KEEP_CLIENT = strawberry.enum_value(
        "KEEP_CLIENT", description="Write the device's values of the conflicting fields."
    )
    MERGE = strawberry.enum_value(
        "MERGE", description="Write the given `values` (the device's for fields not given)."
    )


@strawberry.enum(description="What a device's sync icon shows; SYNCED only when true.")
class SyncStatus(enum.Enum):
    """Device sync status."""

    _value_: str  # for mypy: `.value` is the string, not the enum_value()

    SYNCED = strawberry.enum_value(
        "SYNCED", description="Has every change and nothing of its own waits."
    )
    BEHIND = strawberry.enum_value(
        "BEHIND", description="Changes wait to be pulled, or its own edits wait to be pushed."
    )
    CONFLICTS = strawberry.enum_value(
        "CONFLICTS", description="At least one of its conflicts is open."
    )
    NEVER_SYNCED = strawberry.enum_value("NEVER_SYNCED", description="Has never pulled.")
    STALE = strawberry.enum_value(
        "STALE",
        description="Has not pulled for two of its longest auto-sync intervals (at least an hour),"
        " or a day if it reported none.",
    )


@strawberry.type(description="An auto-sync interval the phone uses for one data type.")
class AutoSyncInterval:
    """Interval per data type."""

    data_type: SyncEntity = strawberry.field(description="Data type.")
    seconds: int = strawberry.field(description="Seconds between automatic syncs.")


@strawberry.input(description="An auto-sync interval for one data type.")
class AutoSyncIntervalInput:
    """Interval per data type."""

    data_type: SyncEntity = strawberry.field(description="Data type.")
    seconds: int = strawberry.field(description="Seconds between automatic syncs (60 or more).")


@strawberry.type(description="When one data type last synced completely.")
class DataTypeSync:
    """Last full sync per data type."""

    data_type: SyncEntity = strawberry.field(description="Data type.")
    at: datetime = strawberry.field(description="When.")


@strawberry.type(description="The truth about one device's sync.")
class DeviceSyncState:
    """Status and the facts behind it."""

    id: strawberry.ID = strawberry.field(
        description="This state's own id (one per device): normalised caches keep the newest."
    )
    device_id: strawberry.ID = strawberry.field(description="The device it describes.")
    status: SyncStatus = strawberry.field(description="What the icon shows.")
    checkpoint: str | None = strawberry.field(
        description="Where the device's slowest feed stands (the least, over the record types"
        " it pulls, of where its last pull of that type ended), as a checkpoint of the"
        " all-types feed."
    )
    head_checkpoint: str = strawberry.field(
        description="The newest position of the tenant's changes."
    )
    lag: int = strawberry.field(
        description="Changes (seqs) between the device's checkpoint (its slowest feed) and the"
        " head."
    )
    pending_changes: int = strawberry.field(description="Unpushed edits the device last reported.")
    open_conflicts: int = strawberry.field(description="Conflicts waiting for a decision.")
    last_pull_at: datetime | None = strawberry.field(description="Last pull.")
    last_push_at: datetime | None = strawberry.field(description="Last push.")
    last_synced_at: list[DataTypeSync] = strawberry.field(
        description="Last complete sync per data type."
    )


@strawberry.type(description="A registered app install; its replica id is never reused.")
class Device(Node):
    """A technician's device."""

    replica_id: str = strawberry.field(description="The device's id in version vectors.")
    name: str = strawberry.field(description="Name the user gave the device.")
    platform: str = strawberry.field(description="iOS, Android, ...")
    app_version: str = strawberry.field(description="App version.")
    offline_mode: OfflineMode = strawberry.field(description="Offline mode the phone reports.")
    auto_sync: list[AutoSyncInterval] = strawberry.field(description="Auto-sync intervals.")
    selection_mode: SelectionMode = strawberry.field(description="ALL or SELECTED customers.")
    selected_customer_ids: list[strawberry.ID] = strawberry.field(
        description="Record ids of the selected customers (SELECTED mode)."
    )
    user_email: str = strawberry.field(description="Owner of the device.")
    created_at: datetime = strawberry.field(description="When it was registered.")
    sync_state: DeviceSyncState = strawberry.field(description="Its sync state now.")
    resolves_conflicts: ConflictResolver = strawberry.field(
        description="Who settles this device's conflicts: SERVER (the tenant's policy) or"
        " CLIENT (the app, from the push result)."
    )


@strawberry.input(description="A new device.")
class RegisterDeviceInput:
    """Device facts the phone knows."""

    name: str = strawberry.field(default="", description="Name shown to admins.")
    platform: str = strawberry.field(default="", description="iOS, Android, ...")
    app_version: str = strawberry.field(default="", description="App version.")
    offline_mode: OfflineMode = strawberry.field(
        default=OfflineMode.AUTOMATIC, description="Offline mode."
    )
    auto_sync: list[AutoSyncIntervalInput] = strawberry.field(
        default_factory=list, description="Auto-sync intervals per data type."
    )
    resolves_conflicts: ConflictResolver = strawberry.field(
        default=ConflictResolver.SERVER,
        description="Who settles this device's conflicts; SERVER unless the app resolves"
        " them itself (CLIENT).",
    )


@strawberry.input(
    description="What the phone reports about itself; omitted fields keep their values."
)
class ReportDeviceInput:
    """Device report."""

    offline_mode: OfflineMode | None = strawberry.field(
        default=strawberry.UNSET, description="Offline mode."
    )
    auto_sync: list[AutoSyncIntervalInput] | None = strawberry.field(
        default=strawberry.UNSET, description="Auto-sync intervals (replaces the list)."
    )
    pending_changes: int | None = strawberry.field(
        default=strawberry.UNSET, description="Edits waiting in the phone's outbox."
    )
    app_version: str | None = strawberry.field(default=strawberry.UNSET, description="App version.")
    resolves_conflicts: ConflictResolver | None = strawberry.field(
        default=strawberry.UNSET,
        description="Who settles this device's conflicts from now on (conflicts already"
        " stored stay open until resolved).",
    )


@strawberry.type(description="One record change in a pull.")
class Change:
    """A record's current state (or its tombstone)."""

    entity: SyncEntity = strawberry.field(description="Record type.")
    record_id: strawberry.ID = strawberry.field(
        description="The record's id (a uuid; `node` and the read API accept it too)."
    )
    customer_id: strawberry.ID = strawberry.field(description="Customer the record belongs to.")
    op: PullOp = strawberry.field(
        description="UPSERT: store `data`; DELETE: drop the record; EVICT: drop the local"
        " copy (the record still exists)."
    )
    version: VersionVector = strawberry.field(description="The record's version; edit from it.")
    data: JSON | None = strawberry.field(
        description="The record in its sync shape: every field, explicitly (all seven settings,"
        " every address key, custom fields as a map of the set ones), named and shaped as the"
        " patch inputs take them, so it goes back whole or in part as a patch (null for DELETE"
        " and EVICT)."
    )


# A Change from a pulled change (``db.pull.PulledChange``): pull pages, live batches and
# push outcomes' records.
CHANGE = ObjectSpec(
    name="Change",
    fields={
        "entity": "NAMES[v.entity]",
        "recordId": "str(v.record_id)",
        "customerId": "str(v.customer_id)",
        "op": "'EVICT' if v.evict else 'DELETE' if v.deleted else 'UPSERT'",
        "version": "v.version",
        "data": "None if v.deleted else v.data",
    },
    names={"NAMES": {entity: entity.name for entity in EntityType}},
)


@strawberry.type(description="A page of one feed's changes for a device.")
class PullResult:
    """Pull page."""

    changes: list[Change] = strawberry.field(
        description="In seq order; a customer that left and came back arrives as EVICTs"
        " first, then whole."
    )
    checkpoint: str = strawberry.field(
        description="Send as `since` next time, with the same `types` (opaque; it always"
        " advances, to the head on the last page)."
    )
    has_more: bool = strawberry.field(description="Pull again right away with `checkpoint`.")
    reset: bool = strawberry.field(
        description="The feed started over (your checkpoint was older than the tombstone"
        " horizon): drop every local record of the feed's types, then apply this page."
    )


# A patch is named and shaped as `Change.data` (sync/record_shape.py): a pulled record's
# data, whole or any part of it, is a valid patch. So custom fields are the map data holds,
# not the online inputs' list of {key, value}: each patch redefines the field its online
# base declares as that list (a narrower type mypy cannot see replaced), and the conversion
# (schema.custom_fields.set_custom_fields) takes either form.
CUSTOM_FIELDS_PATCH = (
    "Custom field values by key, as `data` holds them, merged into the record's: a null value"
    " clears its key; an empty map (or null) changes nothing. Each value is one scalar."
)
STAYS_PUT = " On an update it must be the record's own: records cannot move."


@strawberry.input(
    description="Customer fields changed offline, named and shaped as in `Change.data`"
    " (create: include a name)."
)
class CustomerPatch(UpdateCustomerInput):
    """Customer patch."""

    custom_fields: JSON | None = strawberry.field(  # type: ignore[assignment]  # see above
        default=strawberry.UNSET, description=CUSTOM_FIELDS_PATCH
    )


@strawberry.input(
    description="Contact fields changed offline, named and shaped as in `Change.data`."
)
class ContactPatch(ContactFields):
    """Contact patch."""

    custom_fields: JSON | None = strawberry.field(  # type: ignore[assignment]  # see above
        default=strawberry.UNSET, description=CUSTOM_FIELDS_PATCH
    )
    customer_id: strawberry.ID | None = strawberry.field(
        default=None, description="The contact's customer (uuid): required on create." + STAYS_PUT
    )


@strawberry.input(
    description="Facility fields changed offline, named and shaped as in `Change.data`."
)
class FacilityPatch(FacilityFields):
    """Facility patch."""

    custom_fields: JSON | None = strawberry.field(  # type: ignore[assignment]  # see above
        default=strawberry.UNSET, description=CUSTOM_FIELDS_PATCH
    )
    customer_id: strawberry.ID | None = strawberry.field(
        default=None, description="The facility's customer (uuid): required on create." + STAYS_PUT
    )


@strawberry.input(description="Asset fields changed offline, named and shaped as in `Change.data`.")
class AssetPatch(AssetFields):
    """Asset patch."""

    custom_fields: JSON | None = strawberry.field(  # type: ignore[assignment]  # see above
        default=strawberry.UNSET, description=CUSTOM_FIELDS_PATCH
    )
    customer_id: strawberry.ID | None = strawberry.field(
        default=None,
        description="The asset's customer (uuid), optional: it is always its facility's, and a"
        " given one must be that." + STAYS_PUT,
    )
    facility_id: strawberry.ID | None = strawberry.field(
        default=None, description="The asset's facility (uuid): required on create." + STAYS_PUT
    )


@strawberry.input(one_of=True, description="Exactly one entity's patch (empty for a DELETE).")
class RecordPatch:
    """Typed patch per entity."""

    customer: CustomerPatch | None = strawberry.field(
        default=strawberry.UNSET, description="A customer change."
    )
    contact: ContactPatch | None = strawberry.field(
        default=strawberry.UNSET, description="A contact change."
    )
    facility: FacilityPatch | None = strawberry.field(
        default=strawberry.UNSET, description="A facility change."
    )
    asset: AssetPatch | None = strawberry.field(
        default=strawberry.UNSET, description="A asset change."
    )


@strawberry.input(description="One offline change.")
class ChangeInput:
    """A change from the outbox."""

    client_mutation_id: str = strawberry.field(
        description="Idempotency key: a replay returns the first outcome."
    )
    record_id: strawberry.ID = strawberry.field(
        description="The record's id (a uuid; the device makes one for a create)."
    )
    op: ChangeOp = strawberry.field(description="UPSERT or DELETE.")
    base_version: VersionVector | None = strawberry.field(
        default=None, description="The version the device edited from; null for a create."
    )
    counter: int = strawberry.field(
        description="The device's change counter: strictly increasing, starting at 1, at most"
        " 1,048,576 above the previous one."
    )
    patch: RecordPatch = strawberry.field(description="Only the changed fields.")
    resolves_conflict_id: strawberry.ID | None = strawberry.field(
        default=None,
        description="The stored conflict this change settles (a SyncConflict id, or its"
        " uuid): one of this device about this record. Closed (RESOLVED, MERGE) when the"
        " change is APPLIED, MERGED or CONFLICT; any other id refuses the change"
        " (VALIDATION_FAILED on `resolvesConflictId`).",
    )


# A push carries up to 1,000 of these: build them without per-value type resolution.
convert_by_plan(ChangeInput)


@strawberry.type(description="The outcome of one pushed change.")
class ChangeResult:
    """Per-change result."""

    client_mutation_id: str = strawberry.field(description="As sent.")
    entity: SyncEntity = strawberry.field(description="Record type.")
    record_id: strawberry.ID = strawberry.field(description="The record's id, as sent.")
    outcome: ChangeOutcome = strawberry.field(description="What happened.")
    version: VersionVector | None = strawberry.field(description="The record's version afterwards.")
    conflict_id: strawberry.ID | None = strawberry.field(
        description="Stored conflict (MANUAL policy, SERVER resolver)."
    )
    record: Change | None = strawberry.field(
        description="The record as it stands after the push, exactly as a pull sends it"
        " (op DELETE: a tombstone). APPLIED, MERGED, CONFLICT: store it as pulled; DELETED:"
        " the tombstone; other outcomes and replays: the current record if this device may"
        " see it, else null. Null when the server holds no such record."
    )
    conflicts: list[FieldConflict] = strawberry.field(description="Fields changed on both sides.")
    field_errors: list[FieldError] = strawberry.field(description="Why validation failed.")
    message: str = strawberry.field(description="For people.")
    replayed: bool = strawberry.field(
        description="A replay of an earlier push: nothing was applied now."
    )


def _conflict_global_id(raw: str | None) -> str | None:
    return to_global_id("SyncConflict", UUID(raw)) if raw else None


# A ChangeResult from one stored outcome of a push (``db.push.ChangeResult``).
CHANGE_RESULT = ObjectSpec(
    name="ChangeResult",
    fields={
        "clientMutationId": "v.client_mutation_id",
        "entity": "v.entity.upper()",
        "recordId": "v.record_id",
        "outcome": "v.outcome",
        "version": "v.version",
        "conflictId": "conflict_id(v.conflict_id)",
        "conflicts": Nested("v.conflicts", FIELD_CONFLICT),
        "fieldErrors": Nested("list(v.field_errors.items())", FIELD_ERROR),
        "message": "v.message",
        "replayed": "v.replayed",
        # The record reads as a pull page's change.
        "record": Nested("v.record", CHANGE, many=False),
    },
    names={"conflict_id": _conflict_global_id},
)


@strawberry.type(description="Outcomes of a push, in input order.")
class PushResult:
    """Push outcomes."""

    results: list[ChangeResult] = strawberry.field(description="One per change.")
    reregister_required: bool = strawberry.field(
        description="A change reused a counter another change of this device already"
        " carried (an app restored from a backup): register the device again before pushing."
    )


@strawberry.type(description="A change that needs a person to decide, with both values per field.")
class SyncConflict(Node):
    """Stored conflict."""

    entity: SyncEntity = strawberry.field(description="Record type.")
    record_id: strawberry.ID = strawberry.field(description="Record id.")
    customer_id: strawberry.ID = strawberry.field(description="Customer of the record.")
    device_id: strawberry.ID | None = strawberry.field(description="Device that pushed it.")
    op: ChangeOp = strawberry.field(description="The device's operation.")
    base_version: VersionVector = strawberry.field(description="Version the device edited from.")
    server_version: VersionVector = strawberry.field(description="Server version at push time.")
    fields: list[FieldConflict] = strawberry.field(description="Each field changed on both sides.")
    client_patch: JSON = strawberry.field(description="The device's whole patch.")
    status: str = strawberry.field(
        description="OPEN or RESOLVED (by resolveConflict, or by an accepted change naming it)."
    )
    resolution: ConflictResolution | None = strawberry.field(description="How it was settled.")
    created_at: datetime = strawberry.field(description="When it was pushed.")
    resolved_at: datetime | None = strawberry.field(description="When it was settled.")


@strawberry.type(description="The tenant's conflict policy per record type.")
class ConflictPolicies:
    """Policies."""

    customer: ConflictPolicy = strawberry.field(description="Customers.")
    contact: ConflictPolicy = strawberry.field(description="Contacts.")
    facility: ConflictPolicy = strawberry.field(description="Facilities.")
    asset: ConflictPolicy = strawberry.field(description="Assets.")
    credential: ConflictPolicy = strawberry.field(description="Credentials.")


DeviceResult = Annotated[
    Device | NotFound | Forbidden | ValidationError,
    strawberry.union("DeviceResult", description="A device, or why the change was refused."),
]
PushChangesResult = Annotated[
    PushResult | NotFound | Forbidden | ValidationError,
    strawberry.union(
        "PushChangesResult", description="Per-change outcomes, or why the push was refused."
    ),
]
ResolveConflictResult = Annotated[
    SyncConflict | NotFound | Forbidden | ValidationError,
    strawberry.union("ResolveConflictResult", description="The settled conflict, or why not."),
]
PolicyResult = Annotated[
    ConflictPolicies | Forbidden,
    strawberry.union("PolicyResult", description="Policies, or Forbidden for non-admins."),
]


# The `deviceId` argument of the sync operations, described once.
DeviceId = Annotated[strawberry.ID, strawberry.argument(description="Your registered device.")]
