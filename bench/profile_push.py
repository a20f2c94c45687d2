"""Where a push's time goes: statements per change and their time, in-process.

Diagnostic companion of ``bench.push_batch`` (no baseline). Seeds the same tenant, builds
the same 1,000-change batch (a third applied, merged, conflicting) and sends it through the
ASGI app in this process (``httpx.ASGITransport``), counting every SQL statement the app's
pool sends (SQLAlchemy ``before/after_cursor_execute``: round trip + decode) by kind, and
the wall time of the request. Then, optionally, one more push under pyinstrument.

    python -m bench.profile_push [--customers 1000] [--phases | --cpu] [--no-gc] [--pyinstrument]
        [--cprofile N] [--outcomes-only]

The pushed document selects each outcome's record (``bench.push_batch.PUSH_WITH_RECORDS``,
sync contract v2); ``--outcomes-only`` profiles the document without it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import re
import sys
import time
from collections import defaultdict
from typing import Any

import asyncpg.connection
import httpx
import psutil  # type: ignore[import-untyped]
from pydantic import SecretStr
from sqlalchemy import event, make_url

from bench.common import PUSH, Api, app_database, bench_database, log, server_env
from bench.push_batch import PASSWORD, PUSH_WITH_RECORDS, one_round, seed
from db import raw
from server.app import create_app
from server.gc_pauses import keep_pauses_short
from server.settings import Settings


def kind(statement: str) -> str:
    """A short, stable label for a statement."""
    s = " ".join(statement.split())
    if s.startswith(("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT")):
        return re.sub(r"sa_savepoint_\d+", "sa_savepoint_N", s)
    s = re.sub(r"\$\d+(::[A-Z]+(\[\])?)?", "?", s)
    s = re.sub(r"(\?, )+\?", "?...", s)
    return s[:110]


class Counter:
    def __init__(self) -> None:
        self.count: dict[str, int] = defaultdict(int)
        self.seconds: dict[str, float] = defaultdict(float)
        self.rows: dict[str, int] = defaultdict(int)
        self.prepares: dict[str, int] = defaultdict(int)
        self._started: dict[int, float] = {}
        self.active = False

    def before(self, conn, cursor, statement, parameters, context, executemany):
        self._started[id(cursor)] = time.perf_counter()

    def after(self, conn, cursor, statement, parameters, context, executemany):
        started = self._started.pop(id(cursor), None)
        if not self.active or started is None:
            return
        k = kind(statement)
        self.count[k] += 1
        self.seconds[k] += time.perf_counter() - started
        self.rows[k] += len(parameters) if executemany else 1


def count_raw(counter: Counter) -> None:
    """Count the statements the write path and the push send on the asyncpg connection
    itself (``db.raw``), which SQLAlchemy's cursor events do not see."""
    for name in ("fetch", "execute"):
        original = getattr(raw, name)

        async def timed(conn: Any, sql: str, *args: Any, _original: Any = original) -> Any:
            started = time.perf_counter()
            try:
                return await _original(conn, sql, *args)
            finally:
                if counter.active:
                    k = "[raw] " + kind(sql)
                    counter.count[k] += 1
                    counter.seconds[k] += time.perf_counter() - started
                    counter.rows[k] += 1

        setattr(raw, name, timed)


