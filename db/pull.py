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
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple
from uuid import UUID

import asyncpg
import orjson
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.ext.asyncio import AsyncConnection

from db import raw
from db.engine import READ_PLANNING
from db.entities import ENTITIES, EntitySpec, EntityType
from sync import record_shape
from sync.checkpoint import EVICTION, RECORD, Checkpoint
from sync.record_shape import UNSYNCED_FIELDS
from sync.validation import camel

RANK: dict[EntityType, int] = {t: i for i, t in enumerate(EntityType)}
BY_RANK: dict[int, EntityType] = {i: t for t, i in RANK.items()}

# A change's ``data``: its fields by API name, or, for a record type stored in its sync
# shape, the JSON text of them as PostgreSQL wrote it (``_data_json``), which orjson
# splices into a response as is. Both encode to the same JSON values.
RecordData = dict[str, Any] | orjson.Fragment


class PulledChange(NamedTuple):
    """One change as a device receives it (a tuple: a page builds a thousand of them)."""

    entity: EntityType
    record_id: UUID
    customer_id: UUID
    deleted: bool
    version: dict[str, int]
    seq: int
    data: RecordData | None
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
# after one page whatever the number of customers. The grouped statement's form; a pull's
# own statements test ALL mode against :data:`HIDDEN` instead.
VISIBLE_BEFORE = """
  SELECT 1 FROM customers c
  WHERE c.org_id = t.org_id AND c.id = t.customer_id AND NOT c.archived AND (
    (:mode = 'ALL' AND GREATEST(:mode_since, c.restored_seq) <= :since)
    OR (:mode = 'SELECTED' AND EXISTS (
      SELECT 1 FROM device_customers dc
      WHERE dc.org_id = c.org_id AND dc.device_id = :device AND dc.customer_id = c.id
        AND dc.selected AND GREATEST(dc.changed_seq, c.restored_seq) <= :since)))"""


# The same test for a device in SELECTED mode, against its selection only: with
# :data:`HIDDEN` for ALL mode (the pull's own statements).
SELECTED_BEFORE = """
  SELECT 1 FROM device_customers dc
  JOIN customers c ON c.org_id = dc.org_id AND c.id = dc.customer_id
  WHERE dc.org_id = t.org_id AND dc.device_id = :device AND dc.customer_id = t.customer_id
    AND dc.selected AND NOT c.archived AND GREATEST(dc.changed_seq, c.restored_seq) <= :since"""

# In ALL mode (older than the checkpoint), the customers not visible before the pull began:
# archived (``ix_customers_org_archived``, migration 0014), or re-enabled after the
# checkpoint. Few, read once per page by index and hashed, where VISIBLE_BEFORE looked each
# row's customer up: an initial sync's page statement ran in 2.9-3.0 ms instead of
# 4.3-4.5 (fastest of 25 runs each, quiet machine).
HIDDEN = """
hidden AS MATERIALIZED (
  SELECT c.id FROM customers c
  WHERE c.org_id = :org AND :mode = 'ALL' AND :mode_since <= :since AND c.archived
  UNION ALL
  SELECT c.id FROM customers c
  WHERE c.org_id = :org AND :mode = 'ALL' AND :mode_since <= :since
    AND c.restored_seq > :since AND c.restored_seq > 0 AND NOT c.archived)
"""


