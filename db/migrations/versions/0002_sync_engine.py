"""Sync engine: devices, customer selections, push receipts, conflicts, compaction horizon.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 08:59:17.143282
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

from db.migrations.rls import secure_tenant_tables

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sync_conflicts",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=True),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("entity", sa.Text(), nullable=False),
        sa.Column("record_id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("op", sa.Text(), nullable=False),
        sa.Column("base_version", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("server_version", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("client_patch", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("fields", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.Text(), server_default=sa.text("'OPEN'"), nullable=False),
        sa.Column("resolution", sa.Text(), nullable=True),
        sa.Column("resolved_by", sa.Uuid(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("org_id", "id", name=op.f("pk_sync_conflicts")),
    )
    op.create_index(
        "ix_sync_conflicts_org_device", "sync_conflicts", ["org_id", "device_id"], unique=False
    )
    op.create_index(
        "ix_sync_conflicts_org_status", "sync_conflicts", ["org_id", "status"], unique=False
    )
    op.create_table(
        "devices",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("replica_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("platform", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("app_version", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("offline_mode", sa.Text(), server_default=sa.text("'AUTOMATIC'"), nullable=False),
        sa.Column(
            "auto_sync",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("selection_mode", sa.Text(), server_default=sa.text("'ALL'"), nullable=False),
        sa.Column("mode_since_seq", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("checkpoint_seq", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "head_at_last_pull", sa.BigInteger(), server_default=sa.text("0"), nullable=False
        ),
        sa.Column("max_counter", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("pending_changes", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_pull_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_push_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "last_synced",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["org_id", "user_id"],
            ["users.org_id", "users.id"],
            name=op.f("fk_devices_org_id_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", "id", name=op.f("pk_devices")),
    )
    op.create_index("ix_devices_org_user", "devices", ["org_id", "user_id"], unique=False)
    op.create_index("uq_devices_replica", "devices", ["replica_id"], unique=True)
    op.create_table(
        "device_customers",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("selected", sa.Boolean(), nullable=False),
        sa.Column("changed_seq", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id", "device_id"],
            ["devices.org_id", "devices.id"],
            name=op.f("fk_device_customers_org_id_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "org_id", "device_id", "customer_id", name=op.f("pk_device_customers")
        ),
    )
    op.create_table(
        "push_receipts",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=False),
        sa.Column("client_mutation_id", sa.Text(), nullable=False),
        sa.Column("request_hash", sa.Text(), nullable=False),
        sa.Column("outcome", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["org_id", "device_id"],
            ["devices.org_id", "devices.id"],
            name=op.f("fk_push_receipts_org_id_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "org_id", "device_id", "client_mutation_id", name=op.f("pk_push_receipts")
        ),
    )
    op.add_column(
        "customers",
        sa.Column("restored_seq", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column(
        "orgs",
        sa.Column("compacted_seq", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
    )
    # Maintenance (compaction) walks every tenant; this lists their ids and nothing else.
    op.execute(
        """
        CREATE FUNCTION fieldsync_tenant_ids() RETURNS SETOF uuid
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
          SELECT org_id FROM orgs ORDER BY org_id
        $$
        """
    )
    role = context.config.attributes.get("app_role", "fieldsync_app")
    op.execute("REVOKE ALL ON FUNCTION fieldsync_tenant_ids() FROM PUBLIC")
    op.execute(f'GRANT EXECUTE ON FUNCTION fieldsync_tenant_ids() TO "{role}"')
    secure_tenant_tables(
        context.config.attributes.get("app_role", "fieldsync_app"),
        ("devices", "device_customers", "push_receipts", "sync_conflicts"),
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS fieldsync_tenant_ids()")
    op.drop_column("orgs", "compacted_seq")
    op.drop_column("customers", "restored_seq")
    op.drop_table("push_receipts")
    op.drop_table("device_customers")
    op.drop_index("uq_devices_replica", table_name="devices")
    op.drop_index("ix_devices_org_user", table_name="devices")
    op.drop_table("devices")
    op.drop_index("ix_sync_conflicts_org_status", table_name="sync_conflicts")
    op.drop_index("ix_sync_conflicts_org_device", table_name="sync_conflicts")
    op.drop_table("sync_conflicts")
