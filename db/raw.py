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

Errors name no value: they get logged (with their traceback) and the values here are
emails, password hashes, credential ciphertext and tokens. The bound parameters are left
out of the error, and so are PostgreSQL's ``DETAIL`` (``Key (email)=(...) already
exists``) and the quoted value of a data error (``invalid input syntax for type uuid:
"..."``, or asyncpg's ``invalid input for query argument $2: [...]``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


async def driver(conn: AsyncConnection) -> asyncpg.Connection:
    """The asyncpg connection under ``conn`` (its transaction has begun: the tenant is set)."""
    raw = await conn.get_raw_connection()
    driver_connection = raw.driver_connection
    assert isinstance(driver_connection, asyncpg.Connection)
    return driver_connection


@asynccontextmanager
async def transaction(engine: AsyncEngine, begin: str) -> AsyncIterator[AsyncConnection]:
    """A pooled connection's transaction begun by ``begin`` (a script: BEGIN with the tenant
    scope and settings, one round trip) and committed on the asyncpg connection, for
    ``db.raw`` statements: SQLAlchemy's own BEGIN, scope and COMMIT are a round trip each,
    and each waits for a turn of a busy event loop. A connection whose transaction failed
    is discarded rather than handed out again mid-transaction."""
    async with engine.connect() as conn:
        connection = await driver(conn)
        try:
            await connection.execute(begin)
            yield conn
            await connection.execute("COMMIT")
        except BaseException:
            await conn.invalidate()
            raise


# Fields of a PostgreSQL error that can quote a row's or a parameter's value.
_VALUE_FIELDS = frozenset({"detail", "context", "internal_query"})
# SQLSTATE class 22 (data exception): the message ends with the offending value.
_DATA_EXCEPTION = "22"


def without_values(exc: asyncpg.PostgresError) -> asyncpg.PostgresError:
    """A copy of ``exc`` (same class, SQLSTATE, constraint and table names) whose message
    and fields quote no value."""
    message = str(exc.args[0]) if exc.args else ""
    if (exc.sqlstate or "").startswith(_DATA_EXCEPTION):
        head, colon, _value = message.partition(": ")
        if colon:
            message = f"{head}: (value hidden)"
    copy = type(exc)(message)
    fields = {k: v for k, v in exc.as_dict().items() if k not in _VALUE_FIELDS}
    fields["message"] = message
    copy.__dict__.update(fields)
    return copy


def _translated(sql: str, exc: asyncpg.PostgresError) -> DBAPIError:
    # No parameters at all: a DBAPIError keeps the ones it is given in ``params``.
    orig = without_values(exc)
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        return IntegrityError(sql, None, orig, hide_parameters=True)
    return DBAPIError(sql, None, orig, hide_parameters=True)


async def fetch(conn: AsyncConnection, sql: str, *args: Any) -> list[asyncpg.Record]:
    """Rows of one statement (prepared once per connection)."""
    connection = await driver(conn)
    try:
        return await connection.fetch(sql, *args)
    except asyncpg.PostgresError as exc:
        # "from None": a traceback would print the original, values and all (it stays
        # reachable as ``__context__``, where database_unavailable() looks).
        raise _translated(sql, exc) from None


# Where :func:`fetch_prepared` keeps a connection's statements: the pool's record of the
# connection, which lives as long as the connection itself (a new one starts empty).
_PREPARED = "fieldsync.prepared"
# The longest text asyncpg's statement cache takes (its ``max_cacheable_statement_size``
# default, which the engine keeps).
ASYNCPG_CACHEABLE = 15 * 1024


async def fetch_prepared(conn: AsyncConnection, sql: str, *args: Any) -> list[asyncpg.Record]:
    """Rows of one statement prepared once per connection, however long its text.

    asyncpg's own statement cache (:func:`fetch`) leaves out texts over 15 KiB: those were
    parsed, analysed and planned again on every run (the grouped catch-up page statement,
    planned generic, spent more on that than on running for a whole group). Shorter ones
    stay in that cache.
    """
    if len(sql) <= ASYNCPG_CACHEABLE:
        return await fetch(conn, sql, *args)
    pooled = await conn.get_raw_connection()
    connection = pooled.driver_connection
    assert isinstance(connection, asyncpg.Connection)
    statements: dict[str, asyncpg.prepared_stmt.PreparedStatement] = pooled.info.setdefault(
        _PREPARED, {}
    )
    try:
        statement = statements.get(sql)
        if statement is None:
            statement = statements[sql] = await connection.prepare(sql)
        return await statement.fetch(*args)
    except asyncpg.PostgresError as exc:
        # Prepared again next time: the error may be the statement's own (a schema change
        # altered its result type).
        statements.pop(sql, None)
        raise _translated(sql, exc) from None


async def execute(conn: AsyncConnection, sql: str, *args: Any) -> str:
    """Run one statement; returns its status (``UPDATE 3``)."""
    connection = await driver(conn)
    try:
        return await connection.execute(sql, *args)
    except asyncpg.PostgresError as exc:
        # "from None": a traceback would print the original, values and all (it stays
        # reachable as ``__context__``, where database_unavailable() looks).
        raise _translated(sql, exc) from None