def _changed_rows(spec: EntitySpec, gate: str = "") -> str:
    """Rows of customers visible since before the pull began that changed after it.

    Their effective seq is their own (unique) seq, so an index range scan on (org_id, seq)
    serves the page and stops after ``fetch`` rows. No customer can have been visible
    before the pull if the device's ALL mode is newer than it, or, in SELECTED mode, on a
    first pull (every selection has a seq): then the part is pruned when planned instead
    of walking every row of the table to find none (a first pull of 10 selected customers
    took 0.3 s on 100,000 assets).

    Ungated (the pull's statements), ALL mode asks whether the row's customer is among
    the statement's :data:`HIDDEN` ones (a hashed list) instead of looking it up.
    """
    visible = (
        f"EXISTS ({VISIBLE_BEFORE})"
        if gate
        else "((:mode = 'ALL' AND t.customer_id NOT IN (SELECT h.id FROM hidden h))"
        f" OR (:mode = 'SELECTED' AND EXISTS ({SELECTED_BEFORE})))"
    )
    return f"""
    (SELECT {_part_columns(spec, "t.seq", lateral=True)}
     FROM {spec.table.name} t {_fields(spec)}
     WHERE t.org_id = :org AND t.seq > GREATEST(:since, :after_seq) AND t.seq <= :head
       AND (NOT t.deleted OR :since > 0)
       AND ((:mode = 'ALL' AND :mode_since <= :since) OR (:mode = 'SELECTED' AND :since > 0))
       AND {visible}{gate}
     ORDER BY t.seq
     LIMIT :fetch)"""


def _backfilled_rows(spec: EntitySpec, gate: str = "") -> str:
    """Rows of customers that became visible after the pull began: all live rows (and
    tombstones newer than the pull's start), at the seq the customer became visible.

    These are sorted rather than read in index order, so the page's keys are chosen first
    and only the chosen rows' records are read (a sort of wide rows cost 25% more).
    """
    rank = RANK[spec.type]
    eseq = "GREATEST(b.seq, n.since)"
    # A customer row is its own customer; the table has no customer_id index, so joining on
    # it scanned every customer of the tenant once per selected customer (16-25 ms a first
    # pull of a device with 10 customers among 2,000; 0.4-1.2 ms by id).
    owner = "b.id" if spec.type is EntityType.CUSTOMER else "b.customer_id"
    return f"""
    (SELECT {_part_columns(spec, "k.eseq", lateral=True)}
     FROM (SELECT b.id, {eseq} AS eseq
           FROM {spec.table.name} b
           JOIN sel n ON n.customer_id = {owner} AND n.since > :since
           WHERE b.org_id = :org AND (NOT b.deleted OR (b.seq > :since AND :since > 0))
             AND {eseq} <= :head
             AND ({eseq}, {RECORD}, {rank}, b.id)
               > (:after_seq, :after_kind, :after_rank, :after_id){gate}
           ORDER BY {eseq}, b.id
           LIMIT :fetch) k
     JOIN {spec.table.name} t ON t.org_id = :org AND t.id = k.id {_fields(spec)}
     ORDER BY k.eseq, t.id
     LIMIT :fetch)"""


