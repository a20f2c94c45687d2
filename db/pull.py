"""Pull pages: every change of one feed for a device's selection after a checkpoint.

A feed is the stream of a set of record types (``sync/checkpoint.py``); one SQL statement
builds a page across the feed's tables. A row's *effective seq* is the larger of its own seq
and the seq at which its customer became visible to the device (selected, ALL mode began, or
re-enabled); rows of a customer that became visible after the checkpoint arrive whole (live
rows only), the rest only when they changed after it. A customer that left the device's view
after the checkpoint (unselected, archived, not chosen when the device switched from ALL to
SELECTED) sends its rows as evictions at the seq it left; one that also came back is evicted
first, then sent whole. Ordering by (effective seq, kind, entity rank, id), evictions being
the first kind, makes pages resumable inside a group. Rows are bounded by the tenant's head
seq read first: seq order is commit order, so every row at or below the head is committed and
nothing later can appear below it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple
from uuid import UUID

import asyncpg
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.ext.asyncio import AsyncConnection

from db import raw
from db.engine import SET_READ_PLANNING
from db.entities import ENTITIES, EntitySpec, EntityType
from sync import record_shape
from sync.checkpoint import EVICTION, RECORD, Checkpoint
from sync.record_shape import UNSYNCED_FIELDS
from sync.validation import camel

RANK: dict[EntityType, int] = {t: i for i, t in enumerate(EntityType)}
BY_RANK: dict[int, EntityType] = {i: t for t, i in RANK.items()}


class PulledChange(NamedTuple):
    """One change as a device receives it (a tuple: a page builds a thousand of them)."""

    entity: EntityType
    record_id: UUID
    customer_id: UUID
    deleted: bool
    version: dict[str, int]
    seq: int
    data: dict[str, Any] | None
    # The record left the device's view (its customer did): drop the local copy; the record
    # still exists. Evictions carry no data.
    evict: bool = False


@dataclass(frozen=True)
class PullPage:
    """A page, where it ends, and whether the feed started over."""

    changes: list[PulledChange]
    checkpoint: Checkpoint
    has_more: bool
    head: int
    # The checkpoint was older than the compaction horizon: this is the feed's first page,
    # and the device drops what it holds of the feed's types before applying it.
    reset: bool


def data_expression(spec: EntitySpec) -> str:
    """The record's fields as one jsonb, as a device receives them (alias ``t``)."""
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
    serves the page and stops after ``fetch`` rows. No customer can have been visible
    before the pull if the device's ALL mode is newer than it, or, in SELECTED mode, on a
    first pull (every selection has a seq): then the part is pruned when planned instead
    of walking every row of the table to find none (a first pull of 10 selected customers
    took 0.3 s on 100,000 assets).
    """
    return f"""
    (SELECT {_part_columns(spec, "t.seq")}
     FROM {spec.table.name} t
     WHERE t.org_id = :org AND t.seq > GREATEST(:since, :after_seq) AND t.seq <= :head
       AND (NOT t.deleted OR :since > 0)
       AND ((:mode = 'ALL' AND :mode_since <= :since) OR (:mode = 'SELECTED' AND :since > 0))
       AND EXISTS ({VISIBLE_BEFORE})
     ORDER BY t.seq
     LIMIT :fetch)"""


def _backfilled_rows(spec: EntitySpec) -> str:
    """Rows of customers that became visible after the pull began: all live rows (and
    tombstones newer than the pull's start), at the seq the customer became visible.

    These are sorted rather than read in index order, so the page's keys are chosen first
    and only the chosen rows' records are read (a sort of wide rows cost 25% more).
    """
    rank = RANK[spec.type]
    eseq = "GREATEST(b.seq, n.since)"
    return f"""
    (SELECT {_part_columns(spec, "k.eseq")}
     FROM (SELECT b.id, {eseq} AS eseq
           FROM {spec.table.name} b
           JOIN sel n ON n.customer_id = b.customer_id AND n.since > :since
           WHERE b.org_id = :org AND (NOT b.deleted OR (b.seq > :since AND :since > 0))
             AND {eseq} <= :head
             AND ({eseq}, {RECORD}, {rank}, b.id)
               > (:after_seq, :after_kind, :after_rank, :after_id)
           ORDER BY {eseq}, b.id
           LIMIT :fetch) k
     JOIN {spec.table.name} t ON t.org_id = :org AND t.id = k.id
     ORDER BY k.eseq, t.id
     LIMIT :fetch)"""


def _evicted_rows(spec: EntitySpec) -> str:
    """Rows of customers that left the device's view after the pull began, as evictions at
    the seq they left: the live ones, and tombstones newer than the pull's start (the
    device may hold the record) as deletes, unless the customer came back (then its backfill
    sends them). Keys only, read from the customer-id index: an eviction carries no data.

    A first pull (since 0) holds nothing to evict: the part is pruned when planned.
    """
    rank = RANK[spec.type]
    # A customer row is its own customer; the table has no customer_id index.
    owner = "b.id" if spec.type is EntityType.CUSTOMER else "b.customer_id"
    return f"""
    (SELECT {_part_columns(spec, "g.eseq", kind=EVICTION, alias="b")}
     FROM gone g
     JOIN {spec.table.name} b ON b.org_id = :org AND {owner} = g.customer_id
     WHERE :since > 0 AND (NOT b.deleted OR (b.seq > :since AND NOT g.back))
       AND (g.eseq, {EVICTION}, {rank}, b.id) > (:after_seq, :after_kind, :after_rank, :after_id)
     ORDER BY g.eseq, b.id
     LIMIT :fetch)"""


# Customers that became visible to a device after the pull's checkpoint, with the seq
# since which they are visible (the device selected them, its ALL mode began, or they were
# re-enabled) and the seq they were last re-enabled at. Archived customers are not visible
# (their data is evicted); deleted ones stay so the tombstone reaches the device. The ALL
# branches are split so that, once the mode is older than the checkpoint, only re-enabled
# customers are read (by index).
SELECTION = """
WITH sel AS MATERIALIZED (
  SELECT c.id AS customer_id, GREATEST(:mode_since, c.restored_seq) AS since,
    c.restored_seq AS restored
  FROM customers c
  WHERE c.org_id = :org AND :mode = 'ALL' AND :mode_since > :since AND NOT c.archived
  UNION ALL
  SELECT c.id, c.restored_seq, c.restored_seq
  FROM customers c
  WHERE c.org_id = :org AND :mode = 'ALL' AND :mode_since <= :since
    AND c.restored_seq > :since AND NOT c.archived
  UNION ALL
  SELECT c.id, GREATEST(dc.changed_seq, c.restored_seq), c.restored_seq
  FROM device_customers dc
  JOIN customers c ON c.org_id = dc.org_id AND c.id = dc.customer_id
  WHERE dc.org_id = :org AND dc.device_id = :device AND :mode = 'SELECTED'
    AND dc.selected AND NOT c.archived AND GREATEST(dc.changed_seq, c.restored_seq) > :since
)
"""

# Customers that left the device's view after the pull's checkpoint, with the last seq they
# left at and whether they are back (visible again: their backfill follows the evictions).
# One may leave in several ways; each branch gives a seq it was out of view at, and the
# latest one wins:
#   1. unselected (SELECTED mode);
#   2. dropped by the device's selection, even if selected again or back in ALL mode since
#      (``left_seq``, kept by ``set_selection``);
#   3. not chosen when the device last switched from ALL to SELECTED: no selection row then
#      (a row selected at or before the switch, or unselected after it, was chosen). Customers
#      deleted or archived before the checkpoint were not held;
#   4. archived (a device in SELECTED mode held it only if it ever selected it);
#   5. re-enabled: archived at some seq before, perhaps after the checkpoint; dropped first
#      at the seq it came back (a device that already dropped it drops nothing).
# A first pull (since 0) holds nothing to evict: a new device with 10 selected customers
# was once sent the other 4,990 as evictions.
GONE = """
, gone AS MATERIALIZED (
  SELECT g.customer_id, max(g.eseq) AS eseq,
    EXISTS (SELECT 1 FROM sel s WHERE s.customer_id = g.customer_id) AS back
  FROM (
    SELECT dc.customer_id, dc.changed_seq AS eseq
    FROM device_customers dc
    WHERE dc.org_id = :org AND dc.device_id = :device AND :mode = 'SELECTED'
      AND NOT dc.selected AND dc.changed_seq > :since AND dc.changed_seq <= :head
    UNION ALL
    SELECT dc.customer_id, dc.left_seq
    FROM device_customers dc
    WHERE dc.org_id = :org AND dc.device_id = :device
      AND dc.left_seq > :since AND dc.left_seq <= :head
    UNION ALL
    SELECT c.id, :selected_since
    FROM customers c
    WHERE c.org_id = :org AND :selected_since > :since AND :selected_since <= :head
      AND NOT ((c.archived OR c.deleted) AND c.seq <= :since)
      AND NOT EXISTS (
        SELECT 1 FROM device_customers dc
        WHERE dc.org_id = c.org_id AND dc.device_id = :device AND dc.customer_id = c.id
          AND dc.selected = (dc.changed_seq <= :selected_since))
    UNION ALL
    SELECT c.id, c.seq
    FROM customers c
    WHERE c.org_id = :org AND c.archived AND c.seq > :since AND c.seq <= :head
      AND (:mode = 'ALL' OR EXISTS (
        SELECT 1 FROM device_customers dc WHERE dc.org_id = c.org_id
          AND dc.device_id = :device AND dc.customer_id = c.id))
    UNION ALL
    SELECT s.customer_id, s.restored
    FROM sel s
    WHERE s.restored > :since AND s.restored <= :head
  ) g
  WHERE :since > 0
  GROUP BY g.customer_id
)
"""


POSTGRESQL = PGDialect()  # type: ignore[no-untyped-call]  # sqlalchemy leaves __init__ untyped


def _data_columns(spec: EntitySpec) -> list[tuple[str, str, str]]:
    """(key, column, SQL type) of the fields a device receives; links as text (API ids).

    Fields outside the sync shape (``sync/record_shape.py``: a customer's ``archived``)
    are not read at all.
    """
    unsynced = UNSYNCED_FIELDS.get(spec.type.value, frozenset())
    columns = [(camel(link), link, "text") for link in spec.links]
    columns += [
        (camel(f), f, spec.table.c[f].type.compile(dialect=POSTGRESQL))
        for f in spec.fields
        if f not in spec.private_fields and f not in unsynced
    ]
    return columns


DATA_COLUMNS = {spec.type: _data_columns(spec) for spec in ENTITIES.values()}
DATA_KEYS = {
    entity: tuple(key for key, _, _ in columns) for entity, columns in DATA_COLUMNS.items()
}
# A page row: seven key columns, then every entity's data columns (NULL but for its own).
KEY_COLUMNS = ("rank", "id", "customer_id", "deleted", "version", "eseq", "kind")
DATA_OFFSETS: dict[EntityType, int] = {}
_offset = len(KEY_COLUMNS)
for _type, _columns in DATA_COLUMNS.items():
    DATA_OFFSETS[_type] = _offset
    _offset += len(_columns)


def _part_columns(spec: EntitySpec, eseq: str, *, kind: int = RECORD, alias: str = "t") -> str:
    """A part's select list: keys, then its record's fields in its own slots.

    The record comes with the row the part's index scan already reads: the page costs no
    second lookup per row, and the fields travel as plain columns (decoding them and
    encoding JSON in the server is several times cheaper than PostgreSQL's json builders).
    An eviction (``kind``) reads no fields: every slot is NULL.
    """
    a = alias
    columns = [f"{RANK[spec.type]} AS rank", f"{a}.id", f"{a}.customer_id", f"{a}.deleted"]
    columns += [f"{a}.version", f"{eseq} AS eseq", f"{kind} AS kind"]
    for entity, fields in DATA_COLUMNS.items():
        for _, column, sql_type in fields:
            own = entity is spec.type and kind == RECORD
            value = f"{a}.{column}::{sql_type}" if own else f"NULL::{sql_type}"
            columns.append(f"{value} AS e{RANK[entity]}_{column}")
    return ", ".join(columns)


def page_sql(types: Collection[EntityType], *, evictions: bool = True) -> str:
    """The page statement of the feed of ``types`` (named parameters).

    Each part walks an index and stops early; Merge Append pulls from the parts only the
    rows the page takes. A feed's statement holds only its own types' parts, and a first
    pull's (``evictions`` False: it has nothing to evict) no eviction parts: pruned or not,
    every part costs planning time on every page (with them, an initial sync's page
    statements took 6-10% longer in total, measured page by page against the same data).
    """
    parts = [_evicted_rows] if evictions else []
    parts += [_changed_rows, _backfilled_rows]
    return (
        SELECTION
        + (GONE if evictions else "")
        + "SELECT * FROM ("
        + " UNION ALL ".join(
            part(spec) for spec in ENTITIES.values() if spec.type in types for part in parts
        )
        + ") u ORDER BY eseq, kind, rank, id LIMIT :fetch"
    )


PAGE_SQL = page_sql(tuple(EntityType))

# asyncpg takes numbered parameters; the casts spare PostgreSQL guessing (a bigint seq
# compared with a literal would otherwise be planned as an integer).
PARAM_TYPES = {
    "org": "uuid",
    "device": "uuid",
    "mode": "text",
    "mode_since": "bigint",
    "since": "bigint",
    "head": "bigint",
    "after_seq": "bigint",
    "after_rank": "integer",
    "after_id": "uuid",
    "fetch": "integer",
    "after_kind": "integer",
    "selected_since": "bigint",
}
PARAM_ORDER = tuple(PARAM_TYPES)


def positional(sql: str) -> str:
    """``sql`` with ``:name`` parameters as asyncpg's ``$n::type``, in PARAM_ORDER."""
    for number, name in enumerate(PARAM_ORDER, start=1):
        sql = re.sub(rf"(?<!:):{name}\b", f"${number}::{PARAM_TYPES[name]}", sql)
    return sql


PAGE_STATEMENT = positional(PAGE_SQL)


@lru_cache(maxsize=64)
def page_statement(
    types: frozenset[EntityType], *, evictions: bool = True
) -> tuple[str, tuple[str, ...]]:
    """The asyncpg page statement of the feed of ``types`` (31 feeds, two variants each)
    and the names of its parameters in order: PostgreSQL expects exactly as many as the
    statement numbers, and without evictions the last one (``selected_since``) is unused."""
    sql = PAGE_STATEMENT if evictions and types == frozenset(EntityType) else None
    if sql is None:
        sql = positional(page_sql(types, evictions=evictions))
    names = tuple(n for i, n in enumerate(PARAM_ORDER, start=1) if f"${i}::" in sql)
    assert names == PARAM_ORDER[: len(names)], names
    return sql, names


def page_parameters(
    org_id: UUID, device: dict[str, Any], since: Checkpoint, head: int, limit: int
) -> dict[str, Any]:
    """The page statement's parameters by name (PARAM_ORDER gives their positions)."""
    return {
        "org": org_id,
        "device": device["id"],
        "mode": device["selection_mode"],
        "mode_since": device["mode_since_seq"],
        "selected_since": device["selected_since_seq"],
        # Which rows are due is decided against the seq the pull started from, on every
        # page; the (seq, kind, rank, id) keyset skips what earlier pages delivered (at a
        # boundary: every row of that seq).
        "since": since.since,
        "head": head,
        "after_seq": since.seq,
        "after_kind": since.kind if not since.at_boundary else RECORD,
        "after_rank": since.rank if not since.at_boundary else len(RANK),
        "after_id": since.record_id or UUID(int=0),
        "fetch": limit + 1,
    }


async def pull_page(
    conn: AsyncConnection,
    *,
    org_id: UUID,
    device: dict[str, Any],
    since: Checkpoint,
    limit: int,
    compacted_seq: int,
    head: int,
    types: frozenset[EntityType] = frozenset(EntityType),
) -> PullPage:
    """One page of the feed of ``types`` after ``since`` for ``device``'s selection.

    ``since`` is a checkpoint of that feed; ``head`` is the tenant's head seq read in this
    transaction before the page. A checkpoint older than the compaction horizon starts the
    feed again (its tombstones up to the horizon are gone), marked ``reset``.
    """
    reset = 0 < since.since < compacted_seq
    if reset:
        since = Checkpoint(feed=since.feed)
    params = page_parameters(org_id, device, since, head, limit)
    # asyncpg prepares the statement; after five runs PostgreSQL may switch to a generic
    # plan, which cannot prune the parts by the parameters and scans every table whole per
    # page (110 pages of 1,000: 11.1 s instead of 3.3 s), so each page is planned for its
    # values. Each part stops after the few rows the page takes from it, which the planner
    # cannot know: with the default random_page_cost (4, a spinning disk) it prefers
    # hashing whole small tables to walking their seq index (17.6 ms a page instead of 5.8
    # on 5,000 customers).
    await raw.execute(conn, SET_READ_PLANNING)
    statement, names = page_statement(types, evictions=since.since > 0)
    rows = await raw.fetch(conn, statement, *(params[name] for name in names))
    has_more = len(rows) > limit
    rows = rows[:limit]
    changes = [_change(r) if r[6] == RECORD else _eviction(r) for r in rows]
    if has_more:
        last = rows[-1]
        checkpoint = Checkpoint(
            int(last["eseq"]),
            int(last["rank"]),
            last["id"],
            since.since,
            int(last["kind"]),
            since.feed,
        )
    else:
        # Even an empty page moves the device to the head: nothing of the feed's types lies
        # between its checkpoint and the head.
        checkpoint = Checkpoint(max(head, since.seq), feed=since.feed)
    return PullPage(changes, checkpoint, has_more, head, reset)


def _eviction(row: asyncpg.Record) -> PulledChange:
    """An eviction row as a change: keys only; a tombstone among them is a DELETE."""
    return PulledChange(BY_RANK[row[0]], row[1], row[2], row[3], row[4], row[5], None, not row[3])


# Per record type, what completes its stored values to the sync shape (settings with their
# defaults, addresses with every key); None for the types stored complete (assets: most of
# an initial sync), which then cost no call.
COMPLETERS = {entity: record_shape.COMPLETERS.get(entity.value) for entity in DATA_COLUMNS}


class _Layout(NamedTuple):
    """Where a page row of one record type holds its data, and what completes it."""

    entity: EntityType
    keys: tuple[str, ...]
    start: int
    end: int
    completer: Callable[[dict[str, Any]], None] | None


# By rank (a page row's first column): one lookup per row instead of four (an initial sync
# builds 110,000 changes).
LAYOUTS = tuple(
    _Layout(
        entity,
        DATA_KEYS[entity],
        DATA_OFFSETS[entity],
        DATA_OFFSETS[entity] + len(DATA_KEYS[entity]),
        COMPLETERS[entity],
    )
    for entity in sorted(RANK, key=RANK.__getitem__)
)
_pulled = PulledChange._make


def _change(row: asyncpg.Record) -> PulledChange:
    """A page row as the change a device receives, ``data`` in the sync shape."""
    entity, keys, start, end, completer = LAYOUTS[row[0]]
    data = None
    if not row[3]:
        # The slice is exactly as long as keys (LAYOUTS is built from the same columns).
        data = dict(zip(keys, row[start:end]))  # noqa: B905
        if completer is not None:
            completer(data)
    return _pulled((entity, row[1], row[2], row[3], row[4], row[5], data, False))
