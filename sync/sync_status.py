"""A device's sync status, derived from facts the server has. Green only when true."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

DEFAULT_STALE_AFTER = timedelta(hours=24)


class SyncStatus(enum.Enum):
    """What the status icon shows."""

    SYNCED = "SYNCED"
    BEHIND = "BEHIND"
    CONFLICTS = "CONFLICTS"
    NEVER_SYNCED = "NEVER_SYNCED"
    STALE = "STALE"


@dataclass(frozen=True)
class DeviceFacts:
    """What the server knows of a device."""

    checkpoint_seq: int
    head_seq: int
    last_pull_at: datetime | None
    pending_changes: int
    open_conflicts: int
    longest_auto_sync_seconds: int | None


def stale_after(longest_auto_sync_seconds: int | None) -> timedelta:
    """A device is stale after missing two of its own longest auto-sync intervals (at
    least an hour), or a day when it reported none."""
    if not longest_auto_sync_seconds:
        return DEFAULT_STALE_AFTER
    return max(timedelta(hours=1), timedelta(seconds=2 * longest_auto_sync_seconds))


def status(facts: DeviceFacts, now: datetime) -> SyncStatus:
    """NEVER_SYNCED before the first pull; CONFLICTS while any is open; STALE when it has
    not pulled for too long; BEHIND while changes or its own edits wait; else SYNCED."""
    if facts.last_pull_at is None:
        return SyncStatus.NEVER_SYNCED
    if facts.open_conflicts > 0:
        return SyncStatus.CONFLICTS
    if now - facts.last_pull_at > stale_after(facts.longest_auto_sync_seconds):
        return SyncStatus.STALE
    if facts.checkpoint_seq < facts.head_seq or facts.pending_changes > 0:
        return SyncStatus.BEHIND
    return SyncStatus.SYNCED
