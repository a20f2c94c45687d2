"""Users of a tenant: role, per-user capabilities, password hash."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
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

from db.tables.base import metadata, org_column

users = Table(
    "users",
    metadata,
    org_column(),
    Column("id", Uuid, nullable=False),
    Column("email", Text, nullable=False),
    Column("name", Text, nullable=False, server_default=text("''")),
    Column("password_hash", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("customer_id", Uuid, nullable=True),
    Column("can_sync_by_customer", Boolean, nullable=False, server_default=text("false")),
    Column("can_view_credentials", Boolean, nullable=False, server_default=text("false")),
    Column("can_create_credentials", Boolean, nullable=False, server_default=text("false")),
    Column("can_edit_credentials", Boolean, nullable=False, server_default=text("false")),
    Column("can_delete_credentials", Boolean, nullable=False, server_default=text("false")),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    # Bumped on deactivation or password change; tokens carry it, so old tokens stop working.
    Column("token_epoch", BigInteger, nullable=False, server_default=text("0")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("org_id", "id"),
    ForeignKeyConstraint(["org_id"], ["orgs.org_id"], ondelete="CASCADE"),
)

# Sign-in has only an email, so addresses are unique across tenants.
Index("uq_users_email", func.lower(users.c.email), unique=True)
