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

from sqlalchemy import BigInteger, Integer, bindparam, text
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


# The row's customer was visible to the device before the pull began. Primary-key lookups
# per row (not a join against the selection), so the seq-ordered index scan can stop
# after one page whatever the number of customers.
VISIBLE_BEFORE = """
  SELECT 1 FROM customers c
  WHERE c.org_id = t.org_id AND c.id = t.customer_id AND NOT c.archived AND (
    (:mode = 'ALL' AND GREATEST(:mode_since, c.restored_seq) <= :since)
    OR (:mode = 'SELECTED' AND EXISTS (
      SELECT 1 FROM device_customers dc
      WHERE dc.org_id = c.org_id AND dc.device_id = :device AND dc.customer_id = c.id
        AND dc.selected AND GREATEST(dc.changed_seq, c.restored_seq) <= :since)))"""


def _changed_rows(spec: EntitySpec) -> str:
    """Rows of customers visible since before the pull began that changed after it.

    Their effective seq is their own (unique) seq, so an index range scan on (org_id, seq)
    serves the page and stops after ``fetch`` rows.
    """
    rank = RANK[spec.type]
    return f"""
    (SELECT {rank} AS rank, t.id, t.customer_id, t.deleted, t.version, t.seq AS eseq
     FROM {spec.table.name} t
     WHERE t.org_id = :org AND t.seq > GREATEST(:since, :after_seq) AND t.seq <= :head
       AND (NOT t.deleted OR :since > 0)
       AND EXISTS ({VISIBLE_BEFORE})
     ORDER BY t.seq
     LIMIT :fetch)"""


def _backfilled_rows(spec: EntitySpec) -> str:
    """Rows of customers that became visible after the pull began: all live rows (and
    tombstones newer than the pull's start), at the seq the customer became visible."""
    rank = RANK[spec.type]
    eseq = "GREATEST(t.seq, n.since)"
    return f"""
    (SELECT {rank} AS rank, t.id, t.customer_id, t.deleted, t.version, {eseq} AS eseq
     FROM {spec.table.name} t JOIN sel n ON n.customer_id = t.customer_id AND n.since > :since
     WHERE t.org_id = :org AND (NOT t.deleted OR (t.seq > :since AND :since > 0))
       AND {eseq} <= :head
       AND ({eseq}, {rank}, t.id) > (:after_seq, :after_rank, :after_id)
     ORDER BY {eseq}, t.id
     LIMIT :fetch)"""


def _data_lookup(spec: EntitySpec) -> str:
    rank = RANK[spec.type]
    return (
        f"WHEN p.rank = {rank} THEN (SELECT {_data_expression(spec)} FROM {spec.table.name} t"
        " WHERE t.org_id = :org AND t.id = p.id)"
    )


# Visible customers of a device with the seq since which they are visible to it. Archived
# customers are not visible (their data is evicted); deleted ones stay so the tombstone
# reaches the device.
SELECTION = """
WITH sel AS MATERIALIZED (
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

# The page is chosen on keys alone (each part walks an index and stops early); the JSON of
# the record is built only for the rows that made the page.
PAGE_SQL = text(
    SELECTION
    + ", page AS (SELECT * FROM ("
    + " UNION ALL ".join(
        part(spec) for spec in ENTITIES.values() for part in (_changed_rows, _backfilled_rows)
    )
    + ") u ORDER BY eseq, rank, id LIMIT :fetch)"
    + " SELECT p.*, CASE WHEN p.deleted THEN NULL "
    + " ".join(_data_lookup(spec) for spec in ENTITIES.values())
    + " END AS data FROM page p ORDER BY p.eseq, p.rank, p.id"
).bindparams(
    *(bindparam(name, type_=BigInteger) for name in ("since", "after_seq", "head", "mode_since")),
    bindparam("after_rank", type_=Integer),
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
