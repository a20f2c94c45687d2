"""The device status is derived from facts and is green only when true."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sync.sync_status import DeviceFacts, SyncStatus, stale_after, status

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def facts(**overrides):
    base = {
        "checkpoint_seq": 10,
        "head_seq": 10,
        "last_pull_at": NOW - timedelta(minutes=5),
        "pending_changes": 0,
        "open_conflicts": 0,
        "longest_auto_sync_seconds": 900,
    }
    return DeviceFacts(**{**base, **overrides})


class TestStatus:
    @pytest.mark.parametrize(
        ("overrides", "expected"),
        [
            ({}, SyncStatus.SYNCED),
            ({"last_pull_at": None}, SyncStatus.NEVER_SYNCED),
            ({"open_conflicts": 1}, SyncStatus.CONFLICTS),
            ({"checkpoint_seq": 9}, SyncStatus.BEHIND),
            ({"pending_changes": 2}, SyncStatus.BEHIND),
            ({"last_pull_at": NOW - timedelta(hours=2)}, SyncStatus.STALE),
            ({"last_pull_at": NOW - timedelta(hours=2), "open_conflicts": 1}, SyncStatus.CONFLICTS),
        ],
    )
    def test_each_status(self, overrides, expected):
        """Each fact moves the status away from SYNCED in a fixed order of importance."""
        assert status(facts(**overrides), NOW) is expected

    def test_stale_threshold_follows_the_devices_own_interval(self):
        """Two missed intervals (at least an hour) make a device stale; a day without any."""
        assert stale_after(900) == timedelta(hours=1)
        assert stale_after(7200) == timedelta(hours=4)
        assert stale_after(None) == timedelta(hours=24)
