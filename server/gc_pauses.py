"""Keep the garbage collector's pauses short, and log the long ones: every socket of a
worker waits through a collection.

A pass over a generation costs time in proportion to the objects in it and the garbage it
frees. :func:`keep_pauses_short` freezes what a worker built at start-up (never collected,
never traversed again) and sets the thresholds ``FIELDSYNC_GC_THRESHOLDS``: young passes
often enough that each frees a few thousand objects at most, a middle generation that holds
the survivors of a few young passes only, and full passes left to CPython's own rule (only
once the objects promoted since the last full pass reach a quarter of the old generation),
so they stay rare. Cycles are still collected: memory does not grow without bound.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger("fieldsync.gc")
DEFAULT_THRESHOLDS = (2000, 10, 100)
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
                pid=os.getpid(),
            )

    gc.callbacks.append(callback)
    return callback


def parse_thresholds(text: str) -> tuple[int, int, int]:
    """``"young,middle,old"`` as three positive integers (raises ValueError)."""
    try:
        parts = [int(part) for part in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) != 3 or min(parts) < 1:
        raise ValueError(f"expected three positive integers young,middle,old: {text!r}")
    return parts[0], parts[1], parts[2]


def keep_pauses_short(thresholds: tuple[int, int, int] = DEFAULT_THRESHOLDS) -> None:
    """Freeze what exists now (call once start-up is done) and set the thresholds.

    Why these defaults (``bench.subscriptions_fanout`` prints each worker's GC pauses next
    to the delivery latency): with 10,000/50/100 a young pass freed up to 8,000 objects of
    request garbage in 50-130 ms and a middle pass over the survivors of 50 young passes
    took 630 ms; 2,000/10 bound both to a fifth of that and fewer. The full-pass rule is
    CPython's: it runs only once a quarter of the old generation is new since the last one.
    """
    gc.freeze()
    gc.set_threshold(*thresholds)
