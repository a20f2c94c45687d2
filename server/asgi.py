"""ASGI entry for uvicorn workers: settings from the environment the CLI prepared."""

from __future__ import annotations

from starlette.applications import Starlette

from server.app import create_app
from server.gc_pauses import keep_pauses_short, parse_thresholds, watch_pauses
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
    # passes skip it. The thresholds keep each pass short (server/gc_pauses.py).
    keep_pauses_short(parse_thresholds(settings.gc_thresholds))
    watch_pauses()
    return app
