"""The external-system sync window: sources, external records (with their links and
last-synced values), import batches and the audit trail.

Every table leads with ``org_id`` and has row-level security enabled and forced, like every
tenant table. The app role may only read and append audit entries.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 18:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

from db.migrations.rls import secure_tenant_tables

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _jsonb(name: str, default: str | None, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(
        name,
        postgresql.JSONB(astext_type=sa.Text()),
        server_default=sa.text(default) if default else None,
        nullable=nullable,
    )


def _now(name: str) -> sa.Column[object]:
    return sa.Column(
        name, sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )


def _source_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["org_id", "source_id"],
        ["external_sources.org_id", "external_sources.id"],
        name=f"fk_{table}_org_id_source_id_external_sources",
        ondelete="CASCADE",
    )


def upgrade() -> None:
    """Create the four tables, their indexes, policies and grants."""
    op.create_table(
        "external_sources",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("direction", sa.Text(), nullable=False),
        _jsonb("mapping", None),
        _now("created_at"),
        _now("updated_at"),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["orgs.org_id"],
            name="fk_external_sources_org_id_orgs",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", "id", name="pk_external_sources"),
    )
    op.create_index(
        "uq_external_sources_org_name",
        "external_sources",
        ["org_id", sa.text("lower(name)")],
        unique=True,
    )
    op.create_table(
        "external_records",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("source_id", sa.Uuid(), nullable=False),
        sa.Column("external_id", sa.Text(), nullable=False),
        _jsonb("values", None),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("deleted", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("line", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_batch_id", sa.Uuid(), nullable=True),
        sa.Column("customer_id", sa.Uuid(), nullable=True),
        _jsonb("synced", None, nullable=True),
        sa.Column("sync_active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("auto_match", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("linked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("category", sa.Text(), nullable=True),
        _jsonb("conflicts", "'{}'::jsonb"),
        _jsonb("pending", "'[]'::jsonb"),
        _now("updated_at"),
        _source_fk("external_records"),
        sa.PrimaryKeyConstraint("org_id", "source_id", "external_id", name="pk_external_records"),
    )
    op.create_index(
        "uq_external_records_org_source_customer",
        "external_records",
        ["org_id", "source_id", "customer_id"],
        unique=True,
        postgresql_where=sa.text("customer_id IS NOT NULL"),
    )
    op.create_index(
        "ix_external_records_org_source_category",
        "external_records",
        ["org_id", "source_id", "category", "external_id"],
    )
    op.create_table(
        "external_import_batches",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("source_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("file_name", sa.Text(), nullable=True),
        sa.Column("file_format", sa.Text(), nullable=False),
        sa.Column("file_sha256", sa.Text(), nullable=False),
        sa.Column("byte_size", sa.Integer(), nullable=False),
        _jsonb("counts", "'{}'::jsonb"),
        _jsonb("errors", "'[]'::jsonb"),
        sa.Column("actor_id", sa.Uuid(), nullable=True),
        sa.Column("actor", sa.Text(), nullable=False),
        _now("created_at"),
        _source_fk("external_import_batches"),
        sa.PrimaryKeyConstraint("org_id", "id", name="pk_external_import_batches"),
    )
    op.create_index(
        "ix_external_import_batches_org_source_created",
        "external_import_batches",
        ["org_id", "source_id", "created_at"],
    )
    op.create_table(
        "external_audit",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("source_id", sa.Uuid(), nullable=False),
        sa.Column("external_id", sa.Text(), nullable=True),
        sa.Column("customer_id", sa.Uuid(), nullable=True),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("actor_id", sa.Uuid(), nullable=True),
        sa.Column("actor", sa.Text(), nullable=False),
        _now("at"),
        _jsonb("details", "'{}'::jsonb"),
        _source_fk("external_audit"),
        sa.PrimaryKeyConstraint("org_id", "id", name="pk_external_audit"),
    )
    op.create_index(
        "ix_external_audit_org_source_external",
        "external_audit",
        ["org_id", "source_id", "external_id", "at"],
    )
    op.create_index(
        "ix_external_audit_org_source_customer",
        "external_audit",
        ["org_id", "source_id", "customer_id", "at"],
    )
    role = context.config.attributes.get("app_role", "fieldsync_app")
    secure_tenant_tables(role, ["external_sources", "external_records", "external_import_batches"])
    # The audit trail is append-only for the app.
    secure_tenant_tables(role, ["external_audit"], "SELECT, INSERT")


def downgrade() -> None:
    """Drop the tables (their indexes and policies go with them)."""
    op.drop_table("external_audit")
    op.drop_table("external_import_batches")
    op.drop_table("external_records")
    op.drop_table("external_sources")
