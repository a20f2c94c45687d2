"""Users: sign-in lookup, creation, permissions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from db import raw
from db.tables import customers, users

CAPABILITY_COLUMNS = (
    "can_sync_by_customer",
    "can_view_credentials",
    "can_create_credentials",
    "can_edit_credentials",
    "can_delete_credentials",
)


@dataclass(frozen=True)
class LoginRecord:
    """What sign-in needs to check a password, found before the tenant is known."""

    org_id: UUID
    user_id: UUID
    password_hash: str
    active: bool
    token_epoch: int


async def login_lookup(conn: AsyncConnection, email: str) -> LoginRecord | None:
    """Find a user by email across tenants (through the security-definer function)."""
    result = await conn.execute(
        text("SELECT * FROM fieldsync_login_lookup(:email)"), {"email": email}
    )
    row = result.mappings().first()
    if row is None:
        return None
    return LoginRecord(
        org_id=row["org_id"],
        user_id=row["id"],
        password_hash=row["password_hash"],
        active=row["active"],
        token_epoch=int(row["token_epoch"]),
    )


async def create_user(
    conn: AsyncConnection,
    *,
    org_id: UUID,
    email: str,
    name: str,
    password_hash: str,
    role: str,
    capabilities: Mapping[str, bool] | None = None,
    customer_id: UUID | None = None,
) -> dict[str, Any]:
    """Insert a user; the caller maps a unique violation on email to a typed error."""
    values: dict[str, Any] = {
        "org_id": org_id,
        "id": uuid4(),
        "email": email,
        "name": name,
        "password_hash": password_hash,
        "role": role,
        "customer_id": customer_id,
        **(capabilities or {}),
    }
    result = await conn.execute(users.insert().values(values).returning(users))
    return dict(result.mappings().one())


_GET_USER = f"SELECT {', '.join(c.name for c in users.c)} FROM users WHERE org_id = $1 AND id = $2"


async def get_user(conn: AsyncConnection, org_id: UUID, user_id: UUID) -> dict[str, Any] | None:
    """A user of the tenant, or None (in a begun, tenant-scoped transaction).

    Read on every request: a fixed statement on asyncpg costs a fraction of SQLAlchemy's
    building and compiling it each time."""
    rows = await raw.fetch(conn, _GET_USER, org_id, user_id)
    return dict(rows[0].items()) if rows else None


async def email_in_use(conn: AsyncConnection, email: str) -> bool:
    """Whether any tenant already has a user with this sign-in email."""
    return await login_lookup(conn, email) is not None


async def users_by_ids(
    conn: AsyncConnection, org_id: UUID, ids: Sequence[UUID]
) -> list[dict[str, Any]]:
    """The tenant's users with these ids (any order): ``node(id:)``'s batch."""
    query = select(users).where(users.c.org_id == org_id, users.c.id.in_(list(ids)))
    return [dict(r) for r in (await conn.execute(query)).mappings()]


async def list_users(conn: AsyncConnection, org_id: UUID) -> list[dict[str, Any]]:
    """Every user of the tenant, by email."""
    query = select(users).where(users.c.org_id == org_id).order_by(func.lower(users.c.email))
    return [dict(r) for r in (await conn.execute(query)).mappings()]


async def update_user(
    conn: AsyncConnection, org_id: UUID, user_id: UUID, values: Mapping[str, Any]
) -> dict[str, Any] | None:
    """Set columns of a user; deactivation also bumps the token epoch (revokes tokens)."""
    changes: dict[str, Any] = {**values, "updated_at": func.now()}
    if values.get("active") is False:
        changes["token_epoch"] = users.c.token_epoch + 1
    result = await conn.execute(
        update(users)
        .where(users.c.org_id == org_id, users.c.id == user_id)
        .values(changes)
        .returning(users)
    )
    row = result.mappings().first()
    return dict(row) if row else None


async def count_users(conn: AsyncConnection) -> int:
    """Users visible to this transaction (all tenants only for the owner role)."""
    return int((await conn.execute(select(func.count()).select_from(users))).scalar_one())


async def customer_open_to_portal(conn: AsyncConnection, org_id: UUID, customer_id: UUID) -> bool:
    """Whether the customer exists, is live and not archived, read with a share lock: an
    archive or delete committing meanwhile waits for this transaction, so its trigger
    (migration 0008) sees the portal user this transaction adds or re-activates."""
    query = (
        select(customers.c.id)
        .where(
            customers.c.org_id == org_id,
            customers.c.id == customer_id,
            customers.c.deleted.is_(False),
            customers.c.archived.is_(False),
        )
        .with_for_update(read=True)
    )
    return (await conn.execute(query)).first() is not None
