"""Sync API types: devices, pull, push, conflicts, sync state (DESIGN.md section 5)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated

import strawberry

from schema.assets import AssetFields
from schema.contacts import ContactFields
from schema.customers import UpdateCustomerInput
from schema.errors import FieldConflict, FieldError, Forbidden, NotFound, ValidationError
from schema.facilities import FacilityFields
from schema.input_plans import convert_by_plan
from schema.node import Node
from schema.scalars import JSON, VersionVector


@strawberry.enum(description="How the phone decides when to talk to the server.")
class OfflineMode(enum.Enum):
    """Offline modes a device reports."""

    AUTOMATIC = "AUTOMATIC"
    ALWAYS_ONLINE = "ALWAYS_ONLINE"
    ALWAYS_OFFLINE = "ALWAYS_OFFLINE"


@strawberry.enum(description="Which customers a device syncs.")
class SelectionMode(enum.Enum):
    """All customers, or the ones the technician picked."""

    ALL = "ALL"
    SELECTED = "SELECTED"


@strawberry.enum(
    description="Record types that sync to devices (also the data types of auto-sync)."
)
class SyncEntity(enum.Enum):
    """Synced record types."""

    CUSTOMER = "customer"
    CONTACT = "contact"
    FACILITY = "facility"
    ASSET = "asset"
    CREDENTIAL = "credential"


@strawberry.enum(description="A write or a delete.")
class ChangeOp(enum.Enum):
    """Change operations."""

    UPSERT = "UPSERT"
    DELETE = "DELETE"


@strawberry.enum(description="What happened to one pushed change.")
class ChangeOutcome(enum.Enum):
    """Per-change outcomes (see docs/sync-protocol.md)."""

    APPLIED = "APPLIED"
    MERGED = "MERGED"
    CONFLICT = "CONFLICT"
    DELETED = "DELETED"
    VALIDATION_FAILED = "VALIDATION_FAILED"
    FORBIDDEN = "FORBIDDEN"


@strawberry.enum(description="How a field changed on both sides is settled, per record type.")
class ConflictPolicy(enum.Enum):
    """Tenant conflict policies."""

    SERVER_WINS = "SERVER_WINS"
    CLIENT_WINS = "CLIENT_WINS"
    MANUAL = "MANUAL"


@strawberry.enum(description="How a user settles a stored conflict.")
class ConflictResolution(enum.Enum):
    """Resolutions."""

    KEEP_SERVER = "KEEP_SERVER"
    KEEP_CLIENT = "KEEP_CLIENT"
    MERGE = "MERGE"


@strawberry.enum(description="What a device's sync icon shows; SYNCED only when true.")
class SyncStatus(enum.Enum):
    """Device sync status."""

    SYNCED = "SYNCED"
    BEHIND = "BEHIND"
    CONFLICTS = "CONFLICTS"
    NEVER_SYNCED = "NEVER_SYNCED"
    STALE = "STALE"


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

    status: SyncStatus = strawberry.field(description="What the icon shows.")
    checkpoint: str | None = strawberry.field(
        description="Where the device's last complete pull ended."
    )
    head_checkpoint: str = strawberry.field(
        description="The newest position of the tenant's changes."
    )
    lag: int = strawberry.field(
        description="Changes (seqs) between the device's checkpoint and the head."
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


@strawberry.type(description="One record change in a pull.")
class Change:
    """A record's current state (or its tombstone)."""

    entity: SyncEntity = strawberry.field(description="Record type.")
    id: strawberry.ID = strawberry.field(description="Record id (uuid).")
    customer_id: strawberry.ID = strawberry.field(description="Customer the record belongs to.")
    op: ChangeOp = strawberry.field(description="UPSERT: store `data`; DELETE: drop the record.")
    version: VersionVector = strawberry.field(description="The record's version; edit from it.")
    data: JSON | None = strawberry.field(
        description="All fields, as the patch inputs name them (null for DELETE)."
    )


@strawberry.type(description="A page of changes for a device.")
class PullResult:
    """Pull page."""

    changes: list[Change] = strawberry.field(description="In seq order.")
    checkpoint: str = strawberry.field(description="Send as `since` next time (opaque).")
    has_more: bool = strawberry.field(description="Pull again right away with `checkpoint`.")
    evicted_customer_ids: list[strawberry.ID] = strawberry.field(
        description="Customers to drop from the device (unselected or archived)."
    )
    resync_required: bool = strawberry.field(
        description="The checkpoint is older than the tombstone horizon:"
        " drop local data and pull from null."
    )


@strawberry.input(description="Customer fields changed offline (create: include a name).")
class CustomerPatch(UpdateCustomerInput):
    """Customer patch."""


@strawberry.input(description="Contact fields changed offline; `customerId` only on create.")
class ContactPatch(ContactFields):
    """Contact patch."""

    customer_id: strawberry.ID | None = strawberry.field(
        default=None, description="Customer (create only)."
    )


@strawberry.input(description="Facility fields changed offline; `customerId` only on create.")
class FacilityPatch(FacilityFields):
    """Facility patch."""

    customer_id: strawberry.ID | None = strawberry.field(
        default=None, description="Customer (create only)."
    )


@strawberry.input(description="Asset fields changed offline; `facilityId` only on create.")
class AssetPatch(AssetFields):
    """Asset patch."""

    facility_id: strawberry.ID | None = strawberry.field(
        default=None, description="Facility (create only)."
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
    id: strawberry.ID = strawberry.field(
        description="Record id (uuid; the device makes one for a create)."
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


# A push carries up to 1,000 of these: build them without per-value type resolution.
convert_by_plan(ChangeInput)


@strawberry.type(description="The outcome of one pushed change.")
class ChangeResult:
    """Per-change result."""

    client_mutation_id: str = strawberry.field(description="As sent.")
    entity: SyncEntity = strawberry.field(description="Record type.")
    id: strawberry.ID = strawberry.field(description="Record id.")
    outcome: ChangeOutcome = strawberry.field(description="What happened.")
    version: VersionVector | None = strawberry.field(description="The record's version afterwards.")
    conflict_id: strawberry.ID | None = strawberry.field(
        description="Stored conflict (MANUAL policy)."
    )
    conflicts: list[FieldConflict] = strawberry.field(description="Fields changed on both sides.")
    field_errors: list[FieldError] = strawberry.field(description="Why validation failed.")
    message: str = strawberry.field(description="For people.")
    replayed: bool = strawberry.field(
        description="A replay of an earlier push: nothing was applied now."
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
    status: str = strawberry.field(description="OPEN or RESOLVED.")
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
