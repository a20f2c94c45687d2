"""Log the garbage collector's long pauses: every socket of a worker waits through them."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger("fieldsync.gc")
_started: dict[int, float] = {}


def watch_pauses(threshold_seconds: float = 0.05) -> Callable[[str, dict[str, Any]], None]:
    """Log a warning for every collection that takes longer than ``threshold_seconds``.

    Returns the callback (``gc.callbacks.remove`` stops watching).
    """

    def callback(phase: str, info: dict[str, Any]) -> None:
        generation = int(info["generation"])
        if phase == "start":
            _started[generation] = time.perf_counter()
            return
        pause = time.perf_counter() - _started.pop(generation, time.perf_counter())
        if pause >= threshold_seconds:
            log.warning(
                "long garbage collection",
                generation=generation,
                pause_ms=round(pause * 1000),
                collected=info.get("collected"),
            )

    gc.callbacks.append(callback)
    return callback
