"""Custom field definitions per tenant and entity type."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKeyConstraint,
    Integer,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from db.tables.base import metadata, org_column

custom_field_definitions = Table(
    "custom_field_definitions",
    metadata,
    org_column(),
    Column("id", Uuid, nullable=False),
    Column("entity_type", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("label", Text, nullable=False),
    Column("field_type", Text, nullable=False),
    Column("required", Boolean, nullable=False, server_default=text("false")),
    # [{"value": str, "label": str, "badgeIcon": str | null}] for dropdowns.
    Column("options", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("position", Integer, nullable=False, server_default=text("0")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("org_id", "id"),
    UniqueConstraint("org_id", "entity_type", "key"),
    ForeignKeyConstraint(["org_id"], ["orgs.org_id"], ondelete="CASCADE"),
)
