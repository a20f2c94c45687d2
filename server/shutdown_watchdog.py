"""SIGTERM stops the process even when its event loop cannot.

uvicorn's signal handler only sets a flag that its main loop polls; a loop held by one
request (a pathological document held a core for minutes before validation became linear)
never looks at it, and the server ignored SIGTERM until it was killed. Every validation
step now has a budget (schema/limits.py); this is the last wall: once a stop signal
arrives, a thread waits ``grace_seconds`` for the graceful shutdown, then runs the exit
handlers (the embedded PostgreSQL's release among them) and ends the process.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import structlog

log = structlog.get_logger("fieldsync.shutdown")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Exit status when the graceful shutdown did not finish in time.
FORCED_EXIT_STATUS = 3


def arm_shutdown_watchdog(
    grace_seconds: float,
    *,
    is_server_handler: Callable[[Any], bool],
    exit_process: Callable[[int], None] = os._exit,
) -> bool:
    """Wrap the server's stop-signal handlers with a deadline; True when armed.

    Only handlers ``is_server_handler`` recognises are wrapped (uvicorn's, in
    ``fieldsync serve``): an app run in a test or under another server keeps its signals.
    Must run on the main thread, where signal handlers live.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    armed = False
    for sig in STOP_SIGNALS:
        handler = signal.getsignal(sig)
        if callable(handler) and is_server_handler(handler):
            signal.signal(sig, _with_deadline(handler, grace_seconds, exit_process))
            armed = True
    return armed


def _with_deadline(
    handler: Callable[[int, FrameType | None], Any],
    grace_seconds: float,
    exit_process: Callable[[int], None],
) -> Callable[[int, FrameType | None], None]:
    started = threading.Event()

    def on_signal(sig: int, frame: FrameType | None) -> None:
        if not started.is_set():
            started.set()
            timer = threading.Timer(grace_seconds, _force_exit, args=(sig, exit_process))
            timer.daemon = True  # a shutdown that finishes in time is not held up by it
            timer.start()
        handler(sig, frame)

    return on_signal


def _force_exit(sig: int, exit_process: Callable[[int], None]) -> None:
    log.error(
        "graceful shutdown did not finish in time: exiting now",
        signal=signal.Signals(sig).name,
    )
    try:
        # What SystemExit would have run: closes the embedded PostgreSQL's handle.
        atexit._run_exitfuncs()
    finally:
        exit_process(FORCED_EXIT_STATUS)