def _evicted_rows(spec: EntitySpec, gate: str = "") -> str:
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
       AND (g.eseq, {EVICTION}, {rank}, b.id)
         > (:after_seq, :after_kind, :after_rank, :after_id){gate}
     ORDER BY g.eseq, b.id
     LIMIT :fetch)"""


# Customers that became visible to a device after the pull's checkpoint, with the seq
# since which they are visible (the device selected them, its ALL mode began, or they were
# re-enabled) and the seq they were last re-enabled at. Archived customers are not visible
# (their data is evicted); deleted ones stay so the tombstone reaches the device. The ALL
# branches are split so that, once the mode is older than the checkpoint, only re-enabled
# customers are read (by index: ``restored_seq > 0``, implied by the checkpoint's bound,
# matches the partial index's predicate even in a generic plan, which ``PAGE_SETUP`` gets).
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
    AND c.restored_seq > :since AND c.restored_seq > 0 AND NOT c.archived
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
# A page row: these columns, the record's fields as one JSON text in ``data``.
KEY_COLUMNS = ("rank", "id", "customer_id", "deleted", "version", "eseq", "kind", "data")


def _data_json(spec: EntitySpec, alias: str) -> str:
    """The record's fields as the JSON text of ``data`` (NULL for a tombstone).

    PostgreSQL writes the JSON and the server splices it into the response as it comes
    (:func:`_change`). As separate columns, every row of a page carried every record type's
    columns (a union's rows have one layout), NULL but for its own type's: 48 columns, of
    which asyncpg parsed each and Python zipped ten into a dict that orjson encoded again.
    One text column cost PostgreSQL about what the wide rows did (the union no longer moves
    wide tuples), and the server worker's CPU for an initial sync (110 pages of 1,000) fell
    by a third, 2.1 s to 1.4 s (measured on a loaded machine). ``row_to_json`` of a one-row
    subquery names the keys as the select list aliases them, writes no whitespace
    (``json_build_object`` puts spaces around every colon and comma: 3 MB more in an
    initial sync) and keeps the column order, which is the order a dict of the columns had.
    Values come out as orjson wrote them: uuids and dates as their ISO text, jsonb as
    stored (its numbers with the digits PostgreSQL keeps, which decode to the same values).
    """
    a = alias
    fields = ", ".join(f'{a}.{column} AS "{key}"' for key, column, _ in DATA_COLUMNS[spec.type])
    return (
        f"CASE WHEN {a}.deleted THEN NULL"
        f" ELSE (SELECT row_to_json(d) FROM (SELECT {fields}) d)::text END"
    )


def _fields(spec: EntitySpec, alias: str = "t") -> str:
    """The record's fields as the one-row lateral subquery ``d``, written in a part's FROM
    clause after the record's table, that :func:`_part_columns` encodes with ``lateral``.

    PostgreSQL pulls the subquery up into the row it reads: ``row_to_json(d)`` becomes
    ``row_to_json(ROW(...))`` with the aliases as keys, where :func:`_data_json` ran a
    subquery per row (an initial sync's page statement ran in 2.7-2.8 ms instead of
    2.9-3.0; fastest of 25 runs each, quiet machine). Same JSON text.
    """
    a = alias
    fields = ", ".join(f'{a}.{column} AS "{key}"' for key, column, _ in DATA_COLUMNS[spec.type])
    return f"CROSS JOIN LATERAL (SELECT {fields}) d"


def _part_columns(
    spec: EntitySpec,
    eseq: str,
    *,
    kind: int = RECORD,
    alias: str = "t",
    lateral: bool = False,
) -> str:
    """A part's select list: the key columns, then the record's fields as JSON text.

    The record comes with the row the part's index scan already reads: the page costs no
    second lookup per row. An eviction (``kind``) reads no fields: ``data`` is NULL.
    ``lateral``: the part's FROM clause has the fields as :func:`_fields`' ``d``.
    """
    a = alias
    columns = [f"{RANK[spec.type]} AS rank", f"{a}.id", f"{a}.customer_id", f"{a}.deleted"]
    # The version vector as text, decoded by orjson itself: through the pool's jsonb codec
    # (SQLAlchemy's) it cost a Python call and two copies per row.
    columns += [f"{a}.version::text AS version", f"{eseq} AS eseq", f"{kind} AS kind"]
    if kind != RECORD:
        data = "NULL::text"
    elif lateral:
        data = f"CASE WHEN {a}.deleted THEN NULL ELSE row_to_json(d)::text END"
    else:
        data = _data_json(spec, a)
    columns.append(f"{data} AS data")
    return ", ".join(columns)


def page_sql(
    types: Collection[EntityType],
    *,
    evictions: bool = True,
    backfill: bool = True,
    gated: bool = False,
) -> str:
    """The page statement of the feed of ``types`` (named parameters).

    Each part walks an index and stops early; Merge Append pulls from the parts only the
    rows the page takes. A feed's statement holds only its own types' parts, and a first
    pull's (``evictions`` False: it has nothing to evict) no eviction parts: pruned or not,
    every part costs planning time on every page (with them, an initial sync's page
    statements took 6-10% longer in total, measured page by page against the same data).
    Likewise without ``backfill`` (no customer became visible to the device after the
    checkpoint: ``PAGE_SETUP``) the statement has no backfill parts: they were more than
    half of an initial sync page's planning (2.4 ms of a custom plan instead of 1.1 ms).

    ``gated``: each part also requires its type's bit in ``:types`` (the grouped statement,
    :data:`GROUP_PAGE_STATEMENT`, serves feeds of different types with one text).
    """
    parts = [_evicted_rows] if evictions else []
    parts.append(_changed_rows)
    if backfill:
        parts.append(_backfilled_rows)
    ctes = [SELECTION] if evictions or backfill else []
    if evictions:
        ctes.append(GONE)
    if not gated:
        ctes.append(("WITH " if not ctes else ", ") + HIDDEN)
    return (
        # The evictions read the selection too (a customer that left may be back).
        "".join(ctes)
        + "SELECT * FROM ("
        + " UNION ALL ".join(
            part(spec, _type_gate(spec.type) if gated else "")
            for spec in ENTITIES.values()
            if spec.type in types
            for part in parts
        )
        + ") u ORDER BY eseq, kind, rank, id LIMIT :fetch"
    )


def _type_gate(entity: EntityType) -> str:
    # Only member values: PostgreSQL evaluates it once per member (a one-time filter), and
    # the part of a type outside the member's feed reads nothing.
    return f"\n       AND (:types & {type_bit(entity)}) <> 0"


def type_bit(entity: EntityType) -> int:
    """The bit of ``entity`` in a feed's type mask (the grouped statement's ``types``)."""
    return 1 << RANK[entity]


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


def _numbered(sql: str) -> tuple[str, tuple[str, ...]]:
    """``sql`` with the ``:name`` parameters it uses numbered ``$1::type``, ``$2::type``...
    in PARAM_ORDER, and their names in that order: PostgreSQL expects every number up to
    the highest to be used (a statement without backfill uses none of the keyset's rank,
    id and kind)."""
    names = tuple(n for n in PARAM_ORDER if re.search(rf"(?<!:):{n}\b", sql))
    for number, name in enumerate(names, start=1):
        sql = re.sub(rf"(?<!:):{name}\b", f"${number}::{PARAM_TYPES[name]}", sql)
    return sql, names


@lru_cache(maxsize=128)
def page_statement(
    types: frozenset[EntityType], *, evictions: bool = True, backfill: bool = True
) -> tuple[str, tuple[str, ...]]:
    """The asyncpg page statement of the feed of ``types`` (31 feeds, three variants each:
    see :func:`page_sql`) and the names of its parameters in order."""
    return _numbered(page_sql(types, evictions=evictions, backfill=backfill))


# Run before each page, in one round trip: whether any customer became visible to the
# device after the checkpoint, at or below the head (the selection of the page statement,
# whose backfill parts take rows up to the head only; without one the statement needs no
# backfill parts), and the read planner settings for the page statement (``db.engine.
# READ_PLANNING``, transaction-local ``set_config``). A pull that names its checkpoint gets
# the same from ``fieldsync_pull_start`` (migration 0014, ``tests/db/test_pull_start.py``),
# in the round trip that also locks the device and reads the head; a resumed one (no
# checkpoint given: it is found from the device's row) runs this. What this reads cannot
# change before the page statement runs: seqs are handed out in commit order, so every
# selection or restore at or below the head committed before the head was read; and the
# device is locked.
#
# A first pull with nothing to backfill (an initial sync in ALL mode: every page of it) is
# the one statement planned once per connection (a generic plan) instead of per page: its
# parts are the seq-ordered index walks whatever the values (each part's own filters are
# pruned at run time), so a custom plan bought nothing for the 1-3 ms it cost per page
# (an initial sync's page statements: 0.9 s of PostgreSQL CPU instead of 1.2 s, loaded
# machine). The others keep a custom plan per page.
PAGE_SETUP, PAGE_SETUP_PARAMS = _numbered(
    SELECTION
    + "SELECT v.backfill, set_config('plan_cache_mode', CASE WHEN v.backfill OR :since > 0"
    + " THEN 'force_custom_plan' ELSE 'force_generic_plan' END, true)"
    + "".join(
        f", set_config('{name}', '{value}', true)"
        for name, value in READ_PLANNING.items()
        if name != "plan_cache_mode"
    )
    + " FROM (SELECT EXISTS (SELECT 1 FROM sel WHERE sel.since <= :head) AS backfill) v"
)


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
    backfill: bool | None = None,
) -> PullPage:
    """One page of the feed of ``types`` after ``since`` for ``device``'s selection.

    ``since`` is a checkpoint of that feed; ``head`` is the tenant's head seq read in this
    transaction before the page. A checkpoint older than the compaction horizon starts the
    feed again (its tombstones up to the horizon are gone), marked ``reset``. ``backfill``:
    the page's setup already ran in this transaction for this checkpoint and head
    (``fieldsync_pull_start``) and found whether the page needs its backfill parts; None:
    run it here.
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
    # on 5,000 customers). PAGE_SETUP sets both in the round trip that also tells whether
    # the page needs its backfill parts (and plans an initial sync's pages once).
    if backfill is None:
        [setup] = await raw.fetch(conn, PAGE_SETUP, *(params[name] for name in PAGE_SETUP_PARAMS))
        backfill = bool(setup[0])
    statement, names = page_statement(types, evictions=since.since > 0, backfill=backfill)
    # Prepared once per connection: the statement with both evictions and backfill is
    # longer than asyncpg's cache takes, so it was prepared (one more round trip), parsed
    # and analysed again on every page.
    rows = await raw.fetch_prepared(conn, statement, *(params[name] for name in names))
    return _page(rows, since, reset, head, limit)


