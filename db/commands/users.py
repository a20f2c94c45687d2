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
    if await users.email_in_use(conn, email):
        raise DuplicateError(f"a user with email {email} already exists")
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
        raise DuplicateError(f"a user with email {email} already exists") from exc


async def update_user(
    conn: AsyncConnection, org_id: UUID, user_id: UUID, values: Mapping[str, Any]
) -> dict[str, Any]:
    """Set capabilities or activation of a user of the tenant."""
    row = await users.update_user(conn, org_id, user_id, values)
    if row is None:
        raise NotFoundError("user", user_id)
    return row
