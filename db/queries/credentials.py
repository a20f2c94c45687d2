"""Credential reads, the access log, and the re-wrapping update used by key rotation.

List and detail reads select only the public columns; the encrypted columns are read only
by :func:`secret_row` (reveal) and :func:`secrets_batch` (rotation).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import Select, bindparam, false, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from db.crypto import SECRET_COLUMNS
from db.queries.pages import Page, PageRequest, Row, fetch_page
from db.queries.records import NO_FILTER, ChildFilter, ChildList
from db.queries.text import escape_like, holds_nul
from db.tables import credential_access_log as access_log
from db.tables import credentials, devices, users

PUBLIC_COLUMNS = [c for c in credentials.columns if c.name not in SECRET_COLUMNS]
SEARCH_COLUMNS = ("name", "username", "url")


@dataclass(frozen=True)
class Visibility:
    """Which credentials a reader may see; a portal user sees only public ones of one customer.

    ``public_of_customer`` None means every credential of the tenant.
    """

    public_of_customer: UUID | None = None
    portal: bool = False

    @classmethod
    def of(cls, role: str, customer_id: UUID | None) -> Visibility:
        """What a user of ``role`` sees: portal users only their customer's public ones."""
        if role == "PORTAL":
            return cls(public_of_customer=customer_id, portal=True)
        return cls()

    def condition(self) -> ChildFilter:
        """The rule as a child list's filter (``Customer.credentialsConnection``)."""
        if not self.portal:
            return NO_FILTER
        return ChildFilter("t.is_public AND t.customer_id = {}::uuid", (self.public_of_customer,))

    def allows(self, row: Row) -> bool:
        """Whether a credential row is visible under these rules."""
        return not self.portal or (
            bool(row["is_public"]) and row["customer_id"] == self.public_of_customer
        )


def child_list(parent_column: str) -> ChildList:
    """Credentials by ``customer_id`` or ``contact_id``, by name as every credential list,
    public columns only."""
    return ChildList(
        table=credentials,
        parent_column=parent_column,
        sort_column="name",
        columns=tuple(c.name for c in PUBLIC_COLUMNS),
    )


def live(org_id: UUID, visibility: Visibility) -> Select[Any]:
    """Live credentials of a tenant the reader may see, public columns only."""
    query = select(*PUBLIC_COLUMNS).where(
        credentials.c.org_id == org_id, credentials.c.deleted.is_(False)
    )
    if visibility.portal:
        query = query.where(
            credentials.c.is_public.is_(True),
            credentials.c.customer_id == visibility.public_of_customer,
        )
    return query


async def by_ids(
    conn: AsyncConnection, org_id: UUID, ids: Sequence[UUID], visibility: Visibility
) -> list[Row]:
    """Visible live credentials with these ids (any order)."""
    query = live(org_id, visibility).where(credentials.c.id.in_(list(ids)))
    return [dict(r) for r in (await conn.execute(query)).mappings()]


async def by_parent(
    conn: AsyncConnection,
    org_id: UUID,
    column: str,
    parent_ids: Sequence[UUID],
    visibility: Visibility,
) -> list[list[Row]]:
    """Visible live credentials grouped by ``customer_id`` or ``contact_id``, by name."""
    parent = credentials.c[column]
    query = (
        live(org_id, visibility)
        .where(parent.in_(list(parent_ids)))
        .order_by(parent, func.lower(credentials.c.name), credentials.c.id)
    )
    grouped: dict[UUID, list[Row]] = defaultdict(list)
    for row in (await conn.execute(query)).mappings():
        grouped[row[column]].append(dict(row))
    return [grouped.get(pid, []) for pid in parent_ids]


