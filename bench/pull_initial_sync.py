"""Initial sync: pull every change of a 100k-asset tenant through GraphQL over HTTP.

Seeds one tenant (5,000 customers x (1 facility + 20 assets) = 110,000 changes, 100,000 of
them assets) through the write path, starts `python -m server serve --workers 2`, registers
a device and pulls all pages (limit 1000) until ``hasMore`` is false. The baseline, in the
same process and run, fetches the same rows with raw asyncpg (same columns: id,
customer_id, deleted, version and the data fields, jsonb decoded with orjson like the
server's pool), in pages of 1000 by (seq, id) keyset per table, ``orjson.dumps`` each
page and decodes it again with ``orjson.loads``, as the client side of the server's figure
does (raw fetch + encode + the same client decode). Server and baseline alternate
``--rounds`` times; medians and their ratio are printed, with the server's RSS growth
during the pull (peak minus before, per worker).

    python -m bench.pull_initial_sync [--customers 5000] [--assets-per-customer 20]
        [--rounds 3] [--workers 2] [--budget 255] [--profile DIR]

``--budget`` caps the measured rounds (no round starts when it would end past it) so a
slow server still finishes in about five minutes; the summary says how many rounds ran.
``--profile DIR`` adds one more (unmeasured) server pull under py-spy (folded stacks of
every worker; summarise with ``python -m bench.fold_report``) after the measured rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench.common import (
    PASSWORD,
    PULL,
    Api,
    RssSampler,
    api_client,
    app_database,
    asyncpg_dsn,
    bench_database,
    bench_tenant,
    log,
    machine,
    mb,
    median,
    py_spy,
    running_server,
)
from db.entities import ENTITIES, EntityType
from db.seed import seed_records

PAGE = 1000


@dataclass
class PullRun:
    seconds: float
    changes: int
    pages: int
    by_entity: dict[str, int]
    request_s: float
    decode_s: float
    response_bytes: int
    page_s: list[float]
    rss_growth: int = 0
    rss_pid: int = 0


@dataclass
class BaselineRun:
    seconds: float
    rows: int
    fetch_s: float
    encode_s: float
    decode_s: float
    encoded_bytes: int


async def server_pull(api: Api) -> PullRun:
    """Register a device and pull every page; returns wall time and counts."""
    device = await api.register_device("initial-sync")
    since: str | None = None
    changes = pages = 0
    by_entity: dict[str, int] = {}
    request_s = decode_s = 0.0
    size = 0
    page_s: list[float] = []
    started = time.perf_counter()
    while True:
        page = (await api(PULL, {"d": device["id"], "since": since, "limit": PAGE}))["pull"]
        page_s.append(api.last.request_s)
        request_s += api.last.request_s
        decode_s += api.last.decode_s
        size += api.last.response_bytes
        pages += 1
        changes += len(page["changes"])
        for change in page["changes"]:
            by_entity[change["entity"]] = by_entity.get(change["entity"], 0) + 1
        assert not page["reset"]
        since = page["checkpoint"]
        if not page["hasMore"]:
            break
    seconds = time.perf_counter() - started
    return PullRun(seconds, changes, pages, by_entity, request_s, decode_s, size, page_s)


def _baseline_sql(spec_type: EntityType) -> str:
    spec = ENTITIES[spec_type]
    # uuids as text: orjson cannot encode asyncpg's uuid type, and text is what goes out.
    columns = ["id::text AS id", "customer_id::text AS customer_id", "deleted", "version", "seq"]
    columns += [f"{link}::text AS {link}" for link in spec.links if link != "customer_id"]
    columns += [f for f in spec.fields if f not in spec.private_fields]
    return (
        f"SELECT '{spec.type.value}' AS entity, {', '.join(columns)} FROM {spec.table.name}"
        " WHERE org_id = $1 AND (seq, id) > ($2, $3::uuid) ORDER BY seq, id LIMIT $4"
    )


async def _init_connection(conn: asyncpg.Connection) -> None:
    # The server's pool decodes jsonb with orjson (db/engine.py); do the same.
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: orjson.dumps(v).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )


async def baseline_pull(dsn: str, org_id: uuid.UUID) -> BaselineRun:
    """Raw asyncpg: the same rows, pages of 1000 by (seq, id), orjson.dumps per page and
    the client's orjson.loads of it."""
    conn = await asyncpg.connect(dsn)
    try:
        await _init_connection(conn)
        rows = 0
        fetch_s = encode_s = decode_s = 0.0
        size = 0
        started = time.perf_counter()
        # As the server: one transaction scoped to the tenant (RLS is forced; a superuser
        # bypasses it anyway).
        async with conn.transaction(readonly=True):
            await conn.execute(f"SELECT set_config('app.org_id', '{org_id}', true)")
            for entity in EntityType:
                statement = await conn.prepare(_baseline_sql(entity))
                after_seq, after_id = 0, str(uuid.UUID(int=0))
                while True:
                    t0 = time.perf_counter()
                    records = await statement.fetch(org_id, after_seq, after_id, PAGE)
                    t1 = time.perf_counter()
                    body = orjson.dumps([dict(r) for r in records])
                    t2 = time.perf_counter()
                    # The client decodes what it receives: the server's side of the ratio
                    # includes the same orjson.loads of each page.
                    orjson.loads(body)
                    decode_s += time.perf_counter() - t2
                    encode_s += t2 - t1
                    fetch_s += t1 - t0
                    size += len(body)
                    rows += len(records)
                    if len(records) < PAGE:
                        break
                    after_seq, after_id = records[-1]["seq"], records[-1]["id"]
        seconds = time.perf_counter() - started
    finally:
        await conn.close()
    return BaselineRun(seconds, rows, fetch_s, encode_s, decode_s, size)


