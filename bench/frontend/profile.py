"""Where fieldsync spends a frontend read: SQL statements per request and a CPU profile.

    python -m bench.frontend.profile [--query a|b|c|all] [--duration 15] [--connections 10]
        [--out DIR] [--keep-db | --database NAME]

Same database, data set and documents as ``python -m bench.frontend``, one server worker
(``--workers 1``, so one process holds every sample). Per query:

1. **statements per request**: with ``log_statement = 'all'`` set on the bench database
   only (``ALTER DATABASE``; reset afterwards), a fresh server answers ``--count`` requests
   one at a time; the PostgreSQL log lines of the app role on that database are counted and
   grouped by statement (BEGIN/COMMIT, set_config, the user lookup, one line per SELECT).
   The server is restarted without logging before profiling, since logging costs CPU.
2. **CPU profile**: autocannon loads the worker (closed loop, ``--connections``) while
   ``py-spy record`` samples it for ``--duration`` seconds (folded stacks in ``--out``);
   summarised by category and self time (``bench.fold_report``) and by cumulative time
   (the functions on the stack in most samples).

Needs py-spy in the venv (``pip install py-spy``; not a project dependency).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import httpx
import orjson
from sqlalchemy import make_url

from bench.common import APP_ROLE, asyncpg_dsn, machine, py_spy, running_server
from bench.fold_report import parse_frame
from bench.fold_report import report as fold_report
from bench.frontend import dataset, node, queries

PG_LOG = Path("/var/log/postgresql/postgresql-15-main.log")
RATE = 200  # py-spy samples per second (bench.common.py_spy)
_LINE_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
_WRAPPERS = (
    "<",
    "asyncio/",
    "runpy",
    "threading",
    "typer/",
    "click/",
    "uvicorn/",
    "starlette/",
    "server/__main__",
    "server/cli",
)
_STATEMENT = re.compile(r"LOG:  (?:statement|execute [^:]*): (?P<sql>.*)$")


async def _set_logging(url: str, on: bool) -> None:
    name = make_url(url).database
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        setting = "SET log_statement = 'all'" if on else "RESET log_statement"
        await conn.execute(f'ALTER DATABASE "{name}" {setting}')
    finally:
        await conn.close()


async def _transactions(url: str) -> int:
    # Read-only requests end in ROLLBACK: count both outcomes.
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return int(
            await conn.fetchval(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database"
                " WHERE datname = current_database()"
            )
        )
    finally:
        await conn.close()


def _shape(sql: str) -> str:
    """A statement's short name: the verb and the tables it reads."""
    text = " ".join(sql.split())
    verb = text.split(" ", 1)[0].upper()
    tables = sorted(
        {t for pair in re.findall(r"\bFROM (\w+)|\bJOIN (\w+)", text, re.I) for t in pair if t}
    )
    if "set_config" in text:
        return "SELECT set_config('app.org_id') (tenant scope)"
    if verb == "SELECT" and tables:
        return f"SELECT ... FROM {', '.join(tables)}"
    return text[:60]


def statements(url: str, user_db: str, start: int) -> list[str]:
    """The statements the app role ran on ``user_db`` since byte ``start`` of the log."""
    marker = f"{APP_ROLE}@{user_db} "
    found: list[str] = []
    current: list[str] | None = None
    with PG_LOG.open("rb") as handle:
        handle.seek(start)
        for raw in handle.read().decode(errors="replace").splitlines():
            if _LINE_START.match(raw):
                if current is not None:
                    found.append(" ".join(current))
                current = None
                if marker in raw and (m := _STATEMENT.search(raw)):
                    current = [m["sql"]]
            elif current is not None:
                current.append(raw.strip())
    if current is not None:
        found.append(" ".join(current))
    return found


def count_statements(url: str, query: queries.Query, email: str, count: int) -> None:
    """Run ``count`` requests one at a time on a fresh server with statement logging on."""
    user_db = str(make_url(url).database)
    asyncio.run(_set_logging(url, True))
    try:
        with running_server(url, workers=1) as server:
            token = asyncio.run(dataset.login(server, email))
            headers = {"content-type": "application/json", "authorization": f"Bearer {token}"}
            body = orjson.dumps(query.fieldsync)
            # One request first: connection setup and the first prepares are not per request.
            httpx.post(f"{server.url}/graphql", content=body, headers=headers, timeout=60)
            time.sleep(0.5)
            transactions = asyncio.run(_transactions(url))
            start = PG_LOG.stat().st_size
            for _ in range(count):
                response = httpx.post(
                    f"{server.url}/graphql", content=body, headers=headers, timeout=60
                )
                if response.status_code != 200 or b'"errors"' in response.content:
                    raise AssertionError(f"HTTP {response.status_code}: {response.text[:2000]}")
            time.sleep(1.5)  # the log is written asynchronously; stats flush within 1 s
            found = statements(url, user_db, start)
            transactions = asyncio.run(_transactions(url)) - transactions - 1  # minus our probe
    finally:
        asyncio.run(_set_logging(url, False))
    shapes = Counter(_shape(s) for s in found)
    print(
        f"  SQL statements per request: {len(found) / count:.1f}"
        f" ({len(found)} over {count} sequential requests);"
        f" transactions per request: {transactions / count:.1f}"
    )
    for shape, n in shapes.most_common():
        print(f"    {n / count:5.1f}  {shape}")


