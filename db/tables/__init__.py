"""SQLAlchemy Core tables, one module per domain; every table leads with ``org_id``."""

from db.tables.base import metadata
from db.tables.change_log import change_log
from db.tables.credentials import credential_access_log, credentials
from db.tables.custom_fields import custom_field_definitions
from db.tables.customers import assets, contacts, customers, facilities
from db.tables.devices import device_customers, devices, push_receipts, sync_conflicts
from db.tables.external import (
    external_audit,
    external_import_batches,
    external_records,
    external_sources,
)
from db.tables.orgs import org_seq, orgs
from db.tables.rate_limits import rate_limit_events
from db.tables.users import users

__all__ = [
    "assets",
    "change_log",
    "contacts",
    "credential_access_log",
    "credentials",
    "custom_field_definitions",
    "customers",
    "device_customers",
    "devices",
    "external_audit",
    "external_import_batches",
    "external_records",
    "external_sources",
    "facilities",
    "metadata",
    "org_seq",
    "orgs",
    "push_receipts",
    "rate_limit_events",
    "sync_conflicts",
    "users",
]
