"""Long garbage-collector pauses are logged (they stall every socket of a worker)."""

from __future__ import annotations

import gc

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from server.gc_pauses import keep_pauses_short, parse_thresholds, watch_pauses
from server.settings import Settings


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


def test_thresholds_parse_and_keep_pauses_short_sets_them():
    """FIELDSYNC_GC_THRESHOLDS is three positive integers; applying it freezes what exists."""
    assert parse_thresholds("2000,10,100") == (2000, 10, 100)
    for bad in ("2000,10", "0,10,100", "a,b,c"):
        with pytest.raises(ValueError, match="three positive integers"):
            parse_thresholds(bad)
    before = gc.get_threshold()
    try:
        keep_pauses_short((1234, 7, 89))
        assert gc.get_threshold() == (1234, 7, 89)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_a_bad_threshold_setting_fails_at_start_up():
    """A typo in the setting is refused when the settings are read."""
    with pytest.raises(ValidationError):
        Settings(gc_thresholds="2000,ten,100")
    assert Settings(gc_thresholds="700,10,10").gc_thresholds == "700,10,10"
