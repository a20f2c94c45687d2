"""Masked credentials (envelope-encrypted passwords) and the credential access log.

Row-level security is enabled and forced on both tables like every tenant table. The app
role may only SELECT and INSERT access-log rows: the audit trail is append-only for it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 10:02:41.518230
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

from db.migrations.rls import secure_tenant_tables

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _sync_columns() -> list[sa.Column[object]]:
    return [
        sa.Column(
            "version",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "field_dots",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("deleted", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
    ]


def upgrade() -> None:
    op.create_table(
        "credentials",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("contact_id", sa.Uuid(), nullable=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("username", sa.Text(), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("is_public", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("has_password", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("key_id", sa.Text(), nullable=True),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=True),
        sa.Column("key_nonce", sa.LargeBinary(), nullable=True),
        sa.Column("password_nonce", sa.LargeBinary(), nullable=True),
        sa.Column("password_ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("alg_version", sa.Integer(), nullable=True),
        *_sync_columns(),
        sa.CheckConstraint(
            "num_nulls(key_id, wrapped_key, key_nonce, password_nonce, password_ciphertext, alg_version) IN (0, 6)",
            name=op.f("ck_credentials_secret_complete"),
        ),
        sa.CheckConstraint(
            "has_password = (password_ciphertext IS NOT NULL)",
            name=op.f("ck_credentials_has_password"),
        ),
        sa.ForeignKeyConstraint(
            ["org_id", "contact_id"],
            ["contacts.org_id", "contacts.id"],
            name=op.f("fk_credentials_org_id_contact_id_contacts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id", "customer_id"],
            ["customers.org_id", "customers.id"],
            name=op.f("fk_credentials_org_id_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", "id", name=op.f("pk_credentials")),
    )
    op.create_index("ix_credentials_org_seq", "credentials", ["org_id", "seq"], unique=False)
    op.create_index(
        "ix_credentials_org_customer", "credentials", ["org_id", "customer_id"], unique=False
    )
    op.create_index(
        "ix_credentials_org_contact", "credentials", ["org_id", "contact_id"], unique=False
    )
    op.create_index("ix_credentials_org_key", "credentials", ["org_id", "key_id"], unique=False)
    op.create_table(
        "credential_access_log",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("credential_id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=True),
        sa.Column("client_address", sa.Text(), nullable=True),
        sa.Column(
            "revealed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["orgs.org_id"],
            name=op.f("fk_credential_access_log_org_id_orgs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", "id", name=op.f("pk_credential_access_log")),
    )
    op.create_index(
        "ix_credential_access_log_org_revealed",
        "credential_access_log",
        ["org_id", "revealed_at"],
        unique=False,
    )
    op.create_index(
        "ix_credential_access_log_org_user_revealed",
        "credential_access_log",
        ["org_id", "user_id", "revealed_at"],
        unique=False,
    )
    op.create_index(
        "ix_credential_access_log_org_customer_revealed",
        "credential_access_log",
        ["org_id", "customer_id", "revealed_at"],
        unique=False,
    )
    role = context.config.attributes.get("app_role", "fieldsync_app")
    secure_tenant_tables(role, ["credentials"])
    # The access log is append-only for the app: no UPDATE or DELETE of audit rows.
    secure_tenant_tables(role, ["credential_access_log"], "SELECT, INSERT")


def downgrade() -> None:
    op.drop_index(
        "ix_credential_access_log_org_customer_revealed", table_name="credential_access_log"
    )
    op.drop_index("ix_credential_access_log_org_user_revealed", table_name="credential_access_log")
    op.drop_index("ix_credential_access_log_org_revealed", table_name="credential_access_log")
    op.drop_table("credential_access_log")
    op.drop_index("ix_credentials_org_key", table_name="credentials")
    op.drop_index("ix_credentials_org_contact", table_name="credentials")
    op.drop_index("ix_credentials_org_customer", table_name="credentials")
    op.drop_index("ix_credentials_org_seq", table_name="credentials")
    op.drop_table("credentials")