# The grouped page statement (``db/catch_up.py``): the page statement of every feed, run
# once per member of a group of devices of one tenant (a lateral join over the members),
# each member's values read from its row instead of bound parameters. Planned once per
# connection (a generic plan: ``db.catch_up.GROUP_PLANNING``) instead of once per page:
# planning was most of a catch-up page's cost (a custom plan of 2-4 ms against well under
# 1 ms to run it, on a device selecting 10 customers). The parts stay index walks that
# stop early whatever the member's values, and each part's own conditions on those values
# are one-time filters evaluated per member, so the pruning a custom plan did when planned
# is done when run. A group of 64 such devices: ~10 ms to run, 0.15 ms a member.
MEMBER_PARAMS = (
    "device",
    "mode",
    "mode_since",
    "selected_since",
    "since",
    "after_seq",
    "after_kind",
    "after_rank",
    "after_id",
    "types",
)
GROUP_SHARED_PARAMS = ("org", "head", "fetch")
_MEMBER_TYPES = {**PARAM_TYPES, "types": "integer"}


def group_page_sql() -> str:
    """The asyncpg text of the grouped page statement: ``$1`` org, ``$2`` head, ``$3``
    fetch, then one array per :data:`MEMBER_PARAMS` name; rows as a page's, plus the
    member's number (from 1) last, in member then page order."""
    page = page_sql(tuple(EntityType), gated=True)
    for name in MEMBER_PARAMS:
        page = re.sub(rf"(?<!:):{name}\b", f"m.{name}", page)
    for number, name in enumerate(GROUP_SHARED_PARAMS, start=1):
        page = re.sub(rf"(?<!:):{name}\b", f"${number}::{PARAM_TYPES[name]}", page)
    arrays = ", ".join(
        f"${number}::{_MEMBER_TYPES[name]}[]"
        for number, name in enumerate(MEMBER_PARAMS, start=len(GROUP_SHARED_PARAMS) + 1)
    )
    return (
        f"SELECT p.*, m.n FROM unnest({arrays})"
        f" WITH ORDINALITY AS m({', '.join(MEMBER_PARAMS)}, n)"
        f" CROSS JOIN LATERAL ({page}) p ORDER BY m.n, p.eseq, p.kind, p.rank, p.id"
    )


