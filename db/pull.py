"""Pull pages: every change for a device's selection after a checkpoint, in seq order.

One SQL statement builds a page across all synced tables. A row's *effective seq* is the
larger of its own seq and the seq at which its customer became visible to the device
(selected, ALL mode began, or re-enabled); rows of a customer that became visible after the
checkpoint arrive whole (live rows only), the rest only when they changed after it.
Ordering by (effective seq, entity rank, id) makes pages resumable inside a backfill.
Rows are bounded by the tenant's head seq read first: seq order is commit order, so every
row at or below the head is committed and nothing later can appear below it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from db.entities import ENTITIES, EntitySpec, EntityType
from db.queries.orgs import head_seq
from sync.checkpoint import Checkpoint
from sync.validation import camel

RANK: dict[EntityType, int] = {t: i for i, t in enumerate(EntityType)}
BY_RANK: dict[int, EntityType] = {i: t for t, i in RANK.items()}


@dataclass(frozen=True)
class PulledChange:
    """One change as a device receives it."""

    entity: EntityType
    record_id: UUID
    customer_id: UUID
    deleted: bool
    version: dict[str, int]
    seq: int
    data: dict[str, Any] | None


@dataclass(frozen=True)
class PullPage:
    """A page, where it ends, and what else the device must do."""

    changes: list[PulledChange]
    checkpoint: Checkpoint
    has_more: bool
    head: int
    evicted_customer_ids: list[UUID]
    resync_required: bool


def _data_expression(spec: EntitySpec) -> str:
    pairs = [f"'{camel(link)}', t.{link}" for link in spec.links]
    pairs += [f"'{camel(f)}', t.{f}" for f in spec.fields if f not in spec.private_fields]
    return "jsonb_build_object(" + ", ".join(pairs) + ")"


def _entity_select(spec: EntitySpec) -> str:
    table = spec.table.name
    rank = RANK[spec.type]
    return f"""
    (SELECT {rank} AS rank, t.id, t.customer_id, t.deleted, t.version,
            GREATEST(t.seq, sel.since) AS eseq,
            CASE WHEN t.deleted THEN NULL ELSE {_data_expression(spec)} END AS data
     FROM {table} t JOIN sel ON sel.customer_id = t.customer_id
     WHERE t.org_id = :org
       AND ((t.seq > :since AND (NOT t.deleted OR :since > 0))
            OR (sel.since > :since AND NOT t.deleted))
       AND (GREATEST(t.seq, sel.since), {rank}, t.id) > (:after_seq, :after_rank, :after_id)
       AND GREATEST(t.seq, sel.since) <= :head
     ORDER BY GREATEST(t.seq, sel.since), t.id
     LIMIT :fetch)"""


# Visible customers of a device with the seq since which they are visible to it. Archived
# customers are not visible (their data is evicted); deleted ones stay so the tombstone
# reaches the device.
SELECTION = """
WITH sel AS (
  SELECT c.id AS customer_id, GREATEST(:mode_since, c.restored_seq) AS since
  FROM customers c
  WHERE c.org_id = :org AND :mode = 'ALL' AND NOT c.archived
  UNION ALL
  SELECT c.id, GREATEST(dc.changed_seq, c.restored_seq)
  FROM device_customers dc
  JOIN customers c ON c.org_id = dc.org_id AND c.id = dc.customer_id
  WHERE dc.org_id = :org AND dc.device_id = :device AND :mode = 'SELECTED'
    AND dc.selected AND NOT c.archived
)
"""

PAGE_SQL = text(
    SELECTION
    + "SELECT * FROM ("
    + " UNION ALL ".join(_entity_select(spec) for spec in ENTITIES.values())
    + ") page ORDER BY eseq, rank, id LIMIT :fetch"
)

EVICTIONS_SQL = text(
    """
    SELECT dc.customer_id FROM device_customers dc
    WHERE dc.org_id = :org AND dc.device_id = :device AND NOT dc.selected
      AND :mode = 'SELECTED' AND dc.changed_seq > :since AND dc.changed_seq <= :head
    UNION
    SELECT c.id FROM customers c
    WHERE c.org_id = :org AND c.archived AND c.seq > :since AND c.seq <= :head
      AND (:mode = 'ALL' OR EXISTS (
        SELECT 1 FROM device_customers dc WHERE dc.org_id = c.org_id
          AND dc.device_id = :device AND dc.customer_id = c.id))
    UNION
    SELECT c.id FROM customers c
    WHERE c.org_id = :org AND :mode = 'SELECTED' AND :mode_since > :since
      AND NOT c.deleted AND NOT EXISTS (
        SELECT 1 FROM device_customers dc WHERE dc.org_id = c.org_id
          AND dc.device_id = :device AND dc.customer_id = c.id AND dc.selected)
    """
)


async def pull_page(
    conn: AsyncConnection,
    *,
    org_id: UUID,
    device: dict[str, Any],
    since: Checkpoint,
    limit: int,
    compacted_seq: int,
) -> PullPage:
    """One page of changes after ``since`` for ``device``'s selection."""
    head = await head_seq(conn, org_id)
    if 0 < since.since < compacted_seq:
        return PullPage([], since, False, head, [], resync_required=True)
    params = {
        "org": org_id,
        "device": device["id"],
        "mode": device["selection_mode"],
        "mode_since": device["mode_since_seq"],
        # Which rows are due is decided against the seq the pull started from, on every
        # page; the (seq, rank, id) keyset skips what earlier pages delivered.
        "since": since.since,
        "head": head,
        "after_seq": since.seq,
        "after_rank": since.rank if not since.at_boundary else len(RANK),
        "after_id": since.record_id or UUID(int=0),
        "fetch": limit + 1,
    }
    rows = (await conn.execute(PAGE_SQL, params)).mappings().all()
    has_more = len(rows) > limit
    rows = rows[:limit]
    changes = [
        PulledChange(
            entity=BY_RANK[r["rank"]],
            record_id=r["id"],
            customer_id=r["customer_id"],
            deleted=r["deleted"],
            version=r["version"],
            seq=int(r["eseq"]),
            data=r["data"],
        )
        for r in rows
    ]
    if has_more:
        last = rows[-1]
        checkpoint = Checkpoint(int(last["eseq"]), int(last["rank"]), last["id"], since.since)
    else:
        checkpoint = Checkpoint(max(head, since.seq))
    evicted: list[UUID] = []
    if since.at_boundary:
        evicted = list((await conn.execute(EVICTIONS_SQL, params)).scalars())
    return PullPage(changes, checkpoint, has_more, head, evicted, resync_required=False)
