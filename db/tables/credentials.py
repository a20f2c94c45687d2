"""Masked credentials of customers and contacts, and the log of every password reveal.

A credential is a synced record (``sync_columns()``, routed by ``customer_id``; a contact's
credential carries the contact's customer). Its password is stored only encrypted: the
``key_id`` .. ``alg_version`` columns (see ``db/crypto.py``), all NULL when it has none.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    Table,
    Text,
    Uuid,
    func,
    text,
)

from db.tables.base import metadata, org_column, sync_columns

credentials = Table(
    "credentials",
    metadata,
    org_column(),
    Column("id", Uuid, nullable=False),
    Column("customer_id", Uuid, nullable=False),
    Column("contact_id", Uuid, nullable=True),
    Column("name", Text, nullable=False),
    Column("username", Text, nullable=True),
    Column("url", Text, nullable=True),
    Column("notes", Text, nullable=True),
    Column("is_public", Boolean, nullable=False, server_default=text("false")),
    Column("has_password", Boolean, nullable=False, server_default=text("false")),
    # Master key that wraps the data key, the wrapped data key and its nonce.
    Column("key_id", Text, nullable=True),
    Column("wrapped_key", LargeBinary, nullable=True),
    Column("key_nonce", LargeBinary, nullable=True),
    # The password encrypted with the data key.
    Column("password_nonce", LargeBinary, nullable=True),
    Column("password_ciphertext", LargeBinary, nullable=True),
    Column("alg_version", Integer, nullable=True),
    *sync_columns(),
    PrimaryKeyConstraint("org_id", "id"),
    ForeignKeyConstraint(
        ["org_id", "customer_id"], ["customers.org_id", "customers.id"], ondelete="CASCADE"
    ),
    ForeignKeyConstraint(
        ["org_id", "contact_id"], ["contacts.org_id", "contacts.id"], ondelete="CASCADE"
    ),
    CheckConstraint(
        "num_nulls(key_id, wrapped_key, key_nonce, password_nonce, password_ciphertext,"
        " alg_version) IN (0, 6)",
        name="secret_complete",
    ),
    CheckConstraint("has_password = (password_ciphertext IS NOT NULL)", name="has_password"),
)
Index("ix_credentials_org_seq", credentials.c.org_id, credentials.c.seq)
Index("ix_credentials_org_customer", credentials.c.org_id, credentials.c.customer_id)
Index("ix_credentials_org_contact", credentials.c.org_id, credentials.c.contact_id)
# Rotation finds the rows still wrapped by another master key.
Index("ix_credentials_org_key", credentials.c.org_id, credentials.c.key_id)

# Append-only for the app role (it may SELECT and INSERT, never UPDATE or DELETE). No foreign
# key to credentials: the audit trail outlives a credential and its tombstone.
credential_access_log = Table(
    "credential_access_log",
    metadata,
    org_column(),
    Column("id", Uuid, nullable=False),
    Column("credential_id", Uuid, nullable=False),
    Column("customer_id", Uuid, nullable=False),
    Column("user_id", Uuid, nullable=False),
    Column("device_id", Uuid, nullable=True),
    Column("client_address", Text, nullable=True),
    Column("revealed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("org_id", "id"),
    ForeignKeyConstraint(["org_id"], ["orgs.org_id"], ondelete="CASCADE"),
)
Index(
    "ix_credential_access_log_org_revealed",
    credential_access_log.c.org_id,
    credential_access_log.c.revealed_at,
)
Index(
    "ix_credential_access_log_org_user_revealed",
    credential_access_log.c.org_id,
    credential_access_log.c.user_id,
    credential_access_log.c.revealed_at,
)
Index(
    "ix_credential_access_log_org_customer_revealed",
    credential_access_log.c.org_id,
    credential_access_log.c.customer_id,
    credential_access_log.c.revealed_at,
)