async def credential_page(
    conn: AsyncConnection,
    org_id: UUID,
    *,
    visibility: Visibility,
    customer_id: UUID | None,
    contact_id: UUID | None,
    search: str | None,
    request: PageRequest,
) -> tuple[Page, Select[Any]]:
    """A keyset page of visible credentials by name (case-insensitive), and the query to
    count them."""
    query = live(org_id, visibility)
    if customer_id is not None:
        query = query.where(credentials.c.customer_id == customer_id)
    if contact_id is not None:
        query = query.where(credentials.c.contact_id == contact_id)
    if search and holds_nul(search):
        query = query.where(false())
    elif search:
        needle = "%" + escape_like(search.strip().lower()) + "%"
        query = query.where(
            or_(*(func.lower(credentials.c[c]).like(needle, escape="\\") for c in SEARCH_COLUMNS))
        )
    sort = func.lower(credentials.c.name)
    page = await fetch_page(conn, query, sort=sort, id_column=credentials.c.id, request=request)
    for row in page.rows:
        row["_sort"] = row["name"].lower()
    return page, query


async def secret_row(conn: AsyncConnection, org_id: UUID, credential_id: UUID) -> Row | None:
    """A credential with its encrypted columns (tombstones included), for a reveal."""
    query = select(credentials).where(
        credentials.c.org_id == org_id, credentials.c.id == credential_id
    )
    row = (await conn.execute(query)).mappings().first()
    return dict(row) if row else None


async def lock_user(conn: AsyncConnection, org_id: UUID, user_id: UUID) -> Row | None:
    """The user row, locked until commit.

    Reveals of one user queue here, so the rate limit below counts every earlier reveal
    (across server instances), and a permission withdrawn a moment ago is seen.
    """
    query = select(users).where(users.c.org_id == org_id, users.c.id == user_id).with_for_update()
    row = (await conn.execute(query)).mappings().first()
    return dict(row) if row else None


async def recent_reveals(
    conn: AsyncConnection, org_id: UUID, user_id: UUID, window_seconds: int
) -> tuple[int, datetime | None, datetime]:
    """How many reveals the user made in the last ``window_seconds``, the oldest of them,
    and the database's current time."""
    since = func.now() - timedelta(seconds=window_seconds)
    query = select(func.count(), func.min(access_log.c.revealed_at), func.now()).where(
        access_log.c.org_id == org_id,
        access_log.c.user_id == user_id,
        access_log.c.revealed_at > since,
    )
    count, oldest, now = (await conn.execute(query)).one()
    return int(count), oldest, now


async def is_users_device(
    conn: AsyncConnection, org_id: UUID, user_id: UUID, device_id: UUID
) -> bool:
    """Whether ``device_id`` is an active device registered by this user."""
    query = select(devices.c.id).where(
        devices.c.org_id == org_id,
        devices.c.id == device_id,
        devices.c.user_id == user_id,
        devices.c.active.is_(True),
    )
    return (await conn.execute(query)).first() is not None


async def insert_access(
    conn: AsyncConnection,
    *,
    org_id: UUID,
    credential_id: UUID,
    customer_id: UUID,
    user_id: UUID,
    device_id: UUID | None,
    client_address: str | None,
) -> Row:
    """Append one access-log row; returns it (``revealed_at`` is the transaction's time)."""
    result = await conn.execute(
        access_log.insert()
        .values(
            org_id=org_id,
            id=uuid4(),
            credential_id=credential_id,
            customer_id=customer_id,
            user_id=user_id,
            device_id=device_id,
            client_address=client_address,
        )
        .returning(access_log)
    )
    return dict(result.mappings().one())


@dataclass(frozen=True)
class AccessFilter:
    """Access report filters; None means "any". ``since`` is inclusive, ``until`` exclusive."""

    user_id: UUID | None = None
    customer_id: UUID | None = None
    credential_id: UUID | None = None
    since: datetime | None = None
    until: datetime | None = None