async def seed(url: str, customers: int, assets_per_customer: int) -> tuple[uuid.UUID, str, Any]:
    db = app_database(url)
    try:
        org_id, email = await bench_tenant(db)
        started = time.perf_counter()
        counts = await seed_records(
            db,
            org_id,
            customers_count=customers,
            contacts_per_customer=0,
            facilities_per_customer=1,
            assets_per_customer=assets_per_customer,
        )
        log(f"seeded {counts} in {time.perf_counter() - started:.1f}s")
    finally:
        await db.close()
    return org_id, email, counts


async def _analyze(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


async def run(args: argparse.Namespace, url: str) -> int:
    start_machine = machine()
    org_id, email, counts = await seed(url, args.customers, args.assets_per_customer)
    total = counts.customers + counts.contacts + counts.facilities + counts.assets
    dsn = asyncpg_dsn(url)
    await _analyze(dsn)
    server_runs: list[PullRun] = []
    baseline_runs: list[BaselineRun] = []
    with running_server(url, workers=args.workers) as server:
        async with api_client(server) as api:
            await api.login(email, PASSWORD)
            # Warm-up: one small page each way (imports, prepared statements, caches).
            device = await api.register_device("warm-up")
            await api(PULL, {"d": device["id"], "since": None, "limit": 10})
            await baseline_pull(dsn, org_id)
            started = time.monotonic()
            for round_ in range(1, args.rounds + 1):
                if server_runs and round_ > 1:
                    spent = time.monotonic() - started
                    per_round = spent / len(server_runs)
                    if spent + per_round > args.budget:
                        log(
                            f"stopping after {len(server_runs)} rounds: another would pass the"
                            f" --budget of {args.budget:.0f}s ({per_round:.0f}s per round)"
                        )
                        break
                with RssSampler(server.worker_pids()) as sampler:
                    result = await server_pull(api)
                result.rss_pid, result.rss_growth = sampler.max_growth()
                if result.changes != total:
                    raise AssertionError(f"pulled {result.changes} changes, expected {total}")
                server_runs.append(result)
                log(
                    f"round {round_}: server {result.seconds:.2f}s ({result.pages} pages,"
                    f" {result.changes} changes, RSS +{mb(result.rss_growth)} in pid"
                    f" {result.rss_pid}, before {mb(sampler.before[result.rss_pid])})"
                )
                base = await baseline_pull(dsn, org_id)
                if base.rows != total:
                    raise AssertionError(f"baseline fetched {base.rows} rows, expected {total}")
                baseline_runs.append(base)
                log(f"round {round_}: baseline {base.seconds:.2f}s ({base.rows} rows)")
            if args.profile:
                with py_spy(server, Path(args.profile), "pull"):
                    profiled = await server_pull(api)
                log(f"profiled pull: {profiled.seconds:.2f}s; profiles in {args.profile}")
    report(args, counts, server_runs, baseline_runs, start_machine)
    return 0


def report(
    args: argparse.Namespace,
    counts: Any,
    server_runs: list[PullRun],
    baseline_runs: list[BaselineRun],
    start_machine: str,
) -> None:
    """The summary lines on stdout."""
    total = counts.customers + counts.contacts + counts.facilities + counts.assets
    srv = median([r.seconds for r in server_runs])
    raw = median([r.seconds for r in baseline_runs])
    last = server_runs[-1]
    print()
    print(f"machine: {start_machine} at start; {machine()} at the end")
    print(
        f"initial sync: {counts.assets:,} assets, {total:,} changes in total"
        f" ({counts.customers:,} customers, {counts.facilities:,} facilities,"
        f" {counts.assets:,} assets); pages of {PAGE}, {last.pages} pages;"
        f" server --workers {args.workers}; {len(server_runs)} rounds"
    )
    print(
        f"  server pull (GraphQL/HTTP): median {srv:.2f}s"
        f" [{', '.join(f'{r.seconds:.2f}' for r in server_runs)}]"
        f" = {total / srv:,.0f} changes/s"
    )
    print(f"    pulled by entity: {dict(sorted(last.by_entity.items()))}")
    tenth = max(1, last.pages // 10)
    print(
        f"    per page (HTTP request, last round): median {median(last.page_s) * 1000:.0f}ms;"
        f" first {tenth} pages {median(last.page_s[:tenth]) * 1000:.0f}ms,"
        f" last {tenth} pages {median(last.page_s[-tenth:]) * 1000:.0f}ms"
    )
    print(
        f"    of which client-side JSON decode {median([r.decode_s for r in server_runs]):.2f}s;"
        f" response bodies {last.response_bytes / 1e6:.1f} MB"
    )
    print(
        f"  baseline (asyncpg + orjson encode + client decode): median {raw:.2f}s"
        f" [{', '.join(f'{r.seconds:.2f}' for r in baseline_runs)}]"
        f" (fetch {median([r.fetch_s for r in baseline_runs]):.2f}s,"
        f" encode {median([r.encode_s for r in baseline_runs]):.2f}s,"
        f" decode {median([r.decode_s for r in baseline_runs]):.2f}s,"
        f" {baseline_runs[-1].encoded_bytes / 1e6:.1f} MB)"
    )
    ratio = srv / raw
    print(
        f"  RATIO server/baseline = {ratio:.2f}x"
        f" (target <= 2.5x: {'PASS' if ratio <= 2.5 else 'FAIL'})"
    )
    growth = max(r.rss_growth for r in server_runs)
    print(
        f"  server RSS growth during pull (peak - before, worst worker, worst round):"
        f" {mb(growth)} [{', '.join(mb(r.rss_growth) for r in server_runs)}]"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--assets-per-customer", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--budget",
        type=float,
        default=255,
        help="seconds of measured rounds; no new round starts past it",
    )
    parser.add_argument("--profile", help="directory for py-spy profiles of one extra pull")
    args = parser.parse_args()
    with bench_database() as url:
        return asyncio.run(run(args, url))


if __name__ == "__main__":
    sys.exit(main())
