"""Soak: a constant mixed load for a long time, and what drifts (issue #19 item 5).

Seeds a tenant (``--customers``, default 4,000, through the write path) and
``--subscribers`` devices (default 300) each selecting ``--selection-min``..``--selection-max``
customers (seeded RNG; rows as ``registerDevice`` + ``selectCustomers`` write them), starts
``python -m server serve --workers N`` on 127.0.0.1 and, for ``--minutes`` (default 60),
keeps up a constant mixed load:

- ``--push-rate`` pushes/s (default 10) of ``--per-push`` customer edits (default 5) over
  HTTP ``pushChanges``, from ``--devices`` registered devices (default 10) that each own a
  disjoint slice of the customers (so nothing conflicts) and pull incrementally every
  ``--pull-every`` seconds (default 10; they also receive the others' and the admin's edits);
- ``--admin-rate`` admin ``updateCustomer`` mutations/s (default 5) on the admin's own
  slice (an eighth of the customers);
- ``--read-rate`` customer-list reads/s (default 5: ``customers(first: 50)`` with
  ``totalCount``);
- ``--subscribers`` live ``changes`` subscriptions (graphql-transport-ws), held by a
  separate process (``python -m bench.soak subscriber``) so the subscribers' CPU is not
  the bench's, subscribed from the beginning and caught up before the load starts.

Every ``--interval`` seconds (default 60) it prints one line, kept as a table: RSS per
server worker; PostgreSQL backends connected to the bench database (pg_stat_activity);
p50/p99 of pushes, list reads and deliveries (commit = ``time.time()`` when the mutation's
response arrived, delivery = when the subscriber read the message: same clock); server CPU
per request (user + system seconds of the server's processes, psutil, over the requests
completed in the interval: pushes, admin mutations, reads, pulls) and as a share of the
machine; PostgreSQL CPU of the bench database's backends; GC pauses >= 50 ms the server
logged; dead tuples (``n_dead_tup``) of customers, devices, device_customers,
push_receipts and change_log; the sizes (``pg_total_relation_size``) of change_log and
customers; the bench's and the subscriber process's own CPU share; the 1-minute load.

At the end: autovacuum/analyze counts of the hot tables; per subscriber an exactly-once,
in-order check of every change committed while it was subscribed to a customer it
selected; every device's store (pushing devices: their pulls and push results;
subscribers: their deliveries) against a fresh full pull by a new device; and a verdict
against the issue's soak targets: CPU per request and p50s of the last 10 minutes within
10% of the first 10, p99s within 25%, RSS within 5%, nothing lost (with ``--minutes``
under 20 it compares the first and last quarter instead, and says so).

The PostgreSQL ``autovacuum`` setting is printed with the table. ``--vacuum-every S`` is an
experiment: the bench itself runs ``VACUUM (ANALYZE)`` of the hot tables every S seconds
(what autovacuum would do), to tell whether the drift follows the dead tuples.

Only 127.0.0.1; the server and the subscriber process are stopped by their pids; each
phase is bounded in time. The machine may be shared: the load average is printed.

    python -m bench.soak [--minutes 60] [--subscribers 300] [--workers 2] [--customers 4000]
        [--devices 10] [--push-rate 10] [--per-push 5] [--admin-rate 5] [--read-rate 5]
        [--pull-every 10] [--selection-min 50] [--selection-max 150] [--interval 60]
        [--vacuum-every 0]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import resource
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import psutil  # type: ignore[import-untyped]
from sqlalchemy import make_url

from bench.common import (
    MB,
    PASSWORD,
    PULL,
    Api,
    GraphQLError,
    Server,
    api_client,
    app_database,
    asyncpg_dsn,
    bench_database,
    close_sockets,
    log,
    machine,
    running_server,
    serve_commands,
)
from bench.push_batch import PUSH_WITH_RECORDS
from bench.stalls import logged_stalls
from bench.subscriptions_fanout import pg_cpu, seed_devices, seed_tenant, ws_url
from bench.ws_load import PONG, PROTOCOL, SUBSCRIPTION, percentile, version_key

ROOT = Path(__file__).resolve().parent.parent
HOT_TABLES = ("customers", "devices", "device_customers", "push_receipts", "change_log")
# The soak targets: last window against the first.
P50_DRIFT = 0.10
P99_DRIFT = 0.25
CPU_DRIFT = 0.10
RSS_DRIFT = 0.05

UPDATE_CUSTOMER = """mutation($id: ID!, $input: UpdateCustomerInput!) {
  updateCustomer(id: $id, input: $input) { __typename ... on Customer { recordId version } } }"""
LIST_CUSTOMERS = """query { customers(first: 50) { totalCount
  edges { node { recordId businessName email version } } pageInfo { hasNextPage endCursor } } }"""


def canonical(data: Any) -> str:
    """A record's data as comparable text (sorted keys)."""
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS).decode()


# --------------------------------------------------------------------------- subscriber side


