"""User management: creation with checks, permissions, activation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from db.entities import CUSTOMER
from db.errors import DuplicateError, NotFoundError, RecordValidationError
from db.queries import records, users
from sync.validation import is_valid_email

ROLES = ("ADMIN", "TECHNICIAN", "PORTAL")
MIN_PASSWORD_LENGTH = 10
EMAIL_UNAVAILABLE = "this email address cannot be used for a new user: choose another"
CUSTOMER_CLOSED = (
    "the customer is archived or deleted: a portal user needs a live customer (re-enable it first)"
)


async def create_user(
    conn: AsyncConnection,
    *,
    org_id: UUID,
    email: str,
    name: str,
    password: str,
    password_hash: str,
    role: str,
    capabilities: Mapping[str, bool] | None = None,
    customer_id: UUID | None = None,
) -> dict[str, Any]:
    """Add a user after checking email, password length, role and portal customer."""
    errors: dict[str, str] = {}
    if not is_valid_email(email):
        errors["email"] = f"is not a valid email address: {email!r}"
    if len(password) < MIN_PASSWORD_LENGTH:
        errors["password"] = f"must be at least {MIN_PASSWORD_LENGTH} characters"
    if not name.strip():
        errors["name"] = "is required"
    if role not in ROLES:
        errors["role"] = f"must be one of {list(ROLES)}"
    if role == "PORTAL" and customer_id is None:
        errors["customerId"] = "is required for portal users"
    if errors:
        raise RecordValidationError(errors)
    if customer_id is not None and not await records.by_ids(conn, CUSTOMER, org_id, [customer_id]):
        raise NotFoundError("customer", customer_id)
    if (
        role == "PORTAL"
        and customer_id is not None
        and not await users.customer_open_to_portal(conn, org_id, customer_id)
    ):
        raise RecordValidationError({"customerId": CUSTOMER_CLOSED})
    # Sign-in emails are unique across tenants, so "taken" may mean "by another tenant":
    # the answer says no more than that this address cannot be used (docs/security.md).
    if await users.email_in_use(conn, email):
        raise DuplicateError(EMAIL_UNAVAILABLE)
    try:
        return await users.create_user(
            conn,
            org_id=org_id,
            email=email.strip(),
            name=name.strip(),
            password_hash=password_hash,
            role=role,
            capabilities=capabilities,
            customer_id=customer_id,
        )
    except IntegrityError as exc:
        raise DuplicateError(EMAIL_UNAVAILABLE) from exc


async def update_user(
    conn: AsyncConnection, org_id: UUID, user_id: UUID, values: Mapping[str, Any]
) -> dict[str, Any]:
    """Set capabilities or activation of a user of the tenant.

    A portal user is activated only while their customer is live and not archived: the
    trigger of migration 0008 deactivated them when it closed.
    """
    if values.get("active") is True:
        current = await users.get_user(conn, org_id, user_id)
        if current is None:
            raise NotFoundError("user", user_id)
        if current["role"] == "PORTAL" and (
            current["customer_id"] is None
            or not await users.customer_open_to_portal(conn, org_id, current["customer_id"])
        ):
            raise RecordValidationError({"active": CUSTOMER_CLOSED})
    row = await users.update_user(conn, org_id, user_id, values)
    if row is None:
        raise NotFoundError("user", user_id)
    return row