def cumulative(path: Path, top: int) -> None:
    """Functions by the share of samples they are on the stack of (inclusive time)."""
    totals: Counter[str] = Counter()
    samples = 0
    with path.open() as handle:
        for raw in handle:
            line = raw.rstrip("\n")
            if not line.strip():
                continue
            stack_text, count_text = line.rsplit(" ", 1)
            n = int(count_text)
            samples += n
            seen = set()
            for text in stack_text.split(";"):
                fn, file = parse_frame(text)
                # Frames on every request's stack (CLI, server loop, ASGI middleware chain)
                # say nothing: keep the request handler and what it calls.
                if not file or file.startswith(_WRAPPERS):
                    continue
                seen.add(f"{fn} ({file})")
            for name in seen:
                totals[name] += n
    print(f"  top {top} functions by cumulative time (share of samples on the stack):")
    for name, n in totals.most_common(top):
        print(f"  {n / RATE:7.2f}s {n / samples * 100:5.1f}%  {name}")


def profile(
    url: str, query: queries.Query, email: str, args: argparse.Namespace
) -> tuple[node.LoadResult, list[Path]]:
    """Load one worker with autocannon while py-spy samples it."""
    with running_server(url, workers=1) as server:
        token = asyncio.run(dataset.login(server, email))
        headers = {"authorization": f"Bearer {token}"}
        target = f"{server.url}/graphql"
        node.autocannon(target, query.fieldsync, headers, connections=args.connections, duration=3)
        # autocannon runs (in a thread) for the whole recording, with a margin each side.
        with ThreadPoolExecutor(1) as pool:
            load = pool.submit(
                node.autocannon,
                target,
                query.fieldsync,
                headers,
                connections=args.connections,
                duration=args.duration + 3,
            )
            time.sleep(1)
            with py_spy(server, Path(args.out), f"q_{query.key}") as outputs:
                time.sleep(args.duration)
            result = load.result()
    return result, outputs


def run(args: argparse.Namespace) -> int:
    """Per query: statements per request, then the profile."""
    node.npm_install()
    keys = ["a", "b", "c"] if args.query == "all" else [args.query]
    print(f"machine: {machine()} at start")
    with dataset.bench_db(args.database, args.keep_db) as (url, fresh):
        data = asyncio.run(dataset.load(url, fresh))
        reads = queries.build(
            asyncio.run(dataset.detail_customer(url, data.org_id)), prefix=args.prefix
        )
        failed = 0
        for key in keys:
            query = reads[key]
            print(f"\n({key}) {query.title}")
            try:
                count_statements(url, query, data.email, args.count)
                result, outputs = profile(url, query, data.email, args)
            except (AssertionError, RuntimeError) as exc:
                # One broken read (the app changes under the bench) must not hide the others.
                print(f"  FAILED: {str(exc)[:500]}")
                failed += 1
                continue
            print(
                f"  under py-spy, 1 worker, autocannon -c {args.connections}:"
                f" {result.rps:.1f} req/s, p50 {result.p50_ms:.0f} ms, p99 {result.p99_ms:.0f} ms"
                f" ({machine()})"
            )
            for path in outputs:
                fold_report(str(path), RATE, args.top)
                cumulative(path, args.top)
    return 1 if failed else 0


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.frontend.profile", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--query", choices=["a", "b", "c", "all"], default="all")
    parser.add_argument("--duration", type=int, default=15, help="seconds of py-spy sampling")
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--count", type=int, default=20, help="requests for the SQL count")
    parser.add_argument("--prefix", default=queries.PREFIX, help="(c)'s search term")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument(
        "--out",
        default=str(Path(tempfile.gettempdir()) / "fieldsync-frontend-profile"),
        help="directory of the folded py-spy profiles",
    )
    db = parser.add_mutually_exclusive_group()
    db.add_argument("--keep-db", action="store_true")
    db.add_argument("--database")
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
