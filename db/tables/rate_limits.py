"""Rate-limit events (no tenant: logins are counted before one is known)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Identity, Index, Table, Text, func

from db.tables.base import metadata

rate_limit_events = Table(
    "rate_limit_events",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    # What is limited (e.g. `login_email`) and a SHA-256 digest of whose.
    Column("kind", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_rate_limit_events_kind_key_at", "kind", "key", "at"),
)