GROUP_PAGE_STATEMENT = group_page_sql()


class PageRequest(NamedTuple):
    """One member of a grouped page read: its locked device row, checkpoint and feed."""

    device: dict[str, Any]
    since: Checkpoint
    types: frozenset[EntityType]


async def pull_pages(
    conn: AsyncConnection,
    *,
    org_id: UUID,
    requests: Sequence[PageRequest],
    limit: int,
    compacted_seq: int,
    head: int,
) -> list[PullPage]:
    """The page of each request, as :func:`pull_page` would read it, in one statement.

    Same contract as :func:`pull_page` for each member (the devices locked, ``head`` read
    after the locks in this transaction); results in the order of ``requests``.
    """
    if not requests:
        return []
    starts: list[tuple[Checkpoint, bool]] = []
    columns: dict[str, list[Any]] = {name: [] for name in MEMBER_PARAMS}
    for request in requests:
        since = request.since
        reset = 0 < since.since < compacted_seq
        if reset:
            since = Checkpoint(feed=since.feed)
        starts.append((since, reset))
        params = page_parameters(org_id, request.device, since, head, limit)
        params["types"] = sum(type_bit(t) for t in request.types)
        for name in MEMBER_PARAMS:
            columns[name].append(params[name])
    rows = await raw.fetch_prepared(
        conn,
        GROUP_PAGE_STATEMENT,
        org_id,
        head,
        limit + 1,
        *(columns[name] for name in MEMBER_PARAMS),
    )
    by_member: list[list[asyncpg.Record]] = [[] for _ in requests]
    for row in rows:
        by_member[row[8] - 1].append(row)
    return [
        _page(member_rows, since, reset, head, limit)
        for member_rows, (since, reset) in zip(by_member, starts, strict=True)
    ]


