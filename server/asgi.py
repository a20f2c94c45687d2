"""ASGI entry for uvicorn workers: settings from the environment the CLI prepared."""

from __future__ import annotations

import gc

from starlette.applications import Starlette

from server.app import create_app
from server.gc_pauses import watch_pauses
from server.logging import configure_logging
from server.settings import Settings


def create_app_from_env() -> Starlette:
    """Build the app in a worker process."""
    settings = Settings()
    configure_logging(settings.log_level, json=settings.log_json)
    if settings.key_ring() is None:
        # `fieldsync serve` checks this with advice (or sets the demo key); never serve
        # credentials without a deliberate key.
        raise RuntimeError("FIELDSYNC_MASTER_KEYS is not set")
    app = create_app(settings)
    # What is imported and built by now lives as long as the worker: frozen, the collector's
    # full passes (a 1,000-change push allocates enough to set one off) skip it.
    gc.freeze()
    # A worker holding thousands of sockets keeps ~300,000 tracked objects in the oldest
    # generation; a full pass over them stalls every socket for 200-350 ms (seen as the
    # p99 of live delivery). Collect the young generations less often, so fewer objects
    # are promoted and full passes come rarely (cycles are still collected).
    gc.set_threshold(10_000, 50, 100)
    watch_pauses()
    return app