class Phases:
    """Wall time of the GraphQL and push phases of one request (``--phases``), or this
    process's CPU time in them (``--cpu``: what a phase costs whatever else the machine
    runs; an async phase then leaves out its waits on PostgreSQL).

    A push writes each chunk of its decisions while it decides the next (db/push.py:
    ``_ChunkWriter``), so an async phase's time includes whatever ran beside it; the
    phases marked (sync) count their own work only."""

    def __init__(self, clock: Any = time.perf_counter) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.active = False
        self.clock = clock

    def wrap(self, owner: Any, attribute: str, label: str) -> None:
        original = getattr(owner, attribute)
        phases = self
        if asyncio.iscoroutinefunction(original):

            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                started = phases.clock()
                try:
                    return await original(*args, **kwargs)
                finally:
                    if phases.active:
                        phases.seconds[label] += phases.clock() - started

            setattr(owner, attribute, timed_async)
        else:

            def timed(*args: Any, **kwargs: Any) -> Any:
                started = phases.clock()
                try:
                    return original(*args, **kwargs)
                finally:
                    if phases.active:
                        phases.seconds[label] += phases.clock() - started

            setattr(owner, attribute, timed)

    def install(self) -> None:
        import strawberry.schema.schema_converter as converter
        from graphql.execution import executor

        import resolvers.sync as resolvers
        from db import push
        from resolvers.selection_json import shapes as encoded

        self.wrap(executor, "get_variable_values", "graphql-core: coerce variables")
        self.wrap(push, "_lock_all", "  lock the rows (one SELECT per type)")
        self.wrap(push, "decide", "  decide (1,000 calls, validation included)")
        self.wrap(push, "validate_record", "    validate_record (1,000 calls)")
        self.wrap(push, "persist_rows", "  write path: persist_rows")
        self.wrap(
            push, "_store_answers", "  the device's counter, receipts left (settled conflicts)"
        )
        self.wrap(push, "_receipt_rows", "  receipts: their JSON (sync)")
        self.wrap(push, "changes_from_rows", "  records: made from their rows (sync)")
        self.wrap(encoded, "encode", "encode the results (PreEncoded)")
        self.wrap(converter, "convert_arguments", "strawberry: convert arguments")
        self.wrap(resolvers, "to_push_change", "to_push_change (1,000 calls)")
        self.wrap(resolvers, "push", "db.push.push (decide + write)")
        self.wrap(resolvers, "result_from", "result_from (1,000 calls)")


