"""Devices (one per app install), their customer selection, push receipts and conflicts."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKeyConstraint,
    Index,
    PrimaryKeyConstraint,
    Table,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from db.tables.base import metadata, org_column

devices = Table(
    "devices",
    metadata,
    org_column(),
    Column("id", Uuid, nullable=False),
    Column("user_id", Uuid, nullable=False),
    # Fresh random id per registration, never reused: the device's replica in version vectors.
    Column("replica_id", Text, nullable=False),
    Column("name", Text, nullable=False, server_default=text("''")),
    Column("platform", Text, nullable=False, server_default=text("''")),
    Column("app_version", Text, nullable=False, server_default=text("''")),
    Column("offline_mode", Text, nullable=False, server_default=text("'AUTOMATIC'")),
    # {"CUSTOMER": seconds, ...}: the auto-sync interval the phone reports per data type.
    Column("auto_sync", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("selection_mode", Text, nullable=False, server_default=text("'ALL'")),
    # Seq at which the current selection mode began: ALL backfills every customer, SELECTED
    # evicts every unselected one, for pulls from before it.
    Column("mode_since_seq", BigInteger, nullable=False, server_default=text("0")),
    # Seq of the last switch from ALL to SELECTED (migration 0012): pulls from before it
    # evict the customers not chosen then, even once the device is back in ALL mode.
    Column("selected_since_seq", BigInteger, nullable=False, server_default=text("0")),
    # Where the slowest of the device's feeds stands: the least of ``feed_positions``.
    Column("checkpoint_seq", BigInteger, nullable=False, server_default=text("0")),
    # {"asset": seq, ...} (migration 0012): per record type, where the device's last pull of
    # a feed with that type ended (its start while the pull is under way). Feeds of other
    # types run concurrently; each merges only its own keys.
    Column("feed_positions", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("head_at_last_pull", BigInteger, nullable=False, server_default=text("0")),
    # Highest change counter seen from this replica; a push below it went backwards.
    Column("max_counter", BigInteger, nullable=False, server_default=text("0")),
    Column("pending_changes", BigInteger, nullable=False, server_default=text("0")),
    Column("last_pull_at", DateTime(timezone=True), nullable=True),
    Column("last_push_at", DateTime(timezone=True), nullable=True),
    # {"CUSTOMER": iso time, ...}: when each data type last synced fully.
    Column("last_synced", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Who settles a field changed on both sides (migration 0011): SERVER applies the
    # tenant's policy (MANUAL stores a conflict for a person), CLIENT gets every conflict
    # back in the push result and pushes its own decision.
    Column("conflict_resolver", Text, nullable=False, server_default=text("'SERVER'")),
    PrimaryKeyConstraint("org_id", "id"),
    ForeignKeyConstraint(["org_id", "user_id"], ["users.org_id", "users.id"], ondelete="CASCADE"),
    CheckConstraint("conflict_resolver IN ('SERVER', 'CLIENT')", name="conflict_resolver"),
)
Index("uq_devices_replica", devices.c.replica_id, unique=True)
Index("ix_devices_org_user", devices.c.org_id, devices.c.user_id)
# Live delivery reads the devices whose mode changed within a seq window (migration 0013).
Index("ix_devices_org_mode_since", devices.c.org_id, devices.c.mode_since_seq)

device_customers = Table(
    "device_customers",
    metadata,
    org_column(),
    Column("device_id", Uuid, nullable=False),
    Column("customer_id", Uuid, nullable=False),
    Column("selected", Boolean, nullable=False),
    # Seq allocated when the selection changed: pulls from before it get the customer whole
    # (selected) or an eviction (unselected).
    Column("changed_seq", BigInteger, nullable=False),
    # Seq at which the device last unselected it in SELECTED mode (migration 0012; 0:
    # never): a pull from before it evicts the customer first even if it was selected again.
    Column("left_seq", BigInteger, nullable=False, server_default=text("0")),
    PrimaryKeyConstraint("org_id", "device_id", "customer_id"),
    ForeignKeyConstraint(
        ["org_id", "device_id"], ["devices.org_id", "devices.id"], ondelete="CASCADE"
    ),
)

# Live delivery reads the selections changed within a seq window (migration 0013).
Index(
    "ix_device_customers_org_changed",
    device_customers.c.org_id,
    device_customers.c.changed_seq,
)

push_receipts = Table(
    "push_receipts",
    metadata,
    org_column(),
    Column("device_id", Uuid, nullable=False),
    Column("client_mutation_id", Text, nullable=False),
    Column("request_hash", Text, nullable=False),
    # The change's counter (migration 0010; null on older receipts): a counter carried by
    # two changes means a second install pushes under one replica id.
    Column("counter", BigInteger, nullable=True),
    Column("outcome", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("org_id", "device_id", "client_mutation_id"),
    ForeignKeyConstraint(
        ["org_id", "device_id"], ["devices.org_id", "devices.id"], ondelete="CASCADE"
    ),
)

Index(
    "ix_push_receipts_device_counter",
    push_receipts.c.org_id,
    push_receipts.c.device_id,
    push_receipts.c.counter,
)

sync_conflicts = Table(
    "sync_conflicts",
    metadata,
    org_column(),
    Column("id", Uuid, nullable=False),
    Column("device_id", Uuid, nullable=True),
    Column("user_id", Uuid, nullable=False),
    Column("entity", Text, nullable=False),
    Column("record_id", Uuid, nullable=False),
    Column("customer_id", Uuid, nullable=False),
    Column("op", Text, nullable=False),
    Column("base_version", JSONB, nullable=False),
    Column("server_version", JSONB, nullable=False),
    # The client's whole patch, and per conflicting field both values.
    Column("client_patch", JSONB, nullable=False),
    Column("fields", JSONB, nullable=False),
    Column("status", Text, nullable=False, server_default=text("'OPEN'")),
    Column("resolution", Text, nullable=True),
    Column("resolved_by", Uuid, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("resolved_at", DateTime(timezone=True), nullable=True),
    PrimaryKeyConstraint("org_id", "id"),
)
Index("ix_sync_conflicts_org_status", sync_conflicts.c.org_id, sync_conflicts.c.status)
Index("ix_sync_conflicts_org_device", sync_conflicts.c.org_id, sync_conflicts.c.device_id)
