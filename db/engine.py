"""Engines and tenant-scoped transactions.

The app queries as a non-owner role without BYPASSRLS; each transaction first sets
``app.org_id`` with ``set_config(..., true)`` (transaction-local), so row-level security
scopes every statement and a transaction without a tenant sees nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

import asyncpg
import orjson
from sqlalchemy import URL, func, make_url, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def database_unavailable(exc: BaseException) -> bool:
    """The database could not be reached or dropped the connection (not a query's fault).

    A restart, ``pg_terminate_backend`` or a network cut: retrying later succeeds (the
    pool pre-pings and reconnects), so callers report "unavailable, retry" rather than a bug.
    """
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(
            seen,
            OSError
            | asyncpg.CannotConnectNowError
            | asyncpg.ConnectionDoesNotExistError
            | asyncpg.AdminShutdownError
            | asyncpg.InterfaceError,
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def to_async_url(url: str, *, username: str | None = None, password: str | None = None) -> URL:
    """Turn a libpq-style URL into an asyncpg SQLAlchemy URL, optionally as another role."""
    parsed = make_url(url)
    parsed = parsed.set(drivername="postgresql+asyncpg")
    if username is not None:
        parsed = parsed.set(username=username, password=password)
    return parsed


def create_engine(url: URL, *, pool_size: int = 10) -> AsyncEngine:
    """An asyncpg engine with orjson for JSONB and pre-ping so a restarted database heals."""
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        # Errors (which get logged) never carry bound values: password hashes, tokens,
        # credential ciphertext and customer data stay out of the logs.
        hide_parameters=True,
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
    )


class Database:
    """The app's connection pool (as the app role) and the way into a tenant's data."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @classmethod
    def connect(
        cls, owner_url: str, *, app_role: str, app_password: str | None, pool_size: int = 10
    ) -> Database:
        """Pool for the app role on the same server and database as the owner URL."""
        url = to_async_url(owner_url, username=app_role, password=app_password)
        return cls(create_engine(url, pool_size=pool_size))

    @asynccontextmanager
    async def tenant(self, org_id: UUID) -> AsyncIterator[AsyncConnection]:
        """A transaction scoped to one tenant; commits on success, rolls back on error."""
        async with self.engine.begin() as conn:
            await set_tenant(conn, org_id)
            yield conn

    @asynccontextmanager
    async def unscoped(self) -> AsyncIterator[AsyncConnection]:
        """A transaction with no tenant: RLS shows it nothing but security-definer lookups."""
        async with self.engine.begin() as conn:
            yield conn

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


async def set_tenant(conn: AsyncConnection, org_id: UUID) -> None:
    """Scope the current transaction to ``org_id`` (transaction-local setting)."""
    await conn.execute(select(func.set_config("app.org_id", str(org_id), True)))
