"""Long garbage-collector pauses are logged (they stall every socket of a worker)."""

from __future__ import annotations

import gc

from structlog.testing import capture_logs

from server.gc_pauses import watch_pauses


def test_a_collection_longer_than_the_threshold_is_logged():
    """With a zero threshold every full collection is reported with its generation."""
    callback = watch_pauses(threshold_seconds=0)
    try:
        with capture_logs() as logs:
            gc.collect()
    finally:
        gc.callbacks.remove(callback)
    [entry] = [e for e in logs if e["event"] == "long garbage collection"]
    assert entry["generation"] == 2
    assert entry["pause_ms"] >= 0


def test_short_collections_are_not_logged():
    """Below the threshold nothing is logged."""
    callback = watch_pauses(threshold_seconds=60)
    try:
        with capture_logs() as logs:
            gc.collect()
    finally:
        gc.callbacks.remove(callback)
    assert not [e for e in logs if e["event"] == "long garbage collection"]
