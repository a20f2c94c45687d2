"""Frontend query speed: fieldsync against PostGraphile 5 on the same database (issue #8).

Loads 10,000 customers x (3 contacts, 2 facilities, 20 assets) through our write path,
exposes the same rows to PostGraphile through ``postgraphile_api`` views, starts fieldsync
(``--workers`` = cores) and PostGraphile (amber preset, one Node process) on 127.0.0.1,
checks both answer each read with the same data, then drives each with autocannon (closed
loop, same connections and duration), fieldsync and PostGraphile alternating for
``--rounds`` rounds after a warm-up. Prints, per query, the median req/s, p50 and p99 of
each server and the ratio fieldsync / PostGraphile (target: >= 1.0 with p99 no worse).

    python -m bench.frontend [--query a|b|c|all] [--duration 10] [--connections 10]
        [--rounds 3] [--warmup 3] [--keep-db | --database NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import orjson
import psutil

from bench.common import (
    APP_ROLE,
    ROOT,
    Server,
    asyncpg_dsn,
    log,
    machine,
    median,
    running_server,
)
from bench.frontend import dataset, node, queries
from bench.frontend.node import LoadResult, NodeServer


@dataclass
class Target:
    """One server under load: where to POST and with which headers."""

    name: str
    url: str
    headers: dict[str, str]
    pid: int  # the server's (parent) process; its children count too
    db_role: str  # the role its PostgreSQL backends run as


@dataclass
class Figures:
    """The runs of one query on one server."""

    runs: list[LoadResult] = field(default_factory=list)
    cpu: list[Cpu] = field(default_factory=list)

    def rps(self) -> float:
        """Median requests/s over rounds."""
        return median([r.rps for r in self.runs])

    def p50(self) -> float:
        """Median of the rounds' p50 (ms)."""
        return median([r.p50_ms for r in self.runs])

    def p99(self) -> float:
        """Median of the rounds' p99 (ms)."""
        return median([r.p99_ms for r in self.runs])

    def server_ms(self) -> float:
        """Median over rounds of the server processes' CPU per request (ms)."""
        return median(
            [c.server_s * 1000 / r.requests for c, r in zip(self.cpu, self.runs, strict=True)]
        )

    def db_ms(self) -> float:
        """Median over rounds of its PostgreSQL backends' CPU per request (ms)."""
        return median(
            [c.db_s * 1000 / r.requests for c, r in zip(self.cpu, self.runs, strict=True)]
        )


@dataclass(frozen=True)
class Cpu:
    """CPU seconds (user + system) one measured run cost."""

    server_s: float
    db_s: float


def _cpu_seconds(pids: list[int]) -> dict[int, float]:
    times: dict[int, float] = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            times[pid] = t.user + t.system
    return times


def _tree(pid: int) -> list[int]:
    with contextlib.suppress(psutil.Error):
        return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    return []


async def _backends(url: str, role: str) -> list[int]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND usename = $1",
            role,
        )
    finally:
        await conn.close()
    return [int(r["pid"]) for r in rows]


class CpuMeter:
    """CPU of a server's processes and of its PostgreSQL backends over one run.

    Backends are those of the server's role on the bench database at the start and at the
    end of the run (one opened meanwhile counts whole; one closed meanwhile is missed,
    which warm pools that keep idle connections make rare). Read as root: postgres
    processes belong to another user.
    """

    def __init__(self, url: str, target: Target) -> None:
        self.url = url
        self.target = target
        self.before: dict[int, float] = {}
        self.backends: list[int] = []
        self.server: list[int] = []

    def __enter__(self) -> CpuMeter:
        self.server = _tree(self.target.pid)
        self.backends = asyncio.run(_backends(self.url, self.target.db_role))
        self.before = _cpu_seconds(self.server + self.backends)
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def result(self) -> Cpu:
        """CPU spent since ``__enter__``; processes started meanwhile count whole."""
        server = sorted(set(self.server) | set(_tree(self.target.pid)))
        backends = sorted(
            set(self.backends) | set(asyncio.run(_backends(self.url, self.target.db_role)))
        )
        after = _cpu_seconds(server + backends)

        def spent(pids: list[int]) -> float:
            return sum(after[p] - self.before.get(p, 0.0) for p in pids if p in after)

        return Cpu(spent(server), spent(backends))