def _page(
    rows: list[asyncpg.Record], since: Checkpoint, reset: bool, head: int, limit: int
) -> PullPage:
    """The page of ``rows`` (at most ``limit + 1``, in page order) read from ``since``."""
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


# Module-level names: looked up once per call instead of as attributes per row.
_fragment = orjson.Fragment
_loads = orjson.loads


def _eviction(row: asyncpg.Record) -> PulledChange:
    """An eviction row as a change: keys only; a tombstone among them is a DELETE."""
    return PulledChange(
        BY_RANK[row[0]], row[1], row[2], row[3], _loads(row[4]), row[5], None, not row[3]
    )


# Per record type, what completes its stored values to the sync shape (settings with their
# defaults, addresses with every key); None for the types stored complete (assets: most of
# an initial sync), whose JSON is then passed on as PostgreSQL wrote it.
COMPLETERS = {entity: record_shape.COMPLETERS.get(entity.value) for entity in DATA_COLUMNS}


# By rank (a page row's first column): one lookup per row instead of two (an initial sync
# builds 110,000 changes).
LAYOUTS = tuple((entity, COMPLETERS[entity]) for entity in sorted(RANK, key=RANK.__getitem__))
_pulled = PulledChange._make


def _change(row: asyncpg.Record) -> PulledChange:
    """A page row as the change a device receives, ``data`` in the sync shape.

    A record type stored complete keeps its JSON text as an ``orjson.Fragment``: encoding
    copies it into the response, and nothing decodes it on the way. The others are decoded
    to be completed (a few percent of the rows of an initial sync).
    """
    entity, completer = LAYOUTS[row[0]]
    text = row[7]
    data: RecordData | None = None
    if text is not None:
        if completer is None:
            data = _fragment(text)
        else:
            data = _loads(text)
            completer(data)
    return _pulled((entity, row[1], row[2], row[3], _loads(row[4]), row[5], data, False))