class _Subscriber:
    """One socket, one subscription, the store its deliveries build and what it received."""

    def __init__(self, device_id: str, selection: list[str]) -> None:
        self.device_id = device_id
        self.wanted = set(selection)
        self.store: dict[str, tuple[str, str]] = {}
        # Every received (record id, version key), in arrival order: exactly-once/in-order.
        self.received: list[tuple[str, str]] = []
        self.caught_up = not self.wanted
        self.connected = False
        self.done = False
        self.ws: Any = None


class _SubscriberPool:
    """The subscriber process: its sockets, and deliveries not yet handed to the bench."""

    def __init__(self) -> None:
        self.subs: list[_Subscriber] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.pending: list[tuple[str, str, float]] = []
        self.errors: list[str] = []
        self.error_count = 0
        self.closed_early = 0
        self.messages = 0
        self.last_change = 0.0

    def _error(self, text: str) -> None:
        self.error_count += 1
        if len(self.errors) < 20:
            self.errors.append(text[:400])

    async def start(self, spec: dict[str, Any]) -> dict[str, Any]:
        from websockets.asyncio.client import connect
        from websockets.typing import Subprotocol

        init = orjson.dumps(
            {"type": "connection_init", "payload": {"authorization": f"Bearer {spec['token']}"}}
        ).decode()
        gate = asyncio.Semaphore(50)
        self.subs = [_Subscriber(d, sel) for d, sel in spec["subs"]]

        async def open_one(sub: _Subscriber) -> Any:
            subscribe = orjson.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": SUBSCRIPTION, "variables": {"d": sub.device_id}},
                }
            ).decode()
            async with gate:
                ws = await connect(
                    spec["url"],
                    subprotocols=[Subprotocol(PROTOCOL)],
                    compression=None,
                    max_size=None,
                    ping_interval=None,
                    proxy=None,
                    open_timeout=60,
                )
                await ws.send(init)
                ack = orjson.loads(await asyncio.wait_for(ws.recv(), 60))
                if ack.get("type") != "connection_ack":
                    raise RuntimeError(f"no ack: {ack}")
                await ws.send(subscribe)
            return ws

        async def run(sub: _Subscriber) -> None:
            try:
                sub.ws = await open_one(sub)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                self._error(f"connect failed: {exc!r}")
                return
            sub.connected = True
            await self._read(sub)

        self.tasks = [asyncio.create_task(run(s)) for s in self.subs]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            opened = sum(1 for s in self.subs if s.connected)
            if opened + self.error_count >= len(self.subs):
                break
            await asyncio.sleep(0.05)
        return {"connected": sum(1 for s in self.subs if s.connected), "failed": self.error_count}

    async def _read(self, sub: _Subscriber) -> None:
        ws = sub.ws
        try:
            async for raw in ws:
                t = time.time()
                msg = orjson.loads(raw)
                kind = msg.get("type")
                if kind == "next":
                    payload = msg.get("payload") or {}
                    data = payload.get("data")
                    if payload.get("errors") or not data:
                        self._error(f"next with errors: {str(payload)[:300]}")
                        continue
                    self.messages += 1
                    batch = data["changes"]
                    if batch.get("reset"):
                        self._error(f"reset delivered to {sub.device_id}")
                    for change in batch["changes"]:
                        rid = change["recordId"]
                        vkey = version_key(change["version"]) if change["version"] else ""
                        sub.received.append((rid, vkey))
                        sub.store[rid] = (vkey, canonical(change["data"]))
                        self.pending.append((rid, vkey, t))
                        self.last_change = t
                    if not sub.caught_up and sub.wanted.issubset(sub.store):
                        sub.caught_up = True
                elif kind == "ping":
                    await ws.send(PONG)
                elif kind in ("error", "complete"):
                    self._error(f"{kind}: {str(msg)[:300]}")
                    break
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the close is what we report
            if not sub.done:
                self.closed_early += 1
                self._error(f"connection lost: {exc!r}")

    def status(self) -> dict[str, Any]:
        return {
            "connected": sum(1 for s in self.subs if s.connected),
            "caught_up": sum(1 for s in self.subs if s.caught_up),
            "messages": self.messages,
            "last_change": self.last_change,
            "closed_early": self.closed_early,
            "error_count": self.error_count,
            "errors": self.errors,
        }

    def drain(self) -> dict[str, Any]:
        # Handed over incrementally (one interval's deliveries) so no reply grows with the
        # run's length and the socket reads are never held up by a large dump.
        out, self.pending = self.pending, []
        return {"deliveries": out}

    def final(self, path: str) -> dict[str, Any]:
        Path(path).write_bytes(
            orjson.dumps(
                [
                    {
                        "device": s.device_id,
                        "received": s.received,
                        "store": {rid: list(v) for rid, v in s.store.items()},
                    }
                    for s in self.subs
                ]
            )
        )
        return {"path": path}

    async def close(self) -> dict[str, Any]:
        await close_sockets(self.subs, self.tasks)
        return {"closed": len(self.subs)}


