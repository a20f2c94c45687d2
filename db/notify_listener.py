"""One LISTEN connection per process: relays change notices to the hub as pokes.

``db/write_path.py`` sends ``NOTIFY fieldsync_changes, '<org_id>'`` in every transaction that
allocates seqs; PostgreSQL delivers one notice per committed transaction. The notice carries
no row data: the hub re-reads the change stream, which is the truth. A dedicated asyncpg
connection (outside the pool, whose connections are reset and recycled) holds the LISTEN.

If that connection dies (server restart, ``pg_terminate_backend``, a silent network drop
found by the periodic health query), the listener reconnects with capped backoff and then
pokes every tenant with subscribers: notices sent while it was away are lost, but the hub
reads from its last seq, so the changes are not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any
from uuid import UUID

import asyncpg

from db.engine import to_async_url
from db.write_path import NOTIFY_CHANNEL

log = logging.getLogger("fieldsync.listener")


def listener_dsn(owner_url: str, *, app_role: str, app_password: str | None) -> str:
    """A libpq DSN for the app role on the owner URL's server (LISTEN needs no grants)."""
    url = to_async_url(owner_url, username=app_role, password=app_password)
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def application_name() -> str:
    """How the listening connection shows in ``pg_stat_activity`` (one per process)."""
    return f"fieldsync-listener-{os.getpid()}"


class Listener:
    """Keeps ``LISTEN fieldsync_changes`` alive and calls ``on_notify(org_id)`` per notice."""

    def __init__(
        self,
        dsn: str,
        *,
        on_notify: Callable[[UUID], None],
        on_reconnect: Callable[[], None],
        health_seconds: float = 5.0,
        max_backoff_seconds: float = 5.0,
    ) -> None:
        self.dsn = dsn
        self.on_notify = on_notify
        self.on_reconnect = on_reconnect
        self.health_seconds = health_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.connect_timeout_seconds = 15.0
        self.connects = 0
        self._conn: asyncpg.Connection[Any] | None = None
        self._lost = asyncio.Event()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, wait_seconds: float = 30.0) -> None:
        """Start listening; returns once the first LISTEN is in place.

        Listening starts before any subscriber reads, so no commit falls between.
        """
        self._task = asyncio.create_task(self._run())
        ready = asyncio.create_task(self._ready.wait())
        # Whichever comes first: the LISTEN in place, or the task failing for good.
        done, _ = await asyncio.wait(
            {ready, self._task}, timeout=wait_seconds, return_when=asyncio.FIRST_COMPLETED
        )
        if ready not in done:
            ready.cancel()
            if self._task in done:
                self._task.result()
            raise TimeoutError("could not LISTEN for change notices")

    async def close(self) -> None:
        """Stop listening and close the connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._disconnect()

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                # Bounded as a whole: a server still starting up (or a half-open socket)
                # can leave the LISTEN unanswered, and a stalled reconnect would leave the
                # hub without notices until the next restart of this process.
                await asyncio.wait_for(self._connect(), self.connect_timeout_seconds)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("listener connect failed: %r; retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_seconds)
                continue
            backoff = 0.1
            if self.connects > 1:
                log.warning("listener reconnected; re-reading every tenant")
                self.on_reconnect()
            self._ready.set()
            await self._watch()
            await self._disconnect()

    async def _connect(self) -> None:
        self._lost.clear()
        conn: asyncpg.Connection[Any] = await asyncpg.connect(
            self.dsn, timeout=10, server_settings={"application_name": application_name()}
        )
        try:
            conn.add_termination_listener(lambda _conn: self._lost.set())
            await conn.add_listener(NOTIFY_CHANNEL, self._notice)
        except BaseException:
            # Timed out or failed half-way: do not leak the connection.
            conn.terminate()
            raise
        self._conn = conn
        self.connects += 1

    async def _watch(self) -> None:
        """Wait until the connection is lost (or stops answering the health query)."""
        while not self._lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), self.health_seconds)
                return
            conn = self._conn
            if conn is None or conn.is_closed():
                return
            try:
                await conn.fetchval("SELECT 1", timeout=self.health_seconds)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("listener connection unhealthy: %r", exc)
                return

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2)
            if not conn.is_closed():
                conn.terminate()

    def _notice(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        try:
            org_id = UUID(str(payload))
        except ValueError:
            log.warning("ignoring a malformed change notice: %r", str(payload)[:80])
            return
        self.on_notify(org_id)
