"""Current records as a pull sends them to a device, looked up by (entity, id): a push's
answers.

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

from collections.abc import Iterable
from uuid import UUID

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection

from db import raw
from db.entities import ENTITIES, EntitySpec, EntityType
from db.pull import PulledChange, _change, _part_columns
from db.write_path import Row

Key = tuple[EntityType, UUID]

# Whether the device may see a record: its customer is not archived and, for a device in
# SELECTED mode, selected by it (what a pull would send it). ``$3`` is the device.
_SELECTED = (
    " AND EXISTS (SELECT 1 FROM device_customers dc WHERE dc.org_id = c.org_id"
    " AND dc.device_id = $3 AND dc.customer_id = c.id AND dc.selected IS true)"
)


def _visible(spec: EntitySpec, selected: bool) -> str:
    rule = "c.archived IS false" + (_SELECTED if selected else "")
    if spec.type is EntityType.CUSTOMER:
        return f"(SELECT {rule} FROM customers c WHERE c.org_id = t.org_id AND c.id = t.id)"
    return (
        f"EXISTS (SELECT 1 FROM customers c WHERE c.org_id = t.org_id"
        f" AND c.id = t.customer_id AND {rule})"
    )


# One statement per type and selection mode: primary-key lookups of the records' current
# rows (tombstones included) in a page's row layout, and after it whether the device may
# see each (one round trip, where a second statement over the customers cost another).
# The seq column is the row's own (a pull may send a later, effective seq; no
# device-visible field of a Change holds it).
_BY_IDS = {
    (spec.type, selected): f"SELECT {_part_columns(spec, 't.seq')},"
    f" {_visible(spec, selected)} AS visible FROM {spec.table.name} t"
    " WHERE t.org_id = $1 AND t.id = ANY($2::uuid[])"
    for spec in ENTITIES.values()
    for selected in (False, True)
}


async def current_rows(
    conn: AsyncConnection, org_id: UUID, device: Row, keys: Iterable[Key]
) -> list[asyncpg.Record]:
    """The current row of each key that exists, in a page's layout plus ``visible``: what
    :func:`changes_from_rows` makes the records the device is sent (read and made apart, so
    a caller may send its next statement before it spends the Python on them)."""
    wanted: dict[EntityType, set[UUID]] = {}
    for entity, record_id in keys:
        wanted.setdefault(entity, set()).add(record_id)
    selected = device["selection_mode"] == "SELECTED"
    found: list[asyncpg.Record] = []
    for entity, ids in wanted.items():
        statement = _BY_IDS[(entity, selected)]
        args = (org_id, list(ids), device["id"]) if selected else (org_id, list(ids))
        found.extend(await raw.fetch(conn, statement, *args))
    return found


def changes_from_rows(rows: Iterable[asyncpg.Record]) -> dict[Key, PulledChange]:
    """The current record of each row of :func:`current_rows`, as the device is sent it: a
    tombstone for a deleted one; for one the device may not see (its customer archived, or
    not in its selection), an eviction."""
    found: dict[Key, PulledChange] = {}
    for row in rows:
        change = _change(row)
        if not change.deleted and not row["visible"]:
            change = change._replace(evict=True, data=None)
        found[(change.entity, change.record_id)] = change
    return found
