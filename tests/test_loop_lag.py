"""The event-loop lag monitor (server/loop_lag.py) sees a stall as what it is."""

from __future__ import annotations

import asyncio
import time

from server.loop_lag import watch_lag


async def test_a_stall_shows_as_its_length() -> None:
    """Quiet wake-ups are a few ms late at most; a 150 ms block of the loop shows as ~150 ms."""
    seen: list[float] = []
    watcher = asyncio.create_task(watch_lag(seen.append, interval=0.02))
    try:
        await asyncio.sleep(0.2)
        quiet = list(seen)
        time.sleep(0.15)  # noqa: ASYNC251 - the stall under test: what a long GC pass does
        await asyncio.sleep(0.1)
    finally:
        watcher.cancel()
    assert len(quiet) >= 3
    assert max(quiet) < 0.1, quiet
    assert 0.12 <= max(seen) < 0.5, seen
