"""The LISTEN connection: ready at once, and every notice reaches the hub's callback."""

from __future__ import annotations

import asyncio
import time
import uuid

from sqlalchemy import text

from db.engine import Database
from db.notify_listener import Listener, listener_dsn
from server.settings import Settings


async def test_start_returns_as_soon_as_the_listen_is_in_place(settings: Settings, db: Database):
    """A server's startup waits for the LISTEN, not for the listener's whole timeout."""
    assert settings.database_url is not None
    notices: list[uuid.UUID] = []
    listener = Listener(
        listener_dsn(settings.database_url, app_role=settings.app_role, app_password=None),
        on_notify=notices.append,
        on_reconnect=lambda: None,
    )
    started = time.monotonic()
    await listener.start(wait_seconds=20)
    try:
        assert time.monotonic() - started < 5
        org_id = uuid.uuid4()
        async with db.unscoped() as conn:
            await conn.execute(
                text("SELECT pg_notify('fieldsync_changes', :o)"), {"o": str(org_id)}
            )
        for _ in range(100):
            if notices:
                break
            await asyncio.sleep(0.05)
        assert notices == [org_id]
    finally:
        await listener.close()
