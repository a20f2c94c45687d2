"""Tombstone compaction: drop the data of tombstones every live device has already seen.

The horizon is the oldest checkpoint among devices that pulled within ``device_ttl``;
devices silent for longer do not hold compaction back and, when they return with a
checkpoint below the horizon, their feed starts over (a pull page marked ``reset``).

A compacted tombstone keeps its row (id, links, version, seq, ``deleted``) and loses
everything else: its fields are cleared and its field dots emptied (which marks it
compacted). Removing the row would forget that the id was ever deleted, and a device
pushing an UPSERT of that id without a base (a create retried, a phone restored from an
old backup) would bring the record back; with the row kept the push is answered
``DELETED``, as before compaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from db.entities import ENTITIES, EntitySpec, EntityType
from db.queries.orgs import head_seq
from db.tables import devices, orgs


def cleared_values(spec: EntitySpec) -> dict[str, Any]:
    """The values of a compacted tombstone's fields: NULL where the column allows it, else
    the entity's default (empty lists and objects, false), else an empty string."""
    values: dict[str, Any] = {}
    for name in spec.fields:
        column = spec.table.c[name]
        if column.nullable:
            values[name] = None
        elif name in spec.defaults:
            values[name] = spec.new_row_defaults()[name]
        else:
            values[name] = ""
    return values


@dataclass(frozen=True)
class CompactionResult:
    """What one tenant's compaction did."""

    horizon: int
    removed: int


async def compact(
    conn: AsyncConnection, org_id: UUID, *, device_ttl: timedelta = timedelta(days=30)
) -> CompactionResult:
    """Clear the tenant's tombstones at or below the horizon and record the horizon.

    ``removed`` counts the tombstones compacted by this run (each is compacted once).
    """
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
    for entity in EntityType:
        table = ENTITIES[entity].table
        result = await conn.execute(
            update(table)
            .where(
                table.c.org_id == org_id,
                table.c.deleted.is_(True),
                table.c.seq <= horizon,
                table.c.field_dots != text("'{}'::jsonb"),
            )
            .values(**cleared_values(ENTITIES[entity]), field_dots={})
        )
        removed += result.rowcount or 0
    await conn.execute(
        update(orgs)
        .where(orgs.c.org_id == org_id)
        .values(compacted_seq=func.greatest(orgs.c.compacted_seq, horizon))
    )
    return CompactionResult(horizon=horizon, removed=removed)
