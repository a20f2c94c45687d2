"""Event-loop lag: how late a worker's event loop wakes from a timed sleep.

Whatever holds the loop (a full garbage collection, encoding for every socket in one
iteration, a slow synchronous call) delays every request and every socket of that worker
by the same amount at once. Delivery latency shows the effect; this shows the cause's
size and when it happened: a task sleeps ``INTERVAL`` seconds again and again and records
how much later than asked it woke, as the histogram ``fieldsync_event_loop_lag_seconds``
in ``/metrics``, and logs a warning for a wake-up later than ``WARN_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable

import structlog
from prometheus_client import Gauge, Histogram

log = structlog.get_logger("fieldsync.loop")

INTERVAL = 0.1
WARN_SECONDS = 0.1
LOOP_LAG = Histogram(
    "fieldsync_event_loop_lag_seconds",
    "How much later than asked this worker's event loop woke from a 100 ms sleep: a stall"
    " of the loop delays every request and socket of the worker by this much.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
# Each worker has its own registry and a scrape reaches whichever worker accepted the
# connection: the pid says whose histogram a scrape read (the bench scrapes until it has
# seen every worker).
WORKER_PID = Gauge(
    "fieldsync_worker_pid",
    "Process id of the worker that answered this scrape (metrics are per worker).",
    multiprocess_mode="liveall",
)


async def watch_lag(
    observe: Callable[[float], None] = LOOP_LAG.observe, interval: float = INTERVAL
) -> None:
    """Sleep ``interval`` forever, reporting each wake-up's lateness to ``observe``."""
    loop = asyncio.get_running_loop()
    while True:
        asked = loop.time() + interval
        await asyncio.sleep(interval)
        lag = max(0.0, loop.time() - asked)
        observe(lag)
        if lag >= WARN_SECONDS:
            log.warning("event loop stalled", lag_ms=round(lag * 1000), pid=os.getpid())


@contextlib.asynccontextmanager
async def lag_watched() -> AsyncIterator[None]:
    """Watch this loop's lag while the context is open (the app's lifespan)."""
    WORKER_PID.set(os.getpid())
    task = asyncio.create_task(watch_lag(), name="fieldsync-loop-lag")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
