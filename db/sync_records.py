"""Current records as a pull sends them, looked up by (entity, id), and whether a device
may see them: a push's answers.

A push returns with each outcome the record as it now stands, and a device stores it
exactly as it stores a pulled change. So it is read the way a pull page reads it: the same
select list (``db.pull._part_columns``: keys, then the record's fields as the same JSON
text) turned into a ``PulledChange`` by the same ``db.pull._change``. Whatever a pull puts
in ``data`` (its keys, the types of its values, how they are completed), a push answer
carries too, byte for byte; ``tests/api/test_push_records.py`` compares them.

The rows a push already holds in memory are not used: they are Python values before
PostgreSQL stored them (jsonb keys in the order the patch gave them, where a stored
document has PostgreSQL's order; timestamps in the writer's time zone), so their JSON
could differ from what the next pull sends.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection

from db import raw
from db.entities import ENTITIES, EntityType
from db.pull import PulledChange, _change, _part_columns
from db.write_path import Row

Key = tuple[EntityType, UUID]

# One statement per type: primary-key lookups of the records' current rows (tombstones
# included), in a page's row layout. The seq column is the row's own (a pull may send a
# later, effective seq; no device-visible field of a Change holds it).
_BY_IDS = {
    spec.type: f"SELECT {_part_columns(spec, 't.seq')} FROM {spec.table.name} t"
    " WHERE t.org_id = $1 AND t.id = ANY($2::uuid[])"
    for spec in ENTITIES.values()
}


async def current_changes(
    conn: AsyncConnection, org_id: UUID, keys: Iterable[Key]
) -> dict[Key, PulledChange]:
    """The current record of each key that exists (a tombstone for a deleted one)."""
    wanted: dict[EntityType, set[UUID]] = {}
    for entity, record_id in keys:
        wanted.setdefault(entity, set()).add(record_id)
    found: dict[Key, PulledChange] = {}
    for entity, ids in wanted.items():
        rows = await raw.fetch(conn, _BY_IDS[entity], org_id, list(ids))
        for row in rows:
            change = _change(row)
            found[(entity, change.record_id)] = change
    return found


# Which of the records' customers the device may see (not archived, and selected in
# SELECTED mode): what a pull would send it. One fixed text per mode, the ids as one array
# (as an IN list, a thousand ids were a thousand parameters and a new statement whenever
# their count changed).
_VISIBLE = (
    "SELECT c.id FROM customers c"
    " WHERE c.org_id = $1 AND c.id = ANY($2::uuid[]) AND c.archived IS false"
)
_VISIBLE_SELECTED = _VISIBLE + (
    " AND EXISTS (SELECT 1 FROM device_customers dc WHERE dc.org_id = c.org_id"
    " AND dc.device_id = $3 AND dc.customer_id = c.id AND dc.selected IS true)"
)


async def visible_customer_ids(
    conn: AsyncConnection, org_id: UUID, device: Row, customer_ids: Collection[UUID]
) -> set[UUID]:
    """Which of ``customer_ids`` the device may see records of: not archived, and selected
    when the device is in SELECTED mode (what a pull would send it)."""
    if not customer_ids:
        return set()
    if device["selection_mode"] == "SELECTED":
        rows = await raw.fetch(conn, _VISIBLE_SELECTED, org_id, list(customer_ids), device["id"])
    else:
        rows = await raw.fetch(conn, _VISIBLE, org_id, list(customer_ids))
    return {row[0] for row in rows}
