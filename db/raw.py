"""Hot statements on the asyncpg connection under a SQLAlchemy transaction.

The push and the write path send a few set-based statements whose parameters are whole
arrays (``= ANY($2::uuid[])``, ``unnest($3::text[], ...)``). Through SQLAlchemy each one
paid for compiling, expanding IN lists into one parameter per value (a new statement text,
so a new server-side prepare, whenever the count changed) and processing every parameter
in Python. Here they run on the same connection, inside the same transaction and savepoint
(so under the same role and ``app.org_id`` row-level security), as fixed texts that asyncpg
prepares once per connection and caches.

jsonb goes in as text (``$n::text[]`` cast to jsonb in SQL, encoded with orjson) and comes
back decoded by the codec SQLAlchemy registers on every pooled connection
(``db.engine``: orjson). Errors come back as SQLAlchemy's, so callers keep one exception
vocabulary (a unique violation is an ``IntegrityError`` whose ``orig`` names the index).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection


async def driver(conn: AsyncConnection) -> asyncpg.Connection:
    """The asyncpg connection under ``conn`` (its transaction has begun: the tenant is set)."""
    raw = await conn.get_raw_connection()
    driver_connection = raw.driver_connection
    assert isinstance(driver_connection, asyncpg.Connection)
    return driver_connection


def _translated(sql: str, args: Sequence[Any], exc: asyncpg.PostgresError) -> DBAPIError:
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        return IntegrityError(sql, args, exc)
    return DBAPIError(sql, args, exc)


async def fetch(conn: AsyncConnection, sql: str, *args: Any) -> list[asyncpg.Record]:
    """Rows of one statement (prepared once per connection)."""
    connection = await driver(conn)
    try:
        return await connection.fetch(sql, *args)
    except asyncpg.PostgresError as exc:
        raise _translated(sql, args, exc) from exc


async def execute(conn: AsyncConnection, sql: str, *args: Any) -> str:
    """Run one statement; returns its status (``UPDATE 3``)."""
    connection = await driver(conn)
    try:
        return await connection.execute(sql, *args)
    except asyncpg.PostgresError as exc:
        raise _translated(sql, args, exc) from exc