def access_query(org_id: UUID, flt: AccessFilter) -> Select[Any]:
    """Access-log rows with who (email, name) and what (credential name, even if deleted)."""
    query = (
        select(
            access_log,
            users.c.email.label("user_email"),
            users.c.name.label("user_name"),
            credentials.c.name.label("credential_name"),
            credentials.c.contact_id.label("contact_id"),
        )
        .select_from(
            access_log.outerjoin(
                users,
                (users.c.org_id == access_log.c.org_id) & (users.c.id == access_log.c.user_id),
            ).outerjoin(
                credentials,
                (credentials.c.org_id == access_log.c.org_id)
                & (credentials.c.id == access_log.c.credential_id),
            )
        )
        .where(access_log.c.org_id == org_id)
    )
    if flt.user_id is not None:
        query = query.where(access_log.c.user_id == flt.user_id)
    if flt.customer_id is not None:
        query = query.where(access_log.c.customer_id == flt.customer_id)
    if flt.credential_id is not None:
        query = query.where(access_log.c.credential_id == flt.credential_id)
    if flt.since is not None:
        query = query.where(access_log.c.revealed_at >= flt.since)
    if flt.until is not None:
        query = query.where(access_log.c.revealed_at < flt.until)
    return query


async def accesses_by_ids(conn: AsyncConnection, org_id: UUID, ids: Sequence[UUID]) -> list[Row]:
    """Access-report rows with these ids (any order), as the report shows them: ``node(id:)``."""
    query = access_query(org_id, AccessFilter()).where(access_log.c.id.in_(list(ids)))
    return [dict(r) for r in (await conn.execute(query)).mappings()]


async def access_page(
    conn: AsyncConnection, org_id: UUID, flt: AccessFilter, request: PageRequest
) -> tuple[Page, Select[Any]]:
    """A keyset page of the access report, newest first when ``request.descending``."""
    query = access_query(org_id, flt)
    page = await fetch_page(
        conn, query, sort=access_log.c.revealed_at, id_column=access_log.c.id, request=request
    )
    return page, query


@dataclass(frozen=True)
class KeyUsage:
    """How many credentials of a tenant have their data key wrapped by one master key."""

    org_id: UUID
    key_id: str
    credentials: int


async def key_usage(conn: AsyncConnection) -> list[KeyUsage]:
    """Per tenant and master key id, the credentials holding a password (tombstones hold none).

    Reads every tenant: run it on the owner's connection (as migrations are), not the app's.
    """
    query = (
        select(credentials.c.org_id, credentials.c.key_id, func.count())
        .where(credentials.c.key_id.is_not(None))
        .group_by(credentials.c.org_id, credentials.c.key_id)
        .order_by(credentials.c.org_id, credentials.c.key_id)
    )
    return [
        KeyUsage(org_id=org, key_id=key, credentials=int(n))
        for org, key, n in (await conn.execute(query)).all()
    ]


async def secrets_batch(
    conn: AsyncConnection, org_id: UUID, *, not_key_id: str, after: UUID | None, limit: int
) -> list[Row]:
    """The next ``limit`` credentials (by id, after ``after``) still wrapped by another key,
    locked until commit so a concurrent password change waits for the batch."""
    query = (
        select(credentials.c.org_id, credentials.c.id, *(credentials.c[c] for c in SECRET_COLUMNS))
        .where(
            credentials.c.org_id == org_id,
            credentials.c.key_id.is_not(None),
            credentials.c.key_id != not_key_id,
        )
        .order_by(credentials.c.id)
        .limit(limit)
        .with_for_update()
    )
    if after is not None:
        query = query.where(credentials.c.id > after)
    return [dict(r) for r in (await conn.execute(query)).mappings()]


async def set_wrapping(conn: AsyncConnection, org_id: UUID, rows: Sequence[Row]) -> None:
    """Store re-wrapped secrets: the one write to ``credentials`` outside the write path.

    Key rotation changes how a password is protected, never what it is: no synced field
    changes, so there is no version bump, no field dot and no change-log row, and devices
    (which never receive these columns) have nothing to learn. Going through the write
    path would instead send every credential of every tenant to every device again.
    """
    if not rows:
        return
    stmt = (
        update(credentials)
        .where(credentials.c.org_id == bindparam("b_org_id"), credentials.c.id == bindparam("b_id"))
        .values({c: bindparam(f"b_{c}") for c in SECRET_COLUMNS})
    )
    await conn.execute(
        stmt,
        [
            {"b_org_id": org_id, "b_id": row["id"], **{f"b_{c}": row[c] for c in SECRET_COLUMNS}}
            for row in rows
        ],
    )
