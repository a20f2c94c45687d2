"""Customers and what hangs off them: contacts, facilities (sites) and assets (doors, equipment).

All four are synced records: they carry the columns of ``sync_columns()`` and a
``customer_id`` (a customer's is its own id) so pull and fan-out can route by selection.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Computed,
    Date,
    ForeignKeyConstraint,
    Index,
    PrimaryKeyConstraint,
    Table,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from db.tables.base import metadata, org_column, sync_columns


def _json_list(name: str) -> Column[object]:
    return Column(name, JSONB, nullable=False, server_default=text("'[]'::jsonb"))


def _json_object(name: str) -> Column[object]:
    return Column(name, JSONB, nullable=False, server_default=text("'{}'::jsonb"))


customers = Table(
    "customers",
    metadata,
    org_column(),
    Column("id", Uuid, nullable=False),
    Column("customer_id", Uuid, nullable=False),
    Column("business_name", Text, nullable=True),
    Column("first_name", Text, nullable=True),
    Column("last_name", Text, nullable=True),
    Column("email", Text, nullable=True),
    _json_list("phones"),
    _json_list("addresses"),
    _json_list("notification_emails"),
    _json_list("invoice_cc_emails"),
    _json_object("settings"),
    _json_object("custom_fields"),
    Column("archived", Boolean, nullable=False, server_default=text("false")),
    # Seq at which the customer last became visible again (re-enabled): devices that
    # evicted it while archived get it whole.
    Column("restored_seq", BigInteger, nullable=False, server_default=text("0")),
    # The business name shows first; people sort by "last first". Lower-cased so an index
    # serves case-insensitive ordering and prefix search.
    Column(
        "sort_name",
        Text,
        Computed(
            "lower(coalesce(nullif(business_name, ''), "
            "trim(coalesce(last_name, '') || ' ' || coalesce(first_name, ''))))",
            persisted=True,
        ),
    ),
    # What search matches a substring of (migration 0007): the name, then the email on a
    # line of its own so a term never spans both.
    Column(
        "search_text",
        Text,
        Computed(
            "lower(coalesce(nullif(business_name, ''), "
            "trim(coalesce(last_name, '') || ' ' || coalesce(first_name, ''))))"
            " || E'\\n' || lower(coalesce(email, ''))",
            persisted=True,
        ),
    ),
    *sync_columns(),
    PrimaryKeyConstraint("org_id", "id"),
    ForeignKeyConstraint(["org_id"], ["orgs.org_id"], ondelete="CASCADE"),
)
Index("ix_customers_org_seq", customers.c.org_id, customers.c.seq)
# Pulls look up the customers re-enabled after a checkpoint (migration 0004).
Index(
    "ix_customers_org_restored",
    customers.c.org_id,
    customers.c.restored_seq,
    postgresql_where=customers.c.restored_seq > 0,
)
# A pull in ALL mode reads the tenant's few archived customers once a page (migration 0014).
Index("ix_customers_org_archived", customers.c.org_id, postgresql_where=customers.c.archived)
Index("ix_customers_org_sort", customers.c.org_id, customers.c.sort_name, customers.c.id)
# Search is a substring match of search_text: a trigram index (migration 0007).
Index(
    "ix_customers_search_trgm",
    customers.c.search_text,
    postgresql_using="gin",
    postgresql_ops={"search_text": "gin_trgm_ops"},
    postgresql_with={"fastupdate": "on", "gin_pending_list_limit": "512"},
)
# Unique primary email per tenant, case-insensitive, among live (non-deleted) customers.
Index(
    "uq_customers_org_email",
    customers.c.org_id,
    func.lower(customers.c.email),
    unique=True,
    postgresql_where=text("NOT deleted AND email IS NOT NULL"),
)

contacts = Table(
    "contacts",
    metadata,
    org_column(),
    Column("id", Uuid, nullable=False),
    Column("customer_id", Uuid, nullable=False),
    Column("first_name", Text, nullable=True),
    Column("last_name", Text, nullable=True),
    Column("title", Text, nullable=True),
    Column("email", Text, nullable=True),
    _json_list("phones"),
    Column("notes", Text, nullable=True),
    _json_object("custom_fields"),
    *sync_columns(),
    PrimaryKeyConstraint("org_id", "id"),
    ForeignKeyConstraint(
        ["org_id", "customer_id"], ["customers.org_id", "customers.id"], ondelete="CASCADE"
    ),
)
Index("ix_contacts_org_seq", contacts.c.org_id, contacts.c.seq)
Index("ix_contacts_org_customer", contacts.c.org_id, contacts.c.customer_id)

facilities = Table(
    "facilities",
    metadata,
    org_column(),
    Column("id", Uuid, nullable=False),
    Column("customer_id", Uuid, nullable=False),
    Column("name", Text, nullable=False),
    _json_object("address"),
    Column("notes", Text, nullable=True),
    _json_object("custom_fields"),
    *sync_columns(),
    PrimaryKeyConstraint("org_id", "id"),
    ForeignKeyConstraint(
        ["org_id", "customer_id"], ["customers.org_id", "customers.id"], ondelete="CASCADE"
    ),
)
Index("ix_facilities_org_seq", facilities.c.org_id, facilities.c.seq)
Index("ix_facilities_org_customer", facilities.c.org_id, facilities.c.customer_id)

assets = Table(
    "assets",
    metadata,
    org_column(),
    Column("id", Uuid, nullable=False),
    Column("customer_id", Uuid, nullable=False),
    Column("facility_id", Uuid, nullable=False),
    Column("kind", Text, nullable=False),
    Column("manufacturer", Text, nullable=True),
    Column("model", Text, nullable=True),
    Column("serial_number", Text, nullable=True),
    Column("install_date", Date, nullable=True),
    Column("location", Text, nullable=True),
    Column("notes", Text, nullable=True),
    _json_object("custom_fields"),
    *sync_columns(),
    PrimaryKeyConstraint("org_id", "id"),
    ForeignKeyConstraint(
        ["org_id", "facility_id"], ["facilities.org_id", "facilities.id"], ondelete="CASCADE"
    ),
    ForeignKeyConstraint(
        ["org_id", "customer_id"], ["customers.org_id", "customers.id"], ondelete="CASCADE"
    ),
)
Index("ix_assets_org_seq", assets.c.org_id, assets.c.seq)
Index("ix_assets_org_facility", assets.c.org_id, assets.c.facility_id)
Index("ix_assets_org_customer", assets.c.org_id, assets.c.customer_id)
