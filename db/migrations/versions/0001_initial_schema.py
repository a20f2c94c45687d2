"""Initial schema: tenants, users, custom fields, customers and attached records, change log.

Also creates the non-owner app role, its grants, row-level security on every tenant
table, and the security-definer lookup sign-in uses before a tenant is known.

Revision ID: 0001
Revises:
Create Date: 2026-11-23 08:33:23.005384
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

from db.migrations.rls import secure_tenant_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "orgs",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column(
            "conflict_policies",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("org_id", name=op.f("pk_orgs")),
    )
    op.create_table(
        "change_log",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("entity", sa.Text(), nullable=False),
        sa.Column("record_id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("op", sa.Text(), nullable=False),
        sa.Column("version", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("replica", sa.Text(), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=True),
        sa.Column(
            "changed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.org_id"], name=op.f("fk_change_log_org_id_orgs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("org_id", "seq", name=op.f("pk_change_log")),
    )
    op.create_table(
        "custom_field_definitions",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("entity_type", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("field_type", sa.Text(), nullable=False),
        sa.Column("required", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column(
            "options",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("position", sa.Integer(), server_default=sa.text("0"), nullable=False),
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
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["orgs.org_id"],
            name=op.f("fk_custom_field_definitions_org_id_orgs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", "id", name=op.f("pk_custom_field_definitions")),
        sa.UniqueConstraint(
            "org_id",
            "entity_type",
            "key",
            name=op.f("uq_custom_field_definitions_org_id_entity_type_key"),
        ),
    )
    op.create_table(
        "customers",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("business_name", sa.Text(), nullable=True),
        sa.Column("first_name", sa.Text(), nullable=True),
        sa.Column("last_name", sa.Text(), nullable=True),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column(
            "phones",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "addresses",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "notification_emails",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "invoice_cc_emails",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "settings",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "custom_fields",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("archived", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column(
            "sort_name",
            sa.Text(),
            sa.Computed(
                "lower(coalesce(nullif(business_name, ''), trim(coalesce(last_name, '') || ' ' || coalesce(first_name, ''))))",
                persisted=True,
            ),
            nullable=True,
        ),
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
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.org_id"], name=op.f("fk_customers_org_id_orgs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("org_id", "id", name=op.f("pk_customers")),
    )
    op.create_index("ix_customers_org_seq", "customers", ["org_id", "seq"], unique=False)
    op.create_index(
        "ix_customers_org_sort", "customers", ["org_id", "sort_name", "id"], unique=False
    )
    op.create_index(
        "ix_customers_org_sort_pattern",
        "customers",
        ["org_id", "sort_name"],
        unique=False,
        postgresql_ops={"sort_name": "text_pattern_ops"},
    )
    op.create_index(
        "uq_customers_org_email",
        "customers",
        ["org_id", sa.literal_column("lower(email)")],
        unique=True,
        postgresql_where=sa.text("NOT deleted AND email IS NOT NULL"),
    )
    op.create_table(
        "org_seq",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.org_id"], name=op.f("fk_org_seq_org_id_orgs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("org_id", name=op.f("pk_org_seq")),
    )
    op.create_table(
        "users",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=True),
        sa.Column(
            "can_sync_by_customer", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
        sa.Column(
            "can_view_credentials", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
        sa.Column(
            "can_create_credentials", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
        sa.Column(
            "can_edit_credentials", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
        sa.Column(
            "can_delete_credentials", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("token_epoch", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
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
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.org_id"], name=op.f("fk_users_org_id_orgs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("org_id", "id", name=op.f("pk_users")),
    )
    op.create_index("uq_users_email", "users", [sa.literal_column("lower(email)")], unique=True)
    op.create_table(
        "contacts",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("first_name", sa.Text(), nullable=True),
        sa.Column("last_name", sa.Text(), nullable=True),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column(
            "phones",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column(
            "custom_fields",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
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
        sa.ForeignKeyConstraint(
            ["org_id", "customer_id"],
            ["customers.org_id", "customers.id"],
            name=op.f("fk_contacts_org_id_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", "id", name=op.f("pk_contacts")),
    )
    op.create_index("ix_contacts_org_customer", "contacts", ["org_id", "customer_id"], unique=False)
    op.create_index("ix_contacts_org_seq", "contacts", ["org_id", "seq"], unique=False)
    op.create_table(
        "facilities",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column(
            "address",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column(
            "custom_fields",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
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
        sa.ForeignKeyConstraint(
            ["org_id", "customer_id"],
            ["customers.org_id", "customers.id"],
            name=op.f("fk_facilities_org_id_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", "id", name=op.f("pk_facilities")),
    )
    op.create_index(
        "ix_facilities_org_customer", "facilities", ["org_id", "customer_id"], unique=False
    )
    op.create_index("ix_facilities_org_seq", "facilities", ["org_id", "seq"], unique=False)
    op.create_table(
        "assets",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("facility_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("manufacturer", sa.Text(), nullable=True),
        sa.Column("model", sa.Text(), nullable=True),
        sa.Column("serial_number", sa.Text(), nullable=True),
        sa.Column("install_date", sa.Date(), nullable=True),
        sa.Column("location", sa.Text(), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column(
            "custom_fields",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
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
        sa.ForeignKeyConstraint(
            ["org_id", "customer_id"],
            ["customers.org_id", "customers.id"],
            name=op.f("fk_assets_org_id_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id", "facility_id"],
            ["facilities.org_id", "facilities.id"],
            name=op.f("fk_assets_org_id_facility_id_facilities"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", "id", name=op.f("pk_assets")),
    )
    op.create_index("ix_assets_org_customer", "assets", ["org_id", "customer_id"], unique=False)
    op.create_index("ix_assets_org_facility", "assets", ["org_id", "facility_id"], unique=False)
    op.create_index("ix_assets_org_seq", "assets", ["org_id", "seq"], unique=False)

    _security(context.config.attributes.get("app_role", "fieldsync_app"))


TENANT_TABLES = (
    "orgs",
    "org_seq",
    "users",
    "custom_field_definitions",
    "customers",
    "contacts",
    "facilities",
    "assets",
    "change_log",
)


def _security(role: str) -> None:
    op.execute(
        f"""
        DO $$ BEGIN
          IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
            CREATE ROLE "{role}" LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
          END IF;
        END $$
        """
    )
    op.execute(f'GRANT USAGE ON SCHEMA public TO "{role}"')
    op.execute(f'GRANT SELECT ON alembic_version TO "{role}"')
    secure_tenant_tables(role, TENANT_TABLES)
    # Sign-in knows only an email, not the tenant: this owner-run function returns the one
    # row needed to check a password, and nothing else of any tenant.
    op.execute(
        """
        CREATE FUNCTION fieldsync_login_lookup(p_email text)
        RETURNS TABLE (org_id uuid, id uuid, password_hash text, active boolean, token_epoch bigint)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
          SELECT u.org_id, u.id, u.password_hash, u.active, u.token_epoch
          FROM users u WHERE lower(u.email) = lower(p_email)
        $$
        """
    )
    # "Is this database empty?" (demo seeding) without seeing any tenant's rows.
    op.execute(
        """
        CREATE FUNCTION fieldsync_tenant_count() RETURNS bigint
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
          SELECT count(*) FROM orgs
        $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION fieldsync_tenant_count() FROM PUBLIC")
    op.execute(f'GRANT EXECUTE ON FUNCTION fieldsync_tenant_count() TO "{role}"')
    op.execute("REVOKE ALL ON FUNCTION fieldsync_login_lookup(text) FROM PUBLIC")
    op.execute(f'GRANT EXECUTE ON FUNCTION fieldsync_login_lookup(text) TO "{role}"')


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS fieldsync_login_lookup(text)")
    op.execute("DROP FUNCTION IF EXISTS fieldsync_tenant_count()")
    op.drop_index("ix_assets_org_seq", table_name="assets")
    op.drop_index("ix_assets_org_facility", table_name="assets")
    op.drop_index("ix_assets_org_customer", table_name="assets")
    op.drop_table("assets")
    op.drop_index("ix_facilities_org_seq", table_name="facilities")
    op.drop_index("ix_facilities_org_customer", table_name="facilities")
    op.drop_table("facilities")
    op.drop_index("ix_contacts_org_seq", table_name="contacts")
    op.drop_index("ix_contacts_org_customer", table_name="contacts")
    op.drop_table("contacts")
    op.drop_index("uq_users_email", table_name="users")
    op.drop_table("users")
    op.drop_table("org_seq")
    op.drop_index(
        "uq_customers_org_email",
        table_name="customers",
        postgresql_where=sa.text("NOT deleted AND email IS NOT NULL"),
    )
    op.drop_index(
        "ix_customers_org_sort_pattern",
        table_name="customers",
        postgresql_ops={"sort_name": "text_pattern_ops"},
    )
    op.drop_index("ix_customers_org_sort", table_name="customers")
    op.drop_index("ix_customers_org_seq", table_name="customers")
    op.drop_table("customers")
    op.drop_table("custom_field_definitions")
    op.drop_table("change_log")
    op.drop_table("orgs")
