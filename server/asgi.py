"""ASGI entry for uvicorn workers: settings from the environment the CLI prepared."""

from __future__ import annotations

from starlette.applications import Starlette

from server.app import create_app
from server.logging import configure_logging
from server.settings import Settings


def create_app_from_env() -> Starlette:
    """Build the app in a worker process."""
    settings = Settings()
    configure_logging(settings.log_level, json=settings.log_json)
    return create_app(settings)
