"""Where a pull's time goes: SQL per page, Python per page, and a wall-clock profile.

Diagnostic companion of ``bench.pull_initial_sync`` (not a benchmark with a baseline). Seeds
the same tenant, then:

1. walks every page with ``db.pull.pull_page`` in-process (app role, RLS on) and times each
   SQL statement (``before/after_cursor_execute``: execution + transfer + row decode) and
   the Python that builds ``PulledChange`` / GraphQL ``Change`` objects;
2. prints ``EXPLAIN (ANALYZE, BUFFERS)`` of the page statement for the first, middle and last
   page;
3. runs one whole pull in-process through the ASGI app over ``httpx.ASGITransport`` under
   pyinstrument (wall clock, async-aware) and prints the call tree (and saves HTML).

    python -m bench.profile_pull [--customers 5000] [--assets-per-customer 20]
        [--output /tmp/fieldsync-profile]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from sqlalchemy import event, text

from bench.common import (
    PULL,
    Api,
    app_database,
    asyncpg_dsn,
    bench_database,
    log,
    median,
    server_env,
)
from bench.pull_initial_sync import PASSWORD, _analyze, seed
from db import raw
from db.commands.sync import PULL_START
from db.commands.sync import pull as pull_command
from db.entities import EntityType
from db.pull import PAGE_SETUP, PAGE_SETUP_PARAMS, page_parameters, page_statement
from db.queries import devices as device_queries
from db.queries.users import list_users
from resolvers.selection_json.shapes import encode
from schema.sync import CHANGE
from server.app import create_app
from server.settings import Settings
from sync.checkpoint import Checkpoint

REPO = str(Path(__file__).resolve().parents[1])  # frames of our own code

PAGE = 1000


async def sql_walk(url: str, org_id: uuid.UUID) -> None:  # noqa: PLR0915
    db = app_database(url, pool_size=2)
    timings: dict[str, list[float]] = defaultdict(list)
    started_at: dict[int, float] = {}
    current: list[str] = [""]

    def before(conn, cursor, statement, parameters, context, executemany):
        started_at[id(cursor)] = time.perf_counter()
        current[0] = (
            "page"
            if statement.lstrip().startswith("WITH sel")
            else "evictions"
            if "dc.changed_seq > " in statement
            else " ".join(statement.split())[:60]
        )

    def after(conn, cursor, statement, parameters, context, executemany):
        timings[current[0]].append(time.perf_counter() - started_at.pop(id(cursor)))

    event.listen(db.engine.sync_engine, "before_cursor_execute", before)
    event.listen(db.engine.sync_engine, "after_cursor_execute", after)
    # The page statement runs on the asyncpg connection (db.raw), outside SQLAlchemy's
    # events: time it by wrapping db.raw.fetch.
    plain_fetch = raw.fetch

    async def timed_fetch(conn: Any, sql: str, *args: Any) -> Any:
        started = time.perf_counter()
        try:
            return await plain_fetch(conn, sql, *args)
        finally:
            name = (
                "pull start (device, lock, head, page setup)"
                if sql == PULL_START
                else "page setup"
                if sql == PAGE_SETUP
                else "page"
                if "u ORDER BY eseq, kind, rank, id LIMIT" in sql
                else " ".join(sql.split())[:60]
            )
            timings[name].append(time.perf_counter() - started)

    raw.fetch = timed_fetch  # type: ignore[assignment]
    shape = tuple((name, name, None) for name in CHANGE.fields)
    try:
        async with db.tenant(org_id) as conn:
            [user] = await list_users(conn, org_id)
            device = await device_queries.register(
                conn, org_id=org_id, user_id=user["id"], values={"name": "profile"}
            )
        timings.clear()
        since = Checkpoint()
        page_times: list[float] = []
        python_times: list[float] = []
        positions: list[Checkpoint] = []
        pages = changes = 0
        walk_started = time.perf_counter()
        while True:
            positions.append(since)
            async with db.tenant(org_id) as conn:
                t0 = time.perf_counter()
                page = await pull_command(
                    conn,
                    org_id=org_id,
                    user_id=user["id"],
                    device_id=device["id"],
                    may_select=True,
                    since=since,
                    limit=PAGE,
                )
                t1 = time.perf_counter()
                encoded = encode(CHANGE, shape, page.changes)
                t2 = time.perf_counter()
            page_times.append(t1 - t0)
            python_times.append(t2 - t1)
            pages += 1
            changes += len(page.changes)
            assert encoded
            since = page.checkpoint
            if not page.has_more:
                break
        walk = time.perf_counter() - walk_started
        print(
            f"\n== in-process walk (db.commands.sync.pull + encode), {pages} pages,"
            f" {changes} changes: {walk:.2f}s"
        )
        total_sql = 0.0
        for name, values in sorted(timings.items(), key=lambda kv: -sum(kv[1])):
            total_sql += sum(values)
            print(
                f"  sql {name!r}: n={len(values)} total {sum(values):.2f}s"
                f" median {median(values) * 1000:.1f}ms max {max(values) * 1000:.1f}ms"
            )
        page_sql = timings.get("page", [])
        if page_sql:
            tenth = max(1, len(page_sql) // 10)
            print(
                f"  page statement: first {tenth} pages median"
                f" {median(page_sql[:tenth]) * 1000:.0f}ms, last {tenth} pages median"
                f" {median(page_sql[-tenth:]) * 1000:.0f}ms"
            )
        print(
            f"  all SQL statements: {total_sql:.2f}s; pull_command total {sum(page_times):.2f}s"
            f" (so Python in db.pull/commands {sum(page_times) - total_sql:.2f}s);"
            f" encode (the page's JSON) {sum(python_times):.2f}s"
        )

        # EXPLAIN of first, middle and last page.
        async with db.tenant(org_id) as conn:
            head = int(
                (
                    await conn.execute(
                        text("SELECT last_seq FROM org_seq WHERE org_id = :o"), {"o": org_id}
                    )
                ).scalar_one()
            )
            for label, pos in (
                ("first", positions[0]),
                ("middle", positions[len(positions) // 2]),
                ("last", positions[-1]),
            ):
                # The statement the page runs, after its setup (planner settings, and
                # whether it needs the backfill parts), as pull_page runs them.
                params = page_parameters(org_id, device, pos, head, PAGE)
                [setup] = await plain_fetch(
                    conn, PAGE_SETUP, *(params[name] for name in PAGE_SETUP_PARAMS)
                )
                statement, names = page_statement(
                    frozenset(EntityType), evictions=pos.since > 0, backfill=setup[0]
                )
                plan = [
                    row[0]
                    for row in await plain_fetch(
                        conn,
                        "EXPLAIN (ANALYZE, BUFFERS) " + statement,
                        *(params[name] for name in names),
                    )
                ]
                print(f"\n== EXPLAIN ANALYZE, {label} page (since={pos}):")
                for line in plan:
                    print("  " + line)
    finally:
        raw.fetch = plain_fetch  # type: ignore[assignment]
        await db.close()


CATEGORIES = (
    # (name, predicate over the stack of (file, function) from root to leaf)
    (
        "PostgreSQL: waiting for the page statement (execute + transfer)",
        lambda st: any(f == "pull_page" for _, f in st) and st[-1][1] == "[await]",
    ),
    (
        "PostgreSQL: waiting for other statements (auth, device, bookkeeping)",
        lambda st: (
            st[-1][1] == "[await]" and any("asyncpg" in p or "sqlalchemy" in p for p, _ in st)
        ),
    ),
    (
        "response encoding: strawberry encode_json (stdlib json.dumps)",
        lambda st: any(f == "encode_json" or "json/encoder" in p for p, f in st),
    ),
    (
        "rows: asyncpg/SQLAlchemy decode (jsonb orjson decode, Row/mapping objects)",
        lambda st: any("asyncpg" in p or "sqlalchemy" in p for p, _ in st),
    ),
    (
        "GraphQL parse + validate of the (identical) document, every request",
        lambda st: any("graphql/validation" in p or "graphql/language" in p for p, _ in st),
    ),
    (
        "resolver Python: the page's rows and their JSON (db.pull._change, encode)",
        lambda st: any(
            f in ("_change", "encode", "<listcomp>") and p.startswith(REPO) for p, f in st
        ),
    ),
    (
        "graphql-core execution: per-field resolve/complete (4 levels x 6 fields x 1000 rows)",
        lambda st: any("graphql/execution" in p for p, _ in st),
    ),
    (
        "strawberry other (context, extensions, view)",
        lambda st: any("strawberry" in p for p, _ in st),
    ),
    (
        "client: httpx + orjson.loads (in-process)",
        lambda st: any("httpx" in p for p, _ in st) or st[-1][1] == "loads",
    ),
    ("other", lambda st: True),
)


def categorize(root: Any) -> dict[str, float]:
    """Self time of every frame, bucketed by the first category its stack matches."""
    from pyinstrument.frame import AWAIT_FRAME_IDENTIFIER

    buckets: dict[str, float] = defaultdict(float)

    def add(stack: list[tuple[str, str]], seconds: float) -> None:
        for name, predicate in CATEGORIES:
            if predicate(stack):
                buckets[name] += seconds
                return

    def walk(frame: Any, stack: list[tuple[str, str]]) -> None:
        stack = [*stack, (frame.file_path or "", frame.function or "")]
        # Synthetic children hold this frame's self time and await time: count them here.
        awaited = sum(c.time for c in frame.children if c.identifier == AWAIT_FRAME_IDENTIFIER)
        if awaited:
            add([*stack, ("", "[await]")], awaited)
        if frame.total_self_time - awaited > 0:
            add(stack, frame.total_self_time - awaited)
        for child in frame.children:
            if not child.is_synthetic:
                walk(child, stack)

    walk(root, [])
    return dict(buckets)


async def asgi_profile(url: str, email: str, output: Path) -> None:
    from pyinstrument import Profiler

    env = server_env(url)
    settings = Settings(
        database_url=url,
        secret_key=env["FIELDSYNC_SECRET_KEY"],
        master_keys=SecretStr(env["FIELDSYNC_MASTER_KEYS"]),
        log_level="warning",
    )
    db = app_database(url, pool_size=4)
    try:
        app = create_app(settings, database=db)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", timeout=300
        ) as client:
            api = Api(client)
            await api.login(email, PASSWORD)
            device = await api.register_device("asgi-profile")
            profiler = Profiler(async_mode="enabled", interval=0.0005)
            since = None
            started = time.perf_counter()
            profiler.start()
            while True:
                page = (await api(PULL, {"d": device["id"], "since": since, "limit": PAGE}))["pull"]
                since = page["checkpoint"]
                if not page["hasMore"]:
                    break
            profiler.stop()
            elapsed = time.perf_counter() - started
        output.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240
        (output / "pull-asgi.html").write_text(profiler.output_html())
        (output / "pull-asgi.txt").write_text(profiler.output_text(unicode=False, show_all=False))
        print(
            f"\n== pyinstrument, whole pull in-process over ASGI: {elapsed:.2f}s"
            f" (profiled; tree in {output}/pull-asgi.txt, html alongside)"
        )
        assert profiler.last_session is not None
        root = profiler.last_session.root_frame(trim_stem=False)
        buckets = categorize(root)
        total = sum(buckets.values())
        print("  wall time by category (self time of each sample's stack, awaits included):")
        for name, seconds in sorted(buckets.items(), key=lambda kv: -kv[1]):
            print(f"    {seconds:7.2f}s {seconds / total * 100:5.1f}%  {name}")
    finally:
        await db.close()


async def run(args: argparse.Namespace, url: str) -> int:
    org_id, email, _ = await seed(url, args.customers, args.assets_per_customer)
    await _analyze(asyncpg_dsn(url))
    await sql_walk(url, org_id)
    if not args.skip_asgi:
        await asgi_profile(url, email, Path(args.output))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--assets-per-customer", type=int, default=20)
    parser.add_argument("--output", default=str(Path(tempfile.gettempdir()) / "fieldsync-profile"))
    parser.add_argument("--skip-asgi", action="store_true")
    args = parser.parse_args()
    log("profile_pull: seeding")
    with bench_database() as url:
        return asyncio.run(run(args, url))


if __name__ == "__main__":
    sys.exit(main())
