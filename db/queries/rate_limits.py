"""Sliding-window rate limits shared by every worker and instance (table rate_limit_events)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from db.tables.rate_limits import rate_limit_events as events


@dataclass(frozen=True)
class Taken:
    """An attempt counted in the window; ``event_id`` lets a success give it back."""

    event_id: int


@dataclass(frozen=True)
class Refused:
    """The window is full; trying again helps after ``retry_after_seconds``."""

    limit: int
    retry_after_seconds: int


def digest(key: str) -> str:
    """The stored form of a key: emails and addresses are not kept in clear."""
    return hashlib.sha256(key.encode()).hexdigest()


async def take(
    conn: AsyncConnection, kind: str, key: str, *, limit: int, window_seconds: int
) -> Taken | Refused:
    """Count one attempt of ``kind`` by ``key`` unless ``limit`` are already in the window.

    A transaction-scoped advisory lock per (kind, key) serialises concurrent attempts, so
    parallel requests cannot all pass a nearly full window.
    """
    hashed = digest(key)
    await conn.execute(
        select(func.pg_advisory_xact_lock(func.hashtextextended(f"{kind}:{hashed}", 0)))
    )
    since = func.now() - timedelta(seconds=window_seconds)
    # Pruning here keeps the table as small as the live windows.
    await conn.execute(
        delete(events).where(events.c.kind == kind, events.c.key == hashed, events.c.at <= since)
    )
    count, oldest, now = (
        await conn.execute(
            select(func.count(), func.min(events.c.at), func.now()).where(
                events.c.kind == kind, events.c.key == hashed
            )
        )
    ).one()
    if count >= limit:
        wait = window_seconds - (now - oldest).total_seconds() if oldest else 1
        return Refused(limit, max(1, int(wait) + 1))
    event_id = (
        await conn.execute(insert(events).values(kind=kind, key=hashed).returning(events.c.id))
    ).scalar_one()
    return Taken(int(event_id))


async def give_back(conn: AsyncConnection, taken: Taken) -> None:
    """Uncount an attempt (a successful login counts against no limit)."""
    await conn.execute(delete(events).where(events.c.id == taken.event_id))
