"""Tenants (dealers) and their change-sequence counter."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, ForeignKey, Table, Text, Uuid, func, text
from sqlalchemy.dialects.postgresql import JSONB

from db.tables.base import metadata

orgs = Table(
    "orgs",
    metadata,
    Column("org_id", Uuid, primary_key=True),
    Column("name", Text, nullable=False),
    # Per entity type: SERVER_WINS | CLIENT_WINS | MANUAL (the sync engine reads it).
    Column("conflict_policies", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    # Tombstones with seq <= this were compacted; older checkpoints must resync.
    Column("compacted_seq", BigInteger, nullable=False, server_default=text("0")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# One row per tenant, locked by the write path from seq allocation until commit: that lock
# is what makes seq order equal commit order, so a reader can never later find a row with
# a seq it already passed (DESIGN.md section 3).
org_seq = Table(
    "org_seq",
    metadata,
    Column("org_id", Uuid, ForeignKey("orgs.org_id", ondelete="CASCADE"), primary_key=True),
    Column("last_seq", BigInteger, nullable=False, server_default=text("0")),
)
