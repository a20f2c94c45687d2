"""The per-tenant change log that pull and subscriptions read."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKeyConstraint,
    PrimaryKeyConstraint,
    Table,
    Text,
    Uuid,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

from db.tables.base import metadata, org_column

change_log = Table(
    "change_log",
    metadata,
    org_column(),
    Column("seq", BigInteger, nullable=False),
    Column("entity", Text, nullable=False),
    Column("record_id", Uuid, nullable=False),
    Column("customer_id", Uuid, nullable=False),
    Column("op", Text, nullable=False),
    Column("version", JSONB, nullable=False),
    Column("replica", Text, nullable=False),
    Column("device_id", Uuid, nullable=True),
    Column("changed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("org_id", "seq"),
    ForeignKeyConstraint(["org_id"], ["orgs.org_id"], ondelete="CASCADE"),
)