async def _subscriber_main() -> None:
    """Serve the parent's commands (bench.common.serve_commands)."""
    pool = _SubscriberPool()

    async def status(_: dict[str, Any]) -> dict[str, Any]:
        return pool.status()

    async def drain(_: dict[str, Any]) -> dict[str, Any]:
        return pool.drain()

    async def final(command: dict[str, Any]) -> dict[str, Any]:
        return pool.final(command["path"])

    await serve_commands(
        {"start": pool.start, "status": status, "drain": drain, "final": final}, pool.close
    )


class SubscriberProcess:
    """The parent's handle on ``python -m bench.soak subscriber`` (stopped by its pid)."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.ps: psutil.Process | None = None
        self.dir = Path(tempfile.mkdtemp(prefix="fieldsync-soak-"))

    async def __aenter__(self) -> SubscriberProcess:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.soak",
            "subscriber",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
            limit=1 << 30,
        )
        self.ps = psutil.Process(self.proc.pid)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.proc is not None
        if self.proc.returncode is None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.call({"op": "exit"}), 30)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()  # by its pid
                await self.proc.wait()
        for f in self.dir.glob("*"):
            f.unlink()
        self.dir.rmdir()

    async def call(self, command: dict[str, Any], within: float = 180) -> Any:
        assert self.proc is not None
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(orjson.dumps(command) + b"\n")
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), within)
        if not line:
            raise RuntimeError(f"subscriber process exited ({self.proc.returncode})")
        return orjson.loads(line)

    def cpu_seconds(self) -> float:
        assert self.ps is not None
        with contextlib.suppress(psutil.Error):
            t = self.ps.cpu_times()
            return float(t.user + t.system)
        return 0.0

    async def final(self) -> list[dict[str, Any]]:
        path = self.dir / "final.json"
        await self.call({"op": "final", "path": str(path)})
        data = orjson.loads(path.read_bytes())
        path.unlink()
        return data  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- load side


@dataclass
class Recorder:
    """Latency samples (completion wall time, seconds) per kind, and every commit's time."""

    samples: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))
    # (record id, version key) -> wall time the committing response arrived.
    commits: dict[tuple[str, str], float] = field(default_factory=dict)
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    error_count: int = 0

    async def timed(self, kind: str, api: Api, query: str, variables: dict[str, Any]) -> Any:
        started = time.time()
        try:
            data = await api(query, variables)
        except Exception as exc:  # noqa: BLE001 - a failed request is counted, not fatal
            self.error(f"{kind}: {exc!r}")
            return None
        done = time.time()
        self.requests += 1
        self.samples[kind].append((done, done - started))
        return data

    def error(self, text: str) -> None:
        self.error_count += 1
        if len(self.errors) < 20:
            self.errors.append(text[:400])


@dataclass
class Device:
    """A pushing device: its slice of customers and the store its pulls and pushes build."""

    index: int
    api: Api
    device_id: str
    slice: list[str]
    store: dict[str, tuple[str, str]] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    counter: int = 0
    cursor: int = 0

    def apply(self, change: dict[str, Any]) -> None:
        if change["entity"] != "CUSTOMER":
            return
        rid = change["recordId"]
        self.store[rid] = (version_key(change["version"]), canonical(change["data"]))
        self.versions[rid] = change["version"]

    async def pull(self, rec: Recorder | None) -> None:
        """Incremental pull to the head (timed as ``pull`` when ``rec`` is given)."""
        while True:
            variables = {"d": self.device_id, "since": self.checkpoint, "limit": 1000}
            if rec is None:
                data = await self.api(PULL, variables)
            else:
                data = await rec.timed("pull", self.api, PULL, variables)
                if data is None:
                    return
            page = data["pull"]
            if page["reset"]:
                raise GraphQLError(f"device {self.device_id}: pull reset")
            for change in page["changes"]:
                self.apply(change)
            self.checkpoint = page["checkpoint"]
            if not page["hasMore"]:
                return

    async def push(self, rec: Recorder, per_push: int) -> None:
        changes = []
        for _ in range(per_push):
            rid = self.slice[self.cursor % len(self.slice)]
            self.cursor += 1
            self.counter += 1
            changes.append(
                {
                    "clientMutationId": uuid.uuid4().hex,
                    "recordId": rid,
                    "op": "UPSERT",
                    "baseVersion": self.versions[rid],
                    "counter": self.counter,
                    "patch": {
                        "customer": {"notificationEmails": [f"d{self.index}-{self.counter}@b.x"]}
                    },
                }
            )
        data = await rec.timed(
            "push", self.api, PUSH_WITH_RECORDS, {"d": self.device_id, "changes": changes}
        )
        if data is None:
            return
        committed = time.time()
        result = data["pushChanges"]
        if result["__typename"] != "PushResult":
            rec.error(f"push refused: {str(result)[:300]}")
            return
        for r in result["results"]:
            if r["outcome"] != "APPLIED":
                rec.error(f"push outcome {r['outcome']}: {str(r)[:300]}")
            if r.get("record"):
                self.apply(r["record"])
                rec.commits[(r["recordId"], version_key(r["version"]))] = committed


