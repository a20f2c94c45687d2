"""What the pull page statement could cost: the current ``db.pull.PAGE_SQL`` against two
rewrites, timed at the first, middle and last page of an initial sync (app role, RLS on).

Exploration only (the server is not changed): it shows how much of a page's time comes
from the statement's shape.

* ``current``: ``db.pull.PAGE_SQL`` as shipped.
* ``late-json``: the same selection and order, but each branch returns only the sort keys
  (no ``jsonb_build_object``); the page's rows get their JSON after the outer LIMIT, by
  primary key. Same results, JSON built for 1,001 rows instead of every remaining row.
* ``seq-index``: ``late-json`` whose branches range-scan the existing ``(org_id, seq)``
  index (``ORDER BY t.seq, t.id`` with a semi-join on the selection). Only equivalent while
  every visible customer became visible at or before the checkpoint (true for a whole
  initial sync of an ALL-mode device, the case measured here); the server would need a
  second branch for customers that became visible after it (driven from ``sel`` and the
  ``(org_id, customer_id)`` indexes).

    python -m bench.explore_pull_sql [--customers 5000] [--assets-per-customer 20]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from typing import Any

from sqlalchemy import text

from bench.common import app_database, asyncpg_dsn, bench_database, log, machine
from bench.pull_initial_sync import _analyze, seed
from db.entities import ENTITIES, EntitySpec
from db.pull import PAGE_SQL, RANK, SELECTION, _data_expression
from db.queries import devices as device_queries
from db.queries.users import list_users
from sync.checkpoint import Checkpoint

PAGE = 1000


def _keys_branch(spec: EntitySpec, *, seq_index: bool) -> str:
    table = spec.table.name
    rank = RANK[spec.type]
    if seq_index:
        return f"""
    (SELECT {rank} AS rank, t.id, t.customer_id, t.deleted, t.version, t.seq AS eseq
     FROM {table} t
     WHERE t.org_id = :org AND t.seq > :since AND t.seq <= :head
       AND (t.seq, {rank}, t.id) > (:after_seq, :after_rank, :after_id)
       AND (NOT t.deleted OR :since > 0)
       AND EXISTS (SELECT 1 FROM sel WHERE sel.customer_id = t.customer_id)
     ORDER BY t.seq, t.id
     LIMIT :fetch)"""
    return f"""
    (SELECT {rank} AS rank, t.id, t.customer_id, t.deleted, t.version,
            GREATEST(t.seq, sel.since) AS eseq
     FROM {table} t JOIN sel ON sel.customer_id = t.customer_id
     WHERE t.org_id = :org
       AND ((t.seq > :since AND (NOT t.deleted OR :since > 0))
            OR (sel.since > :since AND NOT t.deleted))
       AND (GREATEST(t.seq, sel.since), {rank}, t.id) > (:after_seq, :after_rank, :after_id)
       AND GREATEST(t.seq, sel.since) <= :head
     ORDER BY GREATEST(t.seq, sel.since), t.id
     LIMIT :fetch)"""


def _late_json_sql(*, seq_index: bool) -> Any:
    data = " ".join(
        f"WHEN {RANK[spec.type]} THEN (SELECT {_data_expression(spec)} FROM {spec.table.name} t"
        f" WHERE t.org_id = :org AND t.id = page.id)"
        for spec in ENTITIES.values()
    )
    return text(
        SELECTION
        + "SELECT page.rank, page.id, page.customer_id, page.deleted, page.version, page.eseq,"
        + f" CASE WHEN page.deleted THEN NULL ELSE CASE page.rank {data} END END AS data"
        + " FROM (SELECT * FROM ("
        + " UNION ALL ".join(_keys_branch(s, seq_index=seq_index) for s in ENTITIES.values())
        + ") keys ORDER BY eseq, rank, id LIMIT :fetch) page ORDER BY eseq, rank, id"
    )


def _params(
    org_id: uuid.UUID, device: dict[str, Any], since: Checkpoint, head: int
) -> dict[str, Any]:
    # Mirrors db.pull.pull_page.
    return {
        "org": org_id,
        "device": device["id"],
        "mode": device["selection_mode"],
        "mode_since": device["mode_since_seq"],
        "since": since.seq if since.at_boundary else since.seq - 1,
        "head": head,
        "after_seq": since.seq,
        "after_rank": since.rank if not since.at_boundary else len(RANK),
        "after_id": since.record_id or uuid.UUID(int=0),
        "fetch": PAGE + 1,
    }


async def run(args: argparse.Namespace, url: str) -> int:  # noqa: PLR0915
    org_id, _, counts = await seed(url, args.customers, args.assets_per_customer)
    await _analyze(asyncpg_dsn(url))
    db = app_database(url, pool_size=2)
    variants = {
        "current": PAGE_SQL,
        "late-json": _late_json_sql(seq_index=False),
        "seq-index": _late_json_sql(seq_index=True),
    }
    try:
        async with db.tenant(org_id) as conn:
            [user] = await list_users(conn, org_id)
            device = await device_queries.register(
                conn, org_id=org_id, user_id=user["id"], values={"name": "explore"}
            )
            head = int(
                (
                    await conn.execute(
                        text("SELECT last_seq FROM org_seq WHERE org_id = :o"), {"o": org_id}
                    )
                ).scalar_one()
            )
            # Page positions of a full walk (with the current statement's results).
            positions = [Checkpoint()]
            reference: dict[int, Any] = {}
            while True:
                rows = (
                    await conn.execute(PAGE_SQL, _params(org_id, device, positions[-1], head))
                ).all()
                if len(positions) == 1:
                    reference[0] = rows
                if len(rows) <= PAGE:
                    break
                last = rows[PAGE - 1]
                positions.append(Checkpoint(int(last.eseq), int(last.rank), last.id))
            picks = {"first": 0, "middle": len(positions) // 2, "last": len(positions) - 1}
            print(f"\nmachine: {machine()}")
            print(
                f"pull page statement, {counts.assets:,} assets /"
                f" {sum(vars(counts).values()):,} rows, {len(positions)} pages of {PAGE}:"
                " median of 3 executions (ms)"
            )
            print(
                "  (plan_cache_mode auto: what the server gets, a prepared statement that may"
                " switch to a generic plan after 5 runs; force_custom_plan: planned per run)"
            )
            print(
                f"  {'variant':10s} {'plan':18s} "
                + " ".join(f"{k:>8s}" for k in picks)
                + "  same rows"
            )
            for mode in ("auto", "force_custom_plan"):
                await conn.execute(text(f"SET LOCAL plan_cache_mode = {mode}"))
                for name, statement in variants.items():
                    cells = []
                    same = True
                    for index in picks.values():
                        params = _params(org_id, device, positions[index], head)
                        times = []
                        for _ in range(3):
                            started = time.perf_counter()
                            rows = (await conn.execute(statement, params)).all()
                            times.append(time.perf_counter() - started)
                        if index == 0:
                            same = [tuple(r) for r in rows] == [tuple(r) for r in reference[0]]
                        cells.append(sorted(times)[1] * 1000)
                    print(
                        f"  {name:10s} {mode:18s} "
                        + " ".join(f"{c:8.1f}" for c in cells)
                        + f"  {'yes' if same else 'NO'} (first page)"
                    )
            print("  PostgreSQL execution time alone (EXPLAIN ANALYZE 'Execution Time', ms):")
            for name, statement in variants.items():
                cells = []
                for index in picks.values():
                    params = _params(org_id, device, positions[index], head)
                    plan = (
                        (await conn.execute(text("EXPLAIN ANALYZE " + statement.text), params))
                        .scalars()
                        .all()
                    )
                    [line] = [p for p in plan if p.startswith("Execution Time")]
                    cells.append(float(line.split()[2]))
                print(
                    f"  {name:10s} {'EXPLAIN ANALYZE':18s} " + " ".join(f"{c:8.1f}" for c in cells)
                )
            if args.explain:
                for name in args.explain:
                    params = _params(org_id, device, positions[0], head)
                    plan = (
                        (
                            await conn.execute(
                                text("EXPLAIN (ANALYZE, BUFFERS) " + variants[name].text), params
                            )
                        )
                        .scalars()
                        .all()
                    )
                    print(f"\n== EXPLAIN ANALYZE {name}, first page")
                    print("\n".join(plan))
    finally:
        await db.close()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--assets-per-customer", type=int, default=20)
    parser.add_argument("--explain", nargs="*", default=[], help="variants to EXPLAIN (first page)")
    args = parser.parse_args()
    log("explore_pull_sql")
    with bench_database() as url:
        return asyncio.run(run(args, url))


if __name__ == "__main__":
    sys.exit(main())
