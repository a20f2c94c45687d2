"""SQLAlchemy Core tables, one module per domain; every table leads with ``org_id``."""

from db.tables.base import metadata
from db.tables.change_log import change_log
from db.tables.custom_fields import custom_field_definitions
from db.tables.customers import assets, contacts, customers, facilities
from db.tables.orgs import org_seq, orgs
from db.tables.users import users

__all__ = [
    "assets",
    "change_log",
    "contacts",
    "custom_field_definitions",
    "customers",
    "facilities",
    "metadata",
    "org_seq",
    "orgs",
    "users",
]