async def paced(rate: float, stop: float, step: Any) -> None:
    """Call ``step(n)`` at ``rate`` per second until wall ``stop`` (a slow step delays the
    next, as a real client's would; missed slots are caught up, keeping the offered load)."""
    start = time.monotonic()
    n = 0
    while time.time() < stop:
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await step(n)
        n += 1


async def device_loop(dev: Device, rec: Recorder, args: argparse.Namespace, stop: float) -> None:
    """One device: pushes at its share of the push rate, and an incremental pull every
    ``--pull-every`` seconds in the same task (a device's requests are sequential)."""
    every = max(1, round(args.pull_every * args.push_rate / args.devices))

    async def step(n: int) -> None:
        await dev.push(rec, args.per_push)
        if n % every == every - 1:
            await dev.pull(rec)

    # Stagger the devices over one push period so pushes are spread evenly.
    await asyncio.sleep(dev.index / args.push_rate)
    await paced(args.push_rate / args.devices, stop, step)


async def admin_loop(
    api: Api, rec: Recorder, ids: list[str], args: argparse.Namespace, stop: float
) -> None:
    async def step(n: int) -> None:
        rid = ids[n % len(ids)]
        data = await rec.timed(
            "admin",
            api,
            UPDATE_CUSTOMER,
            {"id": rid, "input": {"invoiceCcEmails": [f"admin-{n}@b.x"]}},
        )
        if data is None:
            return
        result = data["updateCustomer"]
        if result["__typename"] != "Customer":
            rec.error(f"updateCustomer: {str(result)[:300]}")
            return
        rec.commits[(result["recordId"], version_key(result["version"]))] = time.time()

    await paced(args.admin_rate, stop, step)


async def read_loop(api: Api, rec: Recorder, args: argparse.Namespace, stop: float) -> None:
    async def step(n: int) -> None:
        await rec.timed("read", api, LIST_CUSTOMERS, {})

    await paced(args.read_rate, stop, step)


# --------------------------------------------------------------------------- sampling


@dataclass
class Row:
    """One interval's figures."""

    minute: float
    rss: list[int]
    backends: int
    push: list[float]
    read: list[float]
    admin: list[float]
    pull: list[float]
    delivery: list[float]
    requests: int
    server_cpu: float
    pg_cpu: float
    seconds: float
    gc_pauses: int
    stats: dict[str, dict[str, Any]]
    sizes: dict[str, int]
    bench_cpu: float
    sub_cpu: float
    load1: float

    @property
    def cpu_per_request_ms(self) -> float:
        return self.server_cpu / max(1, self.requests) * 1000


def _p(values: Sequence[float], q: float) -> float:
    return percentile(values, q) * 1000 if values else float("nan")


HEADER = (
    f"{'min':>5} {'RSS/worker MB':>15} {'bknd':>4} {'push p50/p99':>13} {'read p50/p99':>13}"
    f" {'dlv p50/p99':>13} {'req':>5} {'cpu/req':>7} {'srv%':>5} {'pg%':>5} {'gc':>3}"
    f" {'dead cust/dev/dc/pr/cl':>26} {'cl MB':>6} {'cust MB':>7} {'bench%':>6}"
    f" {'subs%':>5} {'load1':>5}"
)


def row_line(r: Row) -> str:
    dead = "/".join(str(r.stats.get(t, {}).get("n_dead_tup", "-")) for t in HOT_TABLES)
    cores = os.cpu_count() or 1
    return (
        f"{r.minute:5.1f} {'/'.join(f'{x / MB:.0f}' for x in r.rss):>15} {r.backends:4d}"
        f" {_p(r.push, 50):5.0f}/{_p(r.push, 99):<7.0f}"
        f" {_p(r.read, 50):5.0f}/{_p(r.read, 99):<7.0f}"
        f" {_p(r.delivery, 50):5.0f}/{_p(r.delivery, 99):<7.0f} {r.requests:5d}"
        f" {r.cpu_per_request_ms:5.1f}ms {r.server_cpu / r.seconds / cores:5.1%}"
        f" {r.pg_cpu / r.seconds / cores:5.1%} {r.gc_pauses:3d} {dead:>26}"
        f" {r.sizes.get('change_log', 0) / MB:6.1f} {r.sizes.get('customers', 0) / MB:7.1f}"
        f" {r.bench_cpu / r.seconds:6.1%} {r.sub_cpu / r.seconds:5.1%} {r.load1:5.2f}"
    )


async def table_stats(conn: asyncpg.Connection) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    """pg_stat_user_tables of the hot tables and their total sizes."""
    rows = await conn.fetch(
        """SELECT relname, n_live_tup, n_dead_tup, n_tup_upd, n_tup_hot_upd, n_tup_ins,
                  autovacuum_count, autoanalyze_count, last_autovacuum,
                  pg_total_relation_size(relid) AS size
           FROM pg_stat_user_tables WHERE relname = ANY($1::text[])""",
        list(HOT_TABLES),
    )
    stats = {r["relname"]: dict(r) for r in rows}
    return stats, {name: int(s["size"]) for name, s in stats.items()}