def post(target: Target, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """One request; returns ``data`` and the body size; raises on errors."""
    response = httpx.post(
        f"{target.url}/graphql",
        content=orjson.dumps(body),
        headers={"content-type": "application/json", **target.headers},
        timeout=60,
    )
    payload = orjson.loads(response.content)
    if response.status_code != 200 or payload.get("errors"):
        raise AssertionError(
            f"{target.name}: HTTP {response.status_code} {str(payload.get('errors'))[:2000]}"
        )
    return payload["data"], len(response.content)


def check(query: queries.Query, ours: Target, theirs: Target) -> queries.Counts:
    """Both servers answer ``query`` with the same data; fail loudly otherwise."""
    data_ours, size_ours = post(ours, query.fieldsync)
    data_theirs, size_theirs = post(theirs, query.postgraphile)
    canon_ours = queries.canonical(query.key, data_ours, ours=True)
    canon_theirs = queries.canonical(query.key, data_theirs, ours=False)
    counts_ours = queries.counts(canon_ours, data_ours, size_ours)
    counts_theirs = queries.counts(canon_theirs, data_theirs, size_theirs)
    log(f"({query.key}) fieldsync    {counts_ours}")
    log(f"({query.key}) postgraphile {counts_theirs}")
    problems = queries.differences(canon_ours, canon_theirs)
    if counts_ours.records() != counts_theirs.records():
        problems.append(f"record counts differ: {counts_ours} vs {counts_theirs}")
    if not canon_ours["customers"]:
        problems.append("no customer in the response")
    if query.key == "c" and len(canon_ours["customers"]) < queries.SEARCH_SIZE:
        problems.append(f"the search matched fewer than {queries.SEARCH_SIZE}: pick a --prefix")
    if problems:
        raise AssertionError(f"({query.key}) responses differ:\n  " + "\n  ".join(problems))
    return counts_ours


def measure(
    query: queries.Query,
    ours: Target,
    theirs: Target,
    args: argparse.Namespace,
    url: str,
) -> tuple[Figures, Figures]:
    """Warm both up, then alternate measured runs; the order flips every round so neither
    server always runs on a machine its rival just heated up."""
    bodies = {ours.name: query.fieldsync, theirs.name: query.postgraphile}
    figures = {ours.name: Figures(), theirs.name: Figures()}
    for target in (ours, theirs):
        node.autocannon(
            f"{target.url}/graphql",
            bodies[target.name],
            target.headers,
            connections=args.connections,
            duration=args.warmup,
        )
    for round_ in range(1, args.rounds + 1):
        order = (ours, theirs) if round_ % 2 else (theirs, ours)
        for target in order:
            with CpuMeter(url, target) as meter:
                result = node.autocannon(
                    f"{target.url}/graphql",
                    bodies[target.name],
                    target.headers,
                    connections=args.connections,
                    duration=args.duration,
                )
                cpu = meter.result()
            if result.non2xx or result.errors or result.timeouts:
                raise AssertionError(f"({query.key}) {target.name}: {result}")
            figures[target.name].runs.append(result)
            figures[target.name].cpu.append(cpu)
            log(
                f"({query.key}) round {round_} {target.name:12s} {result.rps:8.1f} req/s"
                f"  p50 {result.p50_ms:6.1f} ms  p99 {result.p99_ms:6.1f} ms"
                f"  ({result.requests} requests; CPU/request: server"
                f" {cpu.server_s * 1000 / max(result.requests, 1):.1f} ms, PostgreSQL"
                f" {cpu.db_s * 1000 / max(result.requests, 1):.1f} ms)"
            )
    return figures[ours.name], figures[theirs.name]


def code_state() -> str:
    """HEAD and how many tracked files differ from it: the app changes under this bench."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    changed = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.splitlines()
    return f"HEAD {head or '?'}, {len(changed)} tracked files modified in the work tree"


def report(
    args: argparse.Namespace,
    keys: list[str],
    reads: dict[str, queries.Query],
    counts: dict[str, queries.Counts],
    results: dict[str, tuple[Figures, Figures]],
    start_machine: str,
    workers: int,
) -> None:
    """The summary on stdout."""
    print()
    print(f"machine: {start_machine} at start; {machine()} at the end")
    print(f"code: {code_state()}")
    print(
        f"fieldsync --workers {workers} vs PostGraphile {node.postgraphile_version()}"
        f" (amber, Node {node.node_version()}, one process); autocannon"
        f" -c {args.connections} -d {args.duration}, {args.rounds} rounds (alternating),"
        f" {args.warmup}s warm-up each; medians over rounds; PostGraphile's search:"
        f" {args.pg_search}"
    )
    for key in keys:
        ours, theirs = results[key]
        c = counts[key]
        print(
            f"({key}) {reads[key].title}: {c.records()} records ({c.customers} customers,"
            f" {c.contacts} contacts, {c.facilities} facilities, {c.assets} assets),"
            f" {c.json_objects} JSON objects, {c.response_bytes:,} bytes (fieldsync)"
        )
        for name, fig in (("fieldsync", ours), ("postgraphile", theirs)):
            print(
                f"    {name:12s} {fig.rps():8.1f} req/s  p50 {fig.p50():6.1f} ms"
                f"  p99 {fig.p99():6.1f} ms  CPU/request: server {fig.server_ms():5.1f} ms,"
                f" PostgreSQL {fig.db_ms():5.1f} ms"
                f"  [req/s {', '.join(f'{r.rps:.0f}' for r in fig.runs)}]"
            )
        ratio = ours.rps() / theirs.rps()
        ok = ratio >= 1.0 and ours.p99() <= theirs.p99()
        print(
            f"    RATIO fieldsync/PostGraphile = {ratio:.2f}x req/s;"
            f" p99 {ours.p99():.1f} vs {theirs.p99():.1f} ms"
            f" (target >= 1.0 with p99 no worse: {'PASS' if ok else 'FAIL'})"
        )


def run(args: argparse.Namespace) -> int:
    """Set up, check, measure, report; everything started is stopped in ``finally``."""
    start_machine = machine()
    node.npm_install()
    keys = ["a", "b", "c"] if args.query == "all" else [args.query]
    workers = args.workers or os.cpu_count() or 1
    with dataset.bench_db(args.database, args.keep_db) as (url, fresh):
        data = asyncio.run(dataset.load(url, fresh))
        asyncio.run(dataset.create_views(url))
        reads = queries.build(
            asyncio.run(dataset.detail_customer(url, data.org_id)), args.pg_search, args.prefix
        )
        with (
            running_server(url, workers=workers) as server,
            node.running_postgraphile(
                dataset.postgraphile_url(url), str(data.org_id), pool_size=args.pg_pool
            ) as pgl,
        ):
            token = asyncio.run(dataset.login(server, data.email))
            ours = Target(
                "fieldsync",
                server.url,
                {"authorization": f"Bearer {token}"},
                server.pid,
                APP_ROLE,
            )
            theirs = Target(
                "postgraphile", pgl.url, {"x-org-id": str(data.org_id)}, pgl.pid, dataset.PG_ROLE
            )
            counts = {key: check(reads[key], ours, theirs) for key in keys}
            results = {key: measure(reads[key], ours, theirs, args, url) for key in keys}
            _keep_alive(server, pgl)
    report(args, keys, reads, counts, results, start_machine, workers)
    return 0


def _keep_alive(server: Server, pgl: NodeServer) -> None:
    # A server that died mid-run would have shown as autocannon errors; say so plainly.
    for name, process in (("fieldsync", server.process), ("postgraphile", pgl.process)):
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited during the run ({process.returncode})")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.frontend", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--query", choices=["a", "b", "c", "all"], default="all")
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per server")
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="fieldsync workers (0: cores)")
    parser.add_argument("--pg-pool", type=int, default=10, help="PostGraphile's pool size")
    parser.add_argument("--prefix", default=queries.PREFIX, help="(c)'s search term")
    parser.add_argument(
        "--pg-search",
        choices=sorted(queries.PG_SEARCH),
        default="prefix",
        help="PostGraphile's (c): name prefix (the issue's read) or fieldsync's semantics",
    )
    db = parser.add_mutually_exclusive_group()
    db.add_argument("--keep-db", action="store_true", help="keep the new database")
    db.add_argument("--database", help="reuse a database kept by --keep-db (skips the load)")
    return parser.parse_args(argv)


def main() -> int:
    """Entry point."""
    return run(parse_args())


if __name__ == "__main__":
    sys.exit(main())
