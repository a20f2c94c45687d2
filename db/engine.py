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
from sqlalchemy import URL, event, make_url, text
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def database_unavailable(exc: BaseException) -> bool:
    """The database could not be reached or dropped the connection (not a query's fault).

    A restart, ``pg_terminate_backend`` or a network cut: retrying later succeeds (the
    pool drops closed connections and reconnects), so callers report "unavailable, retry"
    rather than a bug.
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
    """An asyncpg engine with orjson for JSONB that drops connections the server closed."""
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        # Errors (which get logged) never carry bound values: password hashes, tokens,
        # credential ciphertext and customer data stay out of the logs.
        hide_parameters=True,
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
    )
    event.listen(engine.sync_engine, "checkout", _refuse_closed_connection)
    return engine


def _refuse_closed_connection(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """Hand out no pooled connection whose socket the server closed (a restart,
    ``pg_terminate_backend``): the pool discards it and checks out another.

    Instead of SQLAlchemy's pre-ping, which for asyncpg costs three round trips (BEGIN, an
    empty statement, ROLLBACK) on every checkout: a request that reads and signs in checked
    out twice, so six of its round trips were pings. asyncpg notices the server's goodbye
    when the event loop reads it, so the check is free; a connection that died silently
    fails its first statement instead, is invalidated, and the request reports
    ``DATABASE_UNAVAILABLE``.
    """
    driver = dbapi_connection.driver_connection
    if driver is None or driver.is_closed():
        raise DisconnectionError("connection closed by the server")


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


async def set_tenant(conn: AsyncConnection, org_id: UUID, *, plan_each: bool = False) -> None:
    """Scope the current transaction to ``org_id`` (transaction-local setting).

    ``plan_each`` also plans every statement of the transaction for its values, with
    random reads priced as the cached reads they are, in the same round trip. Reads want
    that: asyncpg prepares statements, and after five runs PostgreSQL may switch to a
    generic plan, for which ``LIKE $1`` cannot use the trigram search index nor
    ``= ANY($1)`` know how many ids it has; and at the default page cost a search
    matching 4% of 10,000 customers scanned the table (3.6 ms) rather than the index.
    """
    await conn.execute(PLAN_EACH if plan_each else SCOPE, {"org": str(org_id)})


# The read settings of ``plan_each``: the one place they are spelled. Transaction-local
# ``set_config`` calls, appended to the statement that sets the tenant.
READ_PLANNING = {"plan_cache_mode": "force_custom_plan", "random_page_cost": "1.1"}
PLAN_EACH_CONFIG = "".join(
    f", set_config('{name}', '{value}', true)" for name, value in READ_PLANNING.items()
)
# The same settings as statements, for a transaction already under way (pull pages on the
# raw connection, where each part of the page statement stops after a few rows, which the
# planner cannot know).
SET_READ_PLANNING = "; ".join(
    f"SET LOCAL {name} = {value}" for name, value in READ_PLANNING.items()
)

# Fixed texts: building the expression anew for each transaction cost more Python than the
# round trip. This is the transaction's first statement, so it goes through SQLAlchemy,
# which begins the transaction lazily (``db.raw`` statements come after it).
SCOPE = text("SELECT set_config('app.org_id', :org, true)")
PLAN_EACH = text("SELECT set_config('app.org_id', :org, true)" + PLAN_EACH_CONFIG)
