"""Tombstone compaction: drop tombstones every live device has already seen.

The horizon is the oldest checkpoint among devices that pulled within ``device_ttl``;
devices silent for longer do not hold compaction back and, when they return with a
checkpoint below the horizon, get ``resyncRequired`` from pull.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from db.entities import ENTITIES, EntityType
from db.queries.orgs import head_seq
from db.tables import devices, orgs

# Children before parents: their foreign keys point at the parent rows.
ORDER = list(reversed(EntityType))


@dataclass(frozen=True)
class CompactionResult:
    """What one tenant's compaction did."""

    horizon: int
    removed: int


async def compact(
    conn: AsyncConnection, org_id: UUID, *, device_ttl: timedelta = timedelta(days=30)
) -> CompactionResult:
    """Remove the tenant's tombstones at or below the horizon and record the horizon."""
    cutoff = datetime.now(UTC) - device_ttl
    oldest = (
        await conn.execute(
            select(func.min(devices.c.checkpoint_seq)).where(
                devices.c.org_id == org_id,
                devices.c.active.is_(True),
                devices.c.last_pull_at >= cutoff,
            )
        )
    ).scalar_one()
    horizon = int(oldest) if oldest is not None else await head_seq(conn, org_id)
    removed = 0
    for entity in ORDER:
        table = ENTITIES[entity].table
        result = await conn.execute(
            delete(table).where(
                table.c.org_id == org_id, table.c.deleted.is_(True), table.c.seq <= horizon
            )
        )
        removed += result.rowcount or 0
    await conn.execute(
        update(orgs)
        .where(orgs.c.org_id == org_id)
        .values(compacted_seq=func.greatest(orgs.c.compacted_seq, horizon))
    )
    return CompactionResult(horizon=horizon, removed=removed)