def server_cpu_all(server: Server) -> float:
    """CPU seconds so far of the server's processes (the parent and its workers)."""
    total = 0.0
    for p in server.processes():
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def worker_rss(server: Server) -> list[int]:
    out = []
    for pid in server.worker_pids():
        try:
            out.append(int(psutil.Process(pid).memory_info().rss))
        except psutil.Error:
            out.append(0)
    return out


class Sampler:
    """Takes one :class:`Row` per interval; joins deliveries with commit times."""

    def __init__(
        self,
        server: Server,
        conn: asyncpg.Connection,
        database: str,
        rec: Recorder,
        subs: SubscriberProcess,
    ) -> None:
        self.server, self.conn, self.database, self.rec, self.subs = (
            server,
            conn,
            database,
            rec,
            subs,
        )
        self.rows: list[Row] = []
        # Every joined delivery: (receive time, latency), for the windows of the verdict.
        self.deliveries: list[tuple[float, float]] = []
        self.unjoined = 0

    async def begin(self) -> None:
        self.t0 = self.t = time.time()
        self.cpu = server_cpu_all(self.server)
        self.pg = pg_cpu(self.database)
        self.bench = time.process_time()
        self.sub = self.subs.cpu_seconds()
        self.requests = self.rec.requests
        await self.subs.call({"op": "drain"})  # catch-up deliveries are not the soak's

    async def take(self) -> Row:
        now = time.time()
        cpu, pg = server_cpu_all(self.server), pg_cpu(self.database)
        bench, sub = time.process_time(), self.subs.cpu_seconds()
        drained = await self.subs.call({"op": "drain"})
        joined = []
        for rid, vkey, t in drained["deliveries"]:
            committed = self.rec.commits.get((rid, vkey))
            if committed is None:
                self.unjoined += 1
                continue
            joined.append(t - committed)
            self.deliveries.append((t, t - committed))
        backends = await self.conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", self.database
        )
        stats, sizes = await table_stats(self.conn)
        gc = [s for s in logged_stalls(self.server.log_path, self.t, now) if s.kind == "gc"]

        def window(kind: str) -> list[float]:
            return [d for t, d in self.rec.samples[kind] if self.t <= t < now]

        row = Row(
            minute=(now - self.t0) / 60,
            rss=worker_rss(self.server),
            backends=int(backends),
            push=window("push"),
            read=window("read"),
            admin=window("admin"),
            pull=window("pull"),
            delivery=joined,
            requests=self.rec.requests - self.requests,
            server_cpu=cpu - self.cpu,
            pg_cpu=pg - self.pg,
            seconds=now - self.t,
            gc_pauses=len(gc),
            stats=stats,
            sizes=sizes,
            bench_cpu=bench - self.bench,
            sub_cpu=sub - self.sub,
            load1=os.getloadavg()[0],
        )
        self.t, self.cpu, self.pg, self.bench, self.sub = now, cpu, pg, bench, sub
        self.requests = self.rec.requests
        self.rows.append(row)
        return row


# --------------------------------------------------------------------------- checks


def check_subscribers(
    finals: list[dict[str, Any]],
    selections: dict[str, list[str]],
    commits: dict[tuple[str, str], float],
    since: float,
    until: float,
) -> dict[str, Any]:
    """Exactly once and in order, per subscriber, for every commit of the soak window."""
    by_record: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for (rid, vkey), t in commits.items():
        if since <= t <= until:
            by_record[rid].append((t, vkey))
    for versions in by_record.values():
        versions.sort()
    out: dict[str, Any] = {"subscribers": 0, "expected": 0, "delivered": 0, "missing": 0}
    out |= {"duplicates": 0, "out_of_order": 0, "bad_subscribers": 0, "examples": []}
    for f in finals:
        out["subscribers"] += 1
        seen: dict[tuple[str, str], int] = defaultdict(int)
        last_t: dict[str, float] = {}
        bad = 0
        for rid, vkey in f["received"]:
            seen[(rid, vkey)] += 1
            committed = commits.get((rid, vkey))
            if committed is None:
                continue
            t = committed
            if seen[(rid, vkey)] > 1:
                out["duplicates"] += 1
                bad += 1
            if t < last_t.get(rid, 0.0):
                out["out_of_order"] += 1
                bad += 1
            last_t[rid] = max(t, last_t.get(rid, 0.0))
        for rid in selections[f["device"]]:
            for _t, vkey in by_record.get(rid, ()):
                out["expected"] += 1
                if seen.get((rid, vkey)):
                    out["delivered"] += 1
                else:
                    out["missing"] += 1
                    bad += 1
                    if len(out["examples"]) < 5:
                        out["examples"].append(f"{f['device']} missed {rid} {vkey}")
        out["bad_subscribers"] += 1 if bad else 0
    return out


def compare_store(
    store: dict[str, Any], truth: dict[str, tuple[str, str]], ids: Sequence[str]
) -> tuple[int, int, int]:
    """(records compared, version mismatches or missing, data mismatches)."""
    versions = data = 0
    for rid in ids:
        held = store.get(rid)
        want = truth[rid]
        if held is None or held[0] != want[0]:
            versions += 1
        elif held[1] != want[1]:
            data += 1
    return len(ids), versions, data


