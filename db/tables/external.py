"""The external-system sync window: sources, their records and links, imports, audit.

A *source* is one connected external system (an accounting package, an ERP) with a field
mapping. Each of its customers is one ``external_records`` row, which also holds the link
to a local customer (an external record is paired with at most one customer and a customer
with at most one record per source), the values last synced between both sides and the
pair's current category. Imports are batches; every admin action leaves an audit entry.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKeyConstraint,
    Index,
    Integer,
    PrimaryKeyConstraint,
    Table,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from db.tables.base import metadata, org_column

external_sources = Table(
    "external_sources",
    metadata,
    org_column(),
    Column("id", Uuid, nullable=False),
    Column("name", Text, nullable=False),
    Column("kind", Text, nullable=False),
    # sync.window.Direction
    Column("direction", Text, nullable=False),
    # [[column, target], ...] in file order (the export writes the columns in this order).
    Column("mapping", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("org_id", "id"),
    ForeignKeyConstraint(["org_id"], ["orgs.org_id"], ondelete="CASCADE"),
)
Index(
    "uq_external_sources_org_name",
    external_sources.c.org_id,
    func.lower(external_sources.c.name),
    unique=True,
)

external_records = Table(
    "external_records",
    metadata,
    org_column(),
    Column("source_id", Uuid, nullable=False),
    Column("external_id", Text, nullable=False),
    # Mapped values as last imported, by stored field name.
    Column("values", JSONB, nullable=False),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    # Absent from the latest import: gone from the external system.
    Column("deleted", Boolean, nullable=False, server_default=text("false")),
    Column("line", Integer, nullable=False, server_default=text("0")),
    Column("last_batch_id", Uuid, nullable=True),
    # The link: NULL while unpaired. No foreign key: customers are tombstoned, and a
    # compacted tombstone must read as "deleted locally", not cascade.
    Column("customer_id", Uuid, nullable=True),
    # Values both sides had at the last sync; NULL for a fresh pair (no baseline yet).
    Column("synced", JSONB, nullable=True),
    Column("sync_active", Boolean, nullable=False, server_default=text("true")),
    # False once an admin unlinks the pair: later imports must not pair it again by email.
    Column("auto_match", Boolean, nullable=False, server_default=text("true")),
    Column("linked_at", DateTime(timezone=True), nullable=True),
    # sync.window.Category as of the last import or action; NULL hides the record.
    Column("category", Text, nullable=True),
    # {field: [local, external]} of the fields changed on both sides.
    Column("conflicts", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    # Fields whose local value waits for the export.
    Column("pending", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("org_id", "source_id", "external_id"),
    ForeignKeyConstraint(
        ["org_id", "source_id"],
        ["external_sources.org_id", "external_sources.id"],
        ondelete="CASCADE",
    ),
)
Index(
    "uq_external_records_org_source_customer",
    external_records.c.org_id,
    external_records.c.source_id,
    external_records.c.customer_id,
    unique=True,
    postgresql_where=external_records.c.customer_id.isnot(None),
)
# A window page: one category of one source in external id order.
Index(
    "ix_external_records_org_source_category",
    external_records.c.org_id,
    external_records.c.source_id,
    external_records.c.category,
    external_records.c.external_id,
)

external_import_batches = Table(
    "external_import_batches",
    metadata,
    org_column(),
    Column("id", Uuid, nullable=False),
    Column("source_id", Uuid, nullable=False),
    # APPLIED or REFUSED
    Column("status", Text, nullable=False),
    Column("file_name", Text, nullable=True),
    Column("file_format", Text, nullable=False),
    Column("file_sha256", Text, nullable=False),
    Column("byte_size", Integer, nullable=False),
    Column("counts", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    # [{line, column, reason}] of a refused import.
    Column("errors", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("actor_id", Uuid, nullable=True),
    Column("actor", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("org_id", "id"),
    ForeignKeyConstraint(
        ["org_id", "source_id"],
        ["external_sources.org_id", "external_sources.id"],
        ondelete="CASCADE",
    ),
)
Index(
    "ix_external_import_batches_org_source_created",
    external_import_batches.c.org_id,
    external_import_batches.c.source_id,
    external_import_batches.c.created_at,
)

external_audit = Table(
    "external_audit",
    metadata,
    org_column(),
    Column("id", Uuid, nullable=False),
    Column("source_id", Uuid, nullable=False),
    Column("external_id", Text, nullable=True),
    Column("customer_id", Uuid, nullable=True),
    Column("action", Text, nullable=False),
    # Who: the user (NULL for the command line) and a readable name.
    Column("actor_id", Uuid, nullable=True),
    Column("actor", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # What: fields and values, the batch, the customer written.
    Column("details", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    PrimaryKeyConstraint("org_id", "id"),
    ForeignKeyConstraint(
        ["org_id", "source_id"],
        ["external_sources.org_id", "external_sources.id"],
        ondelete="CASCADE",
    ),
)
Index(
    "ix_external_audit_org_source_external",
    external_audit.c.org_id,
    external_audit.c.source_id,
    external_audit.c.external_id,
    external_audit.c.at,
)
Index(
    "ix_external_audit_org_source_customer",
    external_audit.c.org_id,
    external_audit.c.source_id,
    external_audit.c.customer_id,
    external_audit.c.at,
)