def count_prepares(counter: Counter) -> None:
    """Count asyncpg ``prepare()`` calls (SQLAlchemy's statement cache misses): each one is
    an extra Parse/Describe round trip before the statement runs."""
    original = asyncpg.connection.Connection.prepare

    async def prepare(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        if counter.active:
            counter.prepares[kind(query)] += 1
        return await original(self, query, *args, **kwargs)

    asyncpg.connection.Connection.prepare = prepare  # type: ignore[method-assign]


class GcTimer:
    """Time spent in the cyclic garbage collector (gc.callbacks), by generation."""

    def __init__(self) -> None:
        self.seconds: dict[int, float] = defaultdict(float)
        self.count: dict[int, int] = defaultdict(int)
        self._started = 0.0
        self.active = False

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self.active:
            self.seconds[info["generation"]] += time.perf_counter() - self._started
            self.count[info["generation"]] += 1


def _backends(url: str) -> list[psutil.Process]:
    """PostgreSQL backend processes connected to the bench database."""
    name = make_url(url).database
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if cmdline.startswith("postgres:") and f" {name} " in f"{cmdline} ":
                found.append(proc)
    return found


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


async def run(args: argparse.Namespace, url: str) -> int:  # noqa: PLR0915
    org_id, email, _ = await seed(url, args.customers)
    env = server_env(url)
    settings = Settings(
        database_url=url,
        secret_key=env["FIELDSYNC_SECRET_KEY"],
        master_keys=SecretStr(env["FIELDSYNC_MASTER_KEYS"]),
        log_level="warning",
    )
    seeding_db = app_database(url)
    app_db = app_database(url, pool_size=4)
    counter = Counter()
    count_prepares(counter)
    count_raw(counter)
    phases = Phases(time.process_time if args.cpu else time.perf_counter)
    if args.phases or args.cpu:
        phases.install()
    event.listen(app_db.engine.sync_engine, "before_cursor_execute", counter.before)
    event.listen(app_db.engine.sync_engine, "after_cursor_execute", counter.after)
    try:
        app = create_app(settings, database=app_db)
        # The collector as a worker runs it (server/gc_pauses.py), not the interpreter's
        # defaults: young passes then come and go as they do in the server.
        keep_pauses_short()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", timeout=600
        ) as client:
            api = Api(client)
            await api.login(email, PASSWORD)
            device_id, _, changes = await one_round(api, seeding_db, org_id, 0)
            document = PUSH if args.outcomes_only else PUSH_WITH_RECORDS
            await api(document, {"d": device_id, "changes": changes[:3]})  # warm-up
            device_id, _, changes = await one_round(api, seeding_db, org_id, 1)
            backends = _backends(url)
            pg_before = _cpu(backends)
            cpu_before = time.process_time()
            gc_timer = GcTimer()
            gc.callbacks.append(gc_timer)
            gc_timer.active = True
            if args.no_gc:
                gc.disable()
            counter.active = True
            phases.active = True
            started = time.perf_counter()
            data = await api(document, {"d": device_id, "changes": changes})
            wall = time.perf_counter() - started
            counter.active = False
            phases.active = False
            gc_timer.active = False
            gc.callbacks.remove(gc_timer)
            gc.enable()
            cpu = time.process_time() - cpu_before
            pg_cpu = _cpu(backends) - pg_before
            outcomes: dict[str, int] = defaultdict(int)
            for r in data["pushChanges"]["results"]:
                outcomes[r["outcome"]] += 1
            n = len(changes)
            total_n = sum(counter.count.values())
            total_s = sum(counter.seconds.values())
            print(
                f"\n== push of {n} changes in-process over ASGI: {wall:.2f}s wall"
                f" ({n / wall:,.0f} changes/s), outcomes {dict(outcomes)}"
            )
            print(
                f"  SQL: {total_n} statements ({total_n / n:.1f} per change),"
                f" {total_s:.2f}s between before/after_cursor_execute"
                f" ({total_s / total_n * 1000:.2f}ms each, {total_s / wall * 100:.0f}% of wall);"
                f" the rest, {wall - total_s:.2f}s, is Python outside statement execution"
            )
            print(
                f"  CPU: this process (server code + in-process client) {cpu:.2f}s;"
                f" PostgreSQL backends of the bench database {pg_cpu:.2f}s;"
                f" wall {wall:.2f}s (the rest is round-trip latency / scheduling)"
            )
            print(
                f"  GC: {sum(gc_timer.seconds.values()) * 1000:.0f}ms in the cyclic collector"
                f" during the push, by generation: "
                + ", ".join(
                    f"gen{g} {gc_timer.count[g]}x {gc_timer.seconds[g] * 1000:.0f}ms"
                    for g in sorted(gc_timer.count)
                )
            )
            prepared = sum(counter.prepares.values())
            print(
                f"  statement cache misses (asyncpg prepare = an extra Parse/Describe round"
                f" trip): {prepared}, by statement: "
                + ", ".join(
                    f"{k[:40]!r}: {v}"
                    for k, v in sorted(counter.prepares.items(), key=lambda kv: -kv[1])[:4]
                )
            )
            if args.phases or args.cpu:
                kind = "this process's CPU" if args.cpu else "wall"
                print(f"  phases ({kind}, GC included; nested phases overlap):")
                for label, seconds in sorted(phases.seconds.items(), key=lambda kv: -kv[1]):
                    print(f"    {seconds * 1000:7.1f}ms  {label}")
            print("  by statement (count, per change, total time, mean):")
            for k in sorted(counter.count, key=lambda k: -counter.seconds[k]):
                c = counter.count[k]
                print(
                    f"    {c:6d} {c / n:5.2f}/chg {counter.seconds[k]:6.2f}s"
                    f" {counter.seconds[k] / c * 1000:6.2f}ms  {k}"
                )
            if args.pyinstrument:
                from pyinstrument import Profiler

                device_id, _, changes = await one_round(api, seeding_db, org_id, 2)
                profiler = Profiler(async_mode="enabled", interval=0.001)
                profiler.start()
                await api(document, {"d": device_id, "changes": changes})
                profiler.stop()
                print(profiler.output_text(unicode=False, show_all=False))
            if args.cprofile:
                import cProfile
                import pstats

                device_id, _, changes = await one_round(api, seeding_db, org_id, 3)
                cprofiler = cProfile.Profile()
                if args.no_gc:
                    gc.disable()
                cprofiler.enable()
                await api(document, {"d": device_id, "changes": changes})
                cprofiler.disable()
                gc.enable()
                stats = pstats.Stats(cprofiler, stream=sys.stdout)
                stats.sort_stats("cumulative").print_stats(args.cprofile)
                stats.sort_stats("tottime").print_stats(args.cprofile)
    finally:
        await seeding_db.close()
        await app_db.close()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--pyinstrument", action="store_true")
    parser.add_argument(
        "--phases", action="store_true", help="time the GraphQL and push phases of the request"
    )
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="time the phases in this process's CPU time instead of wall (implies --phases)",
    )
    parser.add_argument("--no-gc", action="store_true", help="disable the cyclic GC meanwhile")
    parser.add_argument(
        "--outcomes-only",
        action="store_true",
        help="push the document without each outcome's record (as before contract v2)",
    )
    parser.add_argument(
        "--cprofile",
        type=int,
        default=0,
        metavar="N",
        help="one more push under cProfile: the top N functions by cumulative and own time",
    )
    args = parser.parse_args()
    log("profile_push")
    with bench_database() as url:
        return asyncio.run(run(args, url))


if __name__ == "__main__":
    sys.exit(main())