# --------------------------------------------------------------------------- verdict


def windows(minutes: float) -> tuple[float, str]:
    """Width (minutes) of the compared windows, and how it is described."""
    if minutes >= 20:
        return 10.0, "first 10 min vs last 10 min"
    return minutes / 4, (
        f"--minutes {minutes:g} < 20: first quarter vs last quarter ({minutes / 4:g} min each)"
    )


def verdict(
    rows: list[Row], sampler: Sampler, rec: Recorder, minutes: float, lost: bool
) -> list[str]:
    width, how = windows(minutes)
    t0 = sampler.t0
    t_end = sampler.t
    first = (t0, t0 + width * 60)
    last = (t_end - width * 60, t_end)

    def samples(kind: str, w: tuple[float, float]) -> list[float]:
        if kind == "delivery":
            return [d for t, d in sampler.deliveries if w[0] <= t < w[1]]
        return [d for t, d in rec.samples[kind] if w[0] <= t < w[1]]

    def in_rows(w: tuple[float, float]) -> list[Row]:
        # A row covers the interval ending at t0 + minute*60.
        return [r for r in rows if w[0] < t0 + r.minute * 60 <= w[1] + 1]

    lines = [f"verdict ({how}; targets: p50 and CPU/request within 10%, p99 within 25%,"]
    lines[0] += " RSS within 5%, nothing lost):"
    ok_all = True

    def judge(name: str, a: float, b: float, limit: float, unit: str) -> None:
        nonlocal ok_all
        drift = (b - a) / a if a else float("inf")
        # Getting faster is not drift to fix: only growth is judged against the limit.
        ok = drift <= limit
        ok_all &= ok
        lines.append(
            f"  {name:<24} {a:8.1f} -> {b:8.1f} {unit:<3} {drift:+7.1%}"
            f" (limit +{limit:.0%}): {'PASS' if ok else 'FAIL'}"
        )

    for kind in ("push", "read", "delivery"):
        a, b = samples(kind, first), samples(kind, last)
        if a and b:
            judge(f"{kind} p50", _p(a, 50), _p(b, 50), P50_DRIFT, "ms")
            judge(f"{kind} p99", _p(a, 99), _p(b, 99), P99_DRIFT, "ms")
    ra, rb = in_rows(first), in_rows(last)
    if ra and rb:
        cpu_a = sum(r.server_cpu for r in ra) / max(1, sum(r.requests for r in ra)) * 1000
        cpu_b = sum(r.server_cpu for r in rb) / max(1, sum(r.requests for r in rb)) * 1000
        judge("server CPU per request", cpu_a, cpu_b, CPU_DRIFT, "ms")
        rss_a = sum(sum(r.rss) for r in ra) / len(ra) / MB
        rss_b = sum(sum(r.rss) for r in rb) / len(rb) / MB
        judge("RSS (workers summed)", rss_a, rss_b, RSS_DRIFT, "MB")
    lines.append(f"  nothing lost: {'PASS' if not lost else 'FAIL'}")
    ok_all &= not lost
    lines.append(f"  SOAK {'PASS' if ok_all else 'FAIL'}")
    return lines


# --------------------------------------------------------------------------- run


