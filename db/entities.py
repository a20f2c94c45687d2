"""The synced entity types and which of their columns a write may change."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table

from db.crypto import SECRET_COLUMNS
from db.tables import assets, contacts, credentials, customers, facilities


class EntityType(enum.StrEnum):
    """A synced record type; the value is what the change log stores."""

    CUSTOMER = "customer"
    CONTACT = "contact"
    FACILITY = "facility"
    ASSET = "asset"
    CREDENTIAL = "credential"


@dataclass(frozen=True)
class EntitySpec:
    """How the write path treats one entity type."""

    type: EntityType
    table: Table
    # Columns a patch may set; each one gets a field dot when it changes.
    fields: tuple[str, ...]
    # Columns set once at creation that link the record to its parents.
    links: tuple[str, ...]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    # Columns that are written and versioned like any field but never leave the server
    # (pull, subscriptions and GraphQL types skip them), e.g. a credential's ciphertext.
    private_fields: tuple[str, ...] = ()

    def new_row_defaults(self) -> dict[str, Any]:
        """Values of a fresh row before its first patch (copies, so callers may mutate)."""
        row: dict[str, Any] = dict.fromkeys(self.fields)
        for key, value in self.defaults.items():
            row[key] = value.copy() if isinstance(value, list | dict) else value
        return row


CUSTOMER = EntitySpec(
    type=EntityType.CUSTOMER,
    table=customers,
    fields=(
        "business_name",
        "first_name",
        "last_name",
        "email",
        "phones",
        "addresses",
        "notification_emails",
        "invoice_cc_emails",
        "settings",
        "custom_fields",
        "archived",
    ),
    links=(),
    defaults={
        "phones": [],
        "addresses": [],
        "notification_emails": [],
        "invoice_cc_emails": [],
        "settings": {},
        "custom_fields": {},
        "archived": False,
        "restored_seq": 0,
    },
)

CONTACT = EntitySpec(
    type=EntityType.CONTACT,
    table=contacts,
    fields=("first_name", "last_name", "title", "email", "phones", "notes", "custom_fields"),
    links=("customer_id",),
    defaults={"phones": [], "custom_fields": {}},
)

FACILITY = EntitySpec(
    type=EntityType.FACILITY,
    table=facilities,
    fields=("name", "address", "notes", "custom_fields"),
    links=("customer_id",),
    defaults={"address": {}, "custom_fields": {}},
)

ASSET = EntitySpec(
    type=EntityType.ASSET,
    table=assets,
    fields=(
        "kind",
        "manufacturer",
        "model",
        "serial_number",
        "install_date",
        "location",
        "notes",
        "custom_fields",
    ),
    links=("customer_id", "facility_id"),
    defaults={"custom_fields": {}},
)

# The encrypted password (db/crypto.py) is versioned like any field, so a password change is
# a change devices hear about, but its columns never leave the server.
CREDENTIAL = EntitySpec(
    type=EntityType.CREDENTIAL,
    table=credentials,
    fields=("name", "username", "url", "notes", "is_public", "has_password", *SECRET_COLUMNS),
    # A contact's credential carries the contact's customer; contact_id is None otherwise.
    links=("customer_id", "contact_id"),
    defaults={"is_public": False, "has_password": False},
    private_fields=SECRET_COLUMNS,
)

ENTITIES: Mapping[EntityType, EntitySpec] = {
    spec.type: spec for spec in (CUSTOMER, CONTACT, FACILITY, ASSET, CREDENTIAL)
}
