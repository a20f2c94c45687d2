"""Shared metadata and the column set every synced record carries."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, DateTime, MetaData, Uuid, func, text
from sqlalchemy.dialects.postgresql import JSONB

# Explicit constraint names keep migrations reviewable and let code map a violation to
# a typed error by name (see db/errors.py).
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)


def org_column() -> Column[object]:
    """The tenant column that leads every table and index (RLS and Citus both key on it)."""
    return Column("org_id", Uuid, nullable=False)


def sync_columns() -> list[Column[object]]:
    """Columns of every synced record: version vector, per-field dots, change seq, tombstone."""
    return [
        Column("version", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
        Column("field_dots", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
        Column("seq", BigInteger, nullable=False),
        Column("deleted", Boolean, nullable=False, server_default=text("false")),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    ]