async def run(args: argparse.Namespace, url: str) -> int:  # noqa: PLR0915
    t_start = time.monotonic()
    start_machine = machine()
    tenant = await seed_tenant(url, args.customers)
    rng = random.Random(args.seed)
    pool = [str(c) for c in tenant.customer_ids]
    sels = [
        rng.sample(tenant.customer_ids, rng.randint(args.selection_min, args.selection_max))
        for _ in range(args.subscribers)
    ]
    db = app_database(url)
    try:
        sub_ids = await seed_devices(db, tenant, sels)
    finally:
        await db.close()
    selections = {d: [str(c) for c in s] for d, s in zip(sub_ids, sels, strict=True)}
    order = list(pool)
    rng.shuffle(order)
    admin_ids = order[: len(order) // 8]
    device_slices = [order[len(order) // 8 :][i :: args.devices] for i in range(args.devices)]
    log(
        f"seeded {len(pool):,} customers and {len(sub_ids)} subscriber devices (mean selection"
        f" {sum(map(len, sels)) / max(1, len(sels)):.0f})"
    )
    database = make_url(url).database or ""
    rec = Recorder()
    with running_server(url, workers=args.workers) as server:
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            async with contextlib.AsyncExitStack() as stack:
                admin = await stack.enter_async_context(api_client(server))
                await admin.login(tenant.email, PASSWORD)
                token = admin.token
                assert token is not None
                reader = await stack.enter_async_context(api_client(server))
                reader.token = token
                devices: list[Device] = []
                for i in range(args.devices):
                    api = await stack.enter_async_context(api_client(server))
                    api.token = token
                    registered = await api.register_device(f"soak-{i}")
                    dev = Device(i, api, registered["id"], device_slices[i])
                    await dev.pull(None)
                    devices.append(dev)
                log(f"{len(devices)} pushing devices registered and pulled")
                subs = await stack.enter_async_context(SubscriberProcess())
                opened = await subs.call(
                    {
                        "op": "start",
                        "url": ws_url(server),
                        "token": token,
                        "subs": [[d, selections[d]] for d in sub_ids],
                    }
                )
                deadline = time.monotonic() + args.catchup_timeout
                while True:
                    status = await subs.call({"op": "status"})
                    if status["caught_up"] >= status["connected"] or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.5)
                log(
                    f"subscribers: {opened['connected']} connected ({opened['failed']} failed),"
                    f" {status['caught_up']} caught up"
                )
                sampler = Sampler(server, conn, database, rec, subs)
                await sampler.begin()
                soak_start = sampler.t0
                stop = soak_start + args.minutes * 60
                print(f"machine: {start_machine} at start; {machine()} at load start")
                print(
                    f"soak: {len(pool):,} customers; {args.devices} devices pushing"
                    f" {args.push_rate:g}/s x {args.per_push} changes, pulling every"
                    f" {args.pull_every:g}s; {args.admin_rate:g} admin updateCustomer/s;"
                    f" {args.read_rate:g} customer-list reads/s; {len(sub_ids)} subscriptions"
                    f" (mean selection {sum(map(len, sels)) / max(1, len(sels)):.0f});"
                    f" --workers {args.workers}; {args.minutes:g} min"
                )
                autovacuum = await conn.fetchrow(
                    "SELECT setting, source, sourcefile FROM pg_settings WHERE name = 'autovacuum'"
                )
                assert autovacuum is not None
                print(
                    f"PostgreSQL autovacuum = {autovacuum['setting']} (from {autovacuum['source']}"
                    f" {autovacuum['sourcefile'] or ''});"
                    + (
                        f" the bench runs VACUUM (ANALYZE) of the hot tables every"
                        f" {args.vacuum_every:g}s (--vacuum-every)"
                        if args.vacuum_every
                        else " no manual VACUUM (--vacuum-every 0)"
                    )
                )
                print(
                    "latencies in ms; dead = n_dead_tup; cl = change_log; cust = customers;"
                    " srv%/pg% = server/PostgreSQL CPU as a share of the machine;"
                    " bench%/subs% = the bench/subscriber process, share of one core"
                )
                print(HEADER, flush=True)
                load = [asyncio.create_task(device_loop(d, rec, args, stop)) for d in devices] + [
                    asyncio.create_task(admin_loop(admin, rec, admin_ids, args, stop)),
                    asyncio.create_task(read_loop(reader, rec, args, stop)),
                ]
                vacuums: list[float] = []
                if args.vacuum_every:
                    load.append(
                        asyncio.create_task(vacuum_loop(url, args.vacuum_every, stop, vacuums))
                    )
                next_t = soak_start + args.interval
                while time.time() < stop - 1:
                    await asyncio.sleep(max(0.0, min(next_t, stop) - time.time()))
                    if time.time() < stop - 1:
                        print(row_line(await sampler.take()), flush=True)
                        next_t += args.interval
                # Bounded: a load task still waiting on a request after 60 s is abandoned.
                _, late = await asyncio.wait(load, timeout=60)
                for task in late:
                    task.cancel()
                print(row_line(await sampler.take()), flush=True)
                soak_end = sampler.t
                if vacuums:
                    print(
                        f"manual VACUUM (ANALYZE) of the hot tables: {len(vacuums)} runs, max"
                        f" {max(vacuums):.1f}s"
                    )
                # Deliveries of the last commits: wait until the subscribers are quiet.
                quiet_deadline = time.monotonic() + 30
                while time.monotonic() < quiet_deadline:
                    status = await subs.call({"op": "status"})
                    if time.time() - status["last_change"] > 3:
                        break
                    await asyncio.sleep(0.5)
                await subs.call({"op": "drain"})
                finals = await subs.final()
                for dev in devices:
                    await dev.pull(None)
                verifier_api = await stack.enter_async_context(api_client(server))
                verifier_api.token = token
                verifier = Device(
                    -1, verifier_api, (await admin.register_device("verify"))["id"], []
                )
                await verifier.pull(None)
                truth = verifier.store
        finally:
            await conn.close()
        final_stats, _ = await _final_stats(url)
    report(
        args,
        sampler,
        rec,
        finals,
        devices,
        truth,
        selections,
        status,
        soak_start,
        soak_end,
        final_stats,
        start_machine,
    )
    print(f"total time {time.monotonic() - t_start:.0f}s; {machine()}")
    return 0


async def vacuum_loop(url: str, every: float, stop: float, took: list[float]) -> None:
    """The experiment of ``--vacuum-every``: a plain ``VACUUM (ANALYZE)`` of the hot tables
    every ``every`` seconds, on its own connection (what autovacuum would do if it ran)."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        while time.time() + every < stop:
            await asyncio.sleep(every)
            started = time.monotonic()
            await conn.execute(f"VACUUM (ANALYZE) {', '.join(HOT_TABLES)}")
            took.append(time.monotonic() - started)
    finally:
        await conn.close()


async def _final_stats(url: str) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return await table_stats(conn)
    finally:
        await conn.close()


def report(
    args: argparse.Namespace,
    sampler: Sampler,
    rec: Recorder,
    finals: list[dict[str, Any]],
    devices: list[Device],
    truth: dict[str, tuple[str, str]],
    selections: dict[str, list[str]],
    status: dict[str, Any],
    soak_start: float,
    soak_end: float,
    final_stats: dict[str, dict[str, Any]],
    start_machine: str,
) -> None:
    rows = sampler.rows
    print()
    print("per-interval table (repeated):")
    print(HEADER)
    for r in rows:
        print(row_line(r))
    print()
    print("hot tables at the end (pg_stat_user_tables):")
    for name in HOT_TABLES:
        s = final_stats.get(name)
        if s is None:
            continue
        hot = s["n_tup_hot_upd"] / s["n_tup_upd"] if s["n_tup_upd"] else 0.0
        print(
            f"  {name:<17} live {s['n_live_tup']:>8,} dead {s['n_dead_tup']:>8,}"
            f" inserts {s['n_tup_ins']:>8,} updates {s['n_tup_upd']:>8,} (HOT {hot:.0%})"
            f" autovacuums {s['autovacuum_count']} autoanalyzes {s['autoanalyze_count']}"
            f" last autovacuum {s['last_autovacuum']} size {s['size'] / MB:.1f} MB"
        )
    counts = {k: len(v) for k, v in rec.samples.items()}
    pushes = counts.get("push", 0)
    print(
        f"requests: {counts}; {len(rec.commits):,} commits ({pushes * args.per_push:,} pushed"
        f" changes); {len(sampler.deliveries):,} deliveries joined with a commit;"
        f" request errors {rec.error_count}" + (f" e.g. {rec.errors[:3]}" if rec.errors else "")
    )
    print(
        f"subscriber process: {status['closed_early']} sockets closed early, errors"
        f" {status['error_count']}" + (f" e.g. {status['errors'][:3]}" if status["errors"] else "")
    )
    check = check_subscribers(finals, selections, rec.commits, soak_start, soak_end + 60)
    print(
        f"exactly-once/in-order: {check['subscribers']} subscribers, {check['expected']:,}"
        f" committed changes due, {check['delivered']:,} delivered, missing {check['missing']},"
        f" duplicates {check['duplicates']}, out of order {check['out_of_order']};"
        f" {check['bad_subscribers']} subscribers with a fault"
        + (f" e.g. {check['examples']}" if check["examples"] else "")
    )
    compared = bad_v = bad_d = 0
    for dev in devices:
        n, v, d = compare_store(dev.store, truth, list(truth))
        compared, bad_v, bad_d = compared + n, bad_v + v, bad_d + d
    sub_v = sub_d = sub_n = 0
    for f in finals:
        n, v, d = compare_store(f["store"], truth, selections[f["device"]])
        sub_n, sub_v, sub_d = sub_n + n, sub_v + v, sub_d + d
    print(
        f"stores vs a fresh full pull ({len(truth):,} customers): {len(devices)} pushing devices,"
        f" {compared:,} records, {bad_v} version mismatches, {bad_d} data mismatches;"
        f" {len(finals)} subscribers, {sub_n:,} records, {sub_v} version mismatches,"
        f" {sub_d} data mismatches"
    )
    lost = bool(
        check["missing"]
        or check["duplicates"]
        or check["out_of_order"]
        or bad_v
        or bad_d
        or sub_v
        or sub_d
        or rec.error_count
        or status["closed_early"]
    )
    for line in verdict(rows, sampler, rec, args.minutes, lost):
        print(line)
    print(f"machine: {start_machine} at start; {machine()} at the end")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--subscribers", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--customers", type=int, default=4000)
    parser.add_argument("--devices", type=int, default=10, help="pushing devices")
    parser.add_argument("--push-rate", type=float, default=10, help="pushes/s, all devices")
    parser.add_argument("--per-push", type=int, default=5)
    parser.add_argument("--admin-rate", type=float, default=5)
    parser.add_argument("--read-rate", type=float, default=5)
    parser.add_argument("--pull-every", type=float, default=10, help="seconds, per device")
    parser.add_argument("--selection-min", type=int, default=50)
    parser.add_argument("--selection-max", type=int, default=150)
    parser.add_argument("--interval", type=float, default=60, help="seconds per table row")
    parser.add_argument("--catchup-timeout", type=float, default=120)
    parser.add_argument(
        "--vacuum-every",
        type=float,
        default=0,
        help="seconds; VACUUM (ANALYZE) the hot tables this often (an experiment; 0: never)",
    )
    parser.add_argument("--seed", type=int, default=19)
    args = parser.parse_args()
    with bench_database() as url:
        return asyncio.run(run(args, url))


if __name__ == "__main__":
    if sys.argv[1:] == ["subscriber"]:
        import uvloop

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_subscriber_main())
    else:
        sys.exit(main())
