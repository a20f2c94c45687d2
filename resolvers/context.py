"""The typed request context: database, settings, the caller, loaders, one read transaction."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID

import strawberry
from graphql import GraphQLError
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import HTTPConnection

from db.auth import InvalidTokenError, TokenClaims, read_token, still_valid
from db.crypto import KeyRing
from db.engine import Database, set_tenant
from db.queries.users import get_user
from resolvers.loaders import Loaders


class RequestSettings(Protocol):
    """The settings resolvers read, as the server's ``Settings`` provides them: resolvers
    get them through the context and never import the server."""

    @property
    def secret_key(self) -> str | None:
        """Token signing key (HS256)."""

    @property
    def token_ttl_seconds(self) -> int:
        """Lifetime of a token issued at sign-in."""

    @property
    def max_page_size(self) -> int:
        """Cap on `first` of every connection."""

    @property
    def max_string_length(self) -> int:
        """Cap on any text field."""

    @property
    def max_import_bytes(self) -> int:
        """Cap on an uploaded import file of the sync window."""

    @property
    def login_rate_window_seconds(self) -> int:
        """The window of the sign-in rate limits."""

    @property
    def login_rate_per_email(self) -> int:
        """Sign-in attempts per email in the window."""

    @property
    def login_rate_per_address(self) -> int:
        """Sign-in attempts per client address in the window."""

    @property
    def reveal_rate_per_minute(self) -> int:
        """Credential reveals per user a minute."""

    @property
    def reveal_rate_per_address_per_minute(self) -> int:
        """Credential reveals per client address a minute."""

    def key_ring(self) -> KeyRing | None:
        """The master keys that wrap credential data keys (None: not configured)."""


def _no_outcomes(outcomes: list[str]) -> None:
    """Push outcomes go nowhere unless the server counts them."""


class Role(enum.Enum):
    """What a user is in a tenant."""

    ADMIN = "ADMIN"
    TECHNICIAN = "TECHNICIAN"
    PORTAL = "PORTAL"


class PublicError(GraphQLError):
    """A request-level error whose message is safe to show (never masked)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message, extensions={"code": code})


def unauthenticated(
    reason: str = "Authentication required: send `Authorization: Bearer <token>` from `login`",
) -> PublicError:
    """The error every resolver raises without a valid token."""
    return PublicError(reason, "UNAUTHENTICATED")


@dataclass(frozen=True)
class CurrentUser:
    """The signed-in user, loaded fresh for each request (so revocations apply at once)."""

    id: UUID
    org_id: UUID
    email: str
    name: str
    role: Role
    customer_id: UUID | None
    capabilities: frozenset[str]

    @property
    def is_admin(self) -> bool:
        """Admins manage users, custom fields and every record of the tenant."""
        return self.role is Role.ADMIN

    @property
    def can_edit_records(self) -> bool:
        """Admins and technicians edit customers and what hangs off them; portal users read."""
        return self.role in (Role.ADMIN, Role.TECHNICIAN)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> CurrentUser:
        """From a ``users`` row."""
        caps = frozenset(k for k in row if k.startswith("can_") and row[k])
        return cls(
            id=row["id"],
            org_id=row["org_id"],
            email=row["email"],
            name=row["name"],
            role=Role(row["role"]),
            customer_id=row["customer_id"],
            capabilities=caps,
        )


@dataclass
class Context:
    """Per-request context; ``close()`` ends the shared read transaction."""

    request: HTTPConnection
    db: Database
    settings: RequestSettings
    token: str | None
    # Called with the outcome of every pushed change (the server counts them in its metrics).
    count_push_outcomes: Callable[[list[str]], None] = _no_outcomes
    # The operation is a query (set once it is parsed): the caller is then read in the
    # request's read transaction instead of a transaction of its own.
    reads_only: bool = False
    loaders: Loaders = field(init=False)
    _claims: TokenClaims | None = field(default=None, init=False)
    _user: CurrentUser | None = field(default=None, init=False)
    _user_row: dict[str, Any] | None = field(default=None, init=False)
    _conn: AsyncConnection | None = field(default=None, init=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)

    def __post_init__(self) -> None:
        self.loaders = Loaders(self)

    @property
    def client_address(self) -> str | None:
        """The peer address of the request."""
        return self.request.client.host if self.request.client else None

    async def user(self) -> CurrentUser:
        """The signed-in, active user; raises UNAUTHENTICATED otherwise."""
        if self._user is not None:
            return self._user
        claims = self._verified_claims()
        if self.reads_only:
            # A query reads the user in its own read transaction: one connection, one BEGIN.
            async with self.read(claims.org_id) as conn:
                return await self._load_user(conn, claims)
        # A short transaction of its own: a mutation must not hold the request's read
        # connection while it writes on another one (two connections per request would
        # let a burst of mutations exhaust the pool).
        async with self.db.tenant(claims.org_id) as conn:
            return await self._load_user(conn, claims)

    @asynccontextmanager
    async def caller_write(self) -> AsyncIterator[tuple[AsyncConnection, CurrentUser]]:
        """A read-write transaction for the caller's tenant that also reads the caller:
        one transaction where ``user()`` then ``write()`` take two (a pull or a push)."""
        if self._user is not None:
            async with self.write() as conn:
                yield conn, self._user
            return
        claims = self._verified_claims()
        async with self.db.tenant(claims.org_id) as conn:
            yield conn, await self._load_user(conn, claims)

    def _verified_claims(self) -> TokenClaims:
        if self.token is None:
            raise unauthenticated()
        secret = self.settings.secret_key
        assert secret is not None
        try:
            claims = read_token(secret, self.token)
        except InvalidTokenError:
            raise unauthenticated("Invalid or expired token: sign in again") from None
        self._claims = claims
        return claims

    async def _load_user(self, conn: AsyncConnection, claims: TokenClaims) -> CurrentUser:
        row = await get_user(conn, claims.org_id, claims.user_id)
        if row is None or not still_valid(row, claims):
            raise unauthenticated("This token was revoked: sign in again")
        self._user = CurrentUser.from_row(row)
        self._user_row = row
        return self._user

    async def user_row(self) -> dict[str, Any]:
        """The caller's ``users`` row as this request read it (``me`` shows it whole)."""
        await self.user()
        assert self._user_row is not None
        return self._user_row

    async def org_id(self) -> UUID:
        """The caller's tenant."""
        return (await self.user()).org_id

    @asynccontextmanager
    async def read(self, org_id: UUID | None = None) -> AsyncIterator[AsyncConnection]:
        """The request's read-only transaction, shared by loaders one statement at a time.

        One transaction per request keeps a response consistent and costs one BEGIN.
        """
        if self._conn is None and org_id is None:
            org_id = (await self.user()).org_id
        async with self._lock:
            if self._conn is None:
                assert org_id is not None
                conn = await self.db.engine.connect()
                try:
                    # BEGIN READ ONLY in one round trip (asyncpg starts it that way).
                    await conn.execution_options(postgresql_readonly=True)
                    await conn.begin()
                    await set_tenant(conn, org_id, plan_each=True)
                except BaseException:
                    await conn.close()
                    raise
                self._conn = conn
            yield self._conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A fresh read-write transaction for the caller's tenant, committed on exit."""
        org_id = await self.org_id()
        async with self.db.tenant(org_id) as conn:
            yield conn

    async def close(self) -> None:
        """End the read transaction, return its connection to the pool, drop cached rows."""
        self.loaders.release()
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.rollback()
            finally:
                await conn.close()


Info = strawberry.Info[Context, None]
