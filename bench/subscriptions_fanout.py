"""Benchmark: live subscription fan-out, against a naive strawberry subscription.

Seeds a tenant with a shared pool of customers (``--customers``, default 2,000) and
``--subscribers`` devices (default 5,000) straight through ``db/`` (devices as
``registerDevice`` inserts them, selections as ``selectCustomers`` stores them: one seq,
``device_customers`` rows), each selecting 1-20 pool customers (seeded RNG). Then, against
``python -m server serve --workers 2``:

1. **Idle cost**: every device subscribes (``since`` = the head checkpoint, so nothing to
   catch up); the server workers' summed RSS once they are quiet, minus before, per socket.
2. **Fan-out**: every device subscribes again from the beginning (``since: null``) and must
   receive its whole selection (catch-up). Then one writer (a device of the same user, over
   HTTP ``pushChanges``) pushes ``--per-push`` customer edits per push at ``--rate`` pushes
   a second for ``--seconds``, walking the pool in a shuffled order (no customer twice in a
   run). Commit time = ``time.time()`` right after ``pushChanges`` returns, keyed by
   (record id, version); receive time = when the client read the message.

The same run then starts the baseline, ``bench.naive_subscriptions`` (strawberry's own
graphql-transport-ws handler; one pull per subscriber per NOTIFY), and repeats the fan-out
with the first ``--naive-subscribers`` devices (default 1,000) and the same writer.

A *delivery* is one ``next`` message carrying changes to one subscriber (what a device
receives as an event); ``deliveries/s`` counts those joined with a commit, from the first
commit to the last such message. Changes delivered per second and the share within the
latency target are printed too.

    python -m bench.subscriptions_fanout [--subscribers 5000] [--seconds 20] [--rate 10]
        [--per-push 5] [--naive-subscribers 1000] [--client-procs 1] [--budget 300]

``--catchup-only`` runs step 2's catch-up alone (no idle phase, writer or baseline) and
prints it against issue #19's target (5,000 subscribers caught up within 15 s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
from sqlalchemy import make_url, select

from bench.common import (
    MB,
    PASSWORD,
    PULL,
    PUSH,
    Api,
    GraphQLError,
    Server,
    api_client,
    app_database,
    bench_database,
    bench_tenant,
    free_port,
    log,
    machine,
    running_process,
    running_server,
    server_env,
)
from bench.stalls import (
    LagSnapshot,
    Sample,
    Stall,
    lag_lines,
    latency_table,
    load_line,
    logged_stalls,
    scrape_lag,
    worker_of_ports,
)
from bench.ws_load import Fleet, Sub, percentile, version_key
from db.engine import Database
from db.queries.devices import new_replica_id
from db.seed import seed_records
from db.tables import customers, device_customers, devices, users
from db.write_path import allocate_seqs, notify_change

P99_TARGET_S = 0.250
RATIO_TARGET = 10.0
IDLE_TARGET_KB = 20.0  # issue #19: at most 20 KB per idle subscribed socket
# Issue #19: 5,000 subscribers joining together catch up within this (from the first
# handshake to the last subscriber holding its whole selection).
CATCHUP_TARGET_S = 15.0


# --------------------------------------------------------------------------- seeding


@dataclass
class Tenant:
    """The seeded tenant: its admin (who owns every device) and the customer pool."""

    org_id: uuid.UUID
    user_id: uuid.UUID
    email: str
    customer_ids: list[uuid.UUID]


async def seed_tenant(url: str, customers_count: int) -> Tenant:
    """A tenant with ``customers_count`` customers (no children), through the write path."""
    db = app_database(url)
    try:
        org_id, email = await bench_tenant(db)
        await seed_records(
            db,
            org_id,
            customers_count=customers_count,
            contacts_per_customer=0,
            facilities_per_customer=0,
            assets_per_customer=0,
        )
        async with db.tenant(org_id) as conn:
            user_id = (
                await conn.execute(select(users.c.id).where(users.c.email == email))
            ).scalar_one()
            ids = list(
                (
                    await conn.execute(
                        select(customers.c.id)
                        .where(customers.c.org_id == org_id)
                        .order_by(customers.c.seq)
                    )
                ).scalars()
            )
    finally:
        await db.close()
    return Tenant(org_id, user_id, email, ids)


async def seed_devices(
    db: Database, tenant: Tenant, selections: Sequence[Sequence[uuid.UUID] | None]
) -> list[str]:
    """One device per entry: SELECTED with those customers, or ALL for None.

    The rows ``registerDevice`` + ``selectCustomers`` write (fresh replica id; one seq for
    the selection change, as ``mode_since_seq`` and every ``changed_seq``), inserted in bulk
    per 1,000 devices, one transaction each, with the write path's NOTIFY.
    """
    ids: list[str] = []
    for start in range(0, len(selections), 1000):
        chunk = selections[start : start + 1000]
        async with db.tenant(tenant.org_id) as conn:
            seq = await allocate_seqs(conn, tenant.org_id, 1)
            rows, links = [], []
            for n, selection in enumerate(chunk, start=start):
                device_id = uuid.uuid4()
                ids.append(str(device_id))
                rows.append(
                    {
                        "org_id": tenant.org_id,
                        "id": device_id,
                        "user_id": tenant.user_id,
                        "replica_id": new_replica_id(),
                        "name": f"bench-{n}",
                        "platform": "bench",
                        "selection_mode": "ALL" if selection is None else "SELECTED",
                        "mode_since_seq": 0 if selection is None else seq,
                    }
                )
                links.extend(
                    {
                        "org_id": tenant.org_id,
                        "device_id": device_id,
                        "customer_id": cid,
                        "selected": True,
                        "changed_seq": seq,
                    }
                    for cid in selection or ()
                )
            await conn.execute(devices.insert(), rows)
            if links:
                await conn.execute(device_customers.insert(), links)
            await notify_change(conn, tenant.org_id)
    return ids


# --------------------------------------------------------------------------- writer


@dataclass
class Writer:
    """One device pushing customer edits over HTTP; remembers each commit's wall time."""

    api: Api
    device_id: str
    versions: dict[str, dict[str, int]]
    checkpoint: str
    commits: dict[tuple[str, str], float] = field(default_factory=dict)
    push_seconds: list[float] = field(default_factory=list)
    counter: int = 0

    @classmethod
    async def create(cls, api: Api) -> Writer:
        """Register the writer device and pull every customer's version."""
        device = await api.register_device("writer")
        versions: dict[str, dict[str, int]] = {}
        since = None
        while True:
            page = (await api(PULL, {"d": device["id"], "since": since, "limit": 1000}))["pull"]
            for change in page["changes"]:
                if change["entity"] == "CUSTOMER":
                    versions[change["recordId"]] = change["version"]
            since = page["checkpoint"]
            if not page["hasMore"]:
                break
        return cls(api, device["id"], versions, since)

    async def push(self, ids: Sequence[str], tag: str) -> float:
        """Edit ``ids`` in one pushChanges; returns (and records) the commit time."""
        changes = []
        for rid in ids:
            self.counter += 1
            changes.append(
                {
                    "clientMutationId": uuid.uuid4().hex,
                    "recordId": rid,
                    "op": "UPSERT",
                    "baseVersion": self.versions[rid],
                    "counter": self.counter,
                    "patch": {"customer": {"notificationEmails": [f"{tag}-{self.counter}@b.x"]}},
                }
            )
        started = time.time()
        data = await self.api(PUSH, {"d": self.device_id, "changes": changes})
        committed = time.time()
        self.push_seconds.append(committed - started)
        result = data["pushChanges"]
        if result["__typename"] != "PushResult":
            raise GraphQLError(f"push refused: {result}")
        for r in result["results"]:
            if r["outcome"] != "APPLIED":
                raise GraphQLError(f"push outcome {r['outcome']}: {r}")
            self.versions[r["recordId"]] = r["version"]
            self.commits[(r["recordId"], version_key(r["version"]))] = committed
        return committed

    async def run(
        self, order: Iterator[str], *, rate: float, seconds: float, per_push: int, tag: str
    ) -> tuple[float, float, int]:
        """Push at ``rate`` pushes/s for ``seconds`` (sequentially: a slow push delays the
        next); returns (first commit, last commit, pushes)."""
        start = time.monotonic()
        first = last = 0.0
        n = 0
        while time.monotonic() - start < seconds:
            due = start + n / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            ids = [next(order) for _ in range(per_push)]
            last = await self.push(ids, tag)
            first = first or last
            n += 1
        return first, last, n


def shuffled_pool(ids: Sequence[uuid.UUID], seed: int) -> Iterator[str]:
    """The pool in a seeded random order, repeated (a customer recurs only after all)."""
    order = [str(i) for i in ids]
    random.Random(seed).shuffle(order)
    while True:
        yield from order


# --------------------------------------------------------------------------- servers


def ws_url(server: Server) -> str:
    """The graphql-transport-ws endpoint of a server."""
    return server.url.replace("http://", "ws://") + "/graphql"


def server_secret(server: Server) -> str:
    """The token secret the fieldsync server was started with (from its environment)."""
    return str(psutil.Process(server.pid).environ()["FIELDSYNC_SECRET_KEY"])


@contextlib.contextmanager
def naive_server(url: str, secret: str, workers: int = 2, timeout: float = 60) -> Iterator[Server]:
    """Start ``bench.naive_subscriptions`` on a free port; stop it by its pid at the end."""
    port = free_port()
    env = server_env(url)
    env["FIELDSYNC_SECRET_KEY"] = secret
    with running_process(
        "naive server",
        ["-m", "bench.naive_subscriptions", "--port", str(port), "--workers", str(workers)],
        env=env,
        port=port,
        workers=workers,
        log_path=Path(tempfile.mkdtemp(prefix="fieldsync-naive-")) / "naive.log",
        ready_path="/healthz",
        timeout=timeout,
    ) as server:
        yield server


def server_rss(server: Server) -> int:
    """Summed RSS of the server's worker processes (bytes)."""
    total = 0
    for pid in server.worker_pids():
        with contextlib.suppress(psutil.Error):
            total += psutil.Process(pid).memory_info().rss
    return total


def server_cpu(server: Server) -> float:
    """CPU seconds used so far by the server's worker processes."""
    total = 0.0
    for pid in server.worker_pids():
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total


def pg_cpu(database: str) -> float:
    """CPU seconds used so far by the PostgreSQL backends connected to ``database``."""
    total = 0.0
    for proc in psutil.process_iter(["name", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            cmdline = " ".join(proc.info["cmdline"] or ())
            if cmdline.startswith("postgres:") and f" {database} " in cmdline:
                t = proc.cpu_times()
                total += t.user + t.system
    return total


def sockets_per_worker(server: Server) -> list[int]:
    """Established client connections on the server port, per worker."""
    port = int(server.url.rsplit(":", 1)[1])
    counts = []
    for pid in server.worker_pids():
        try:
            conns = psutil.Process(pid).net_connections(kind="tcp")
        except psutil.Error:
            counts.append(-1)
            continue
        counts.append(sum(1 for c in conns if c.laddr and c.laddr.port == port and c.raddr))
    return counts


async def wait_server_quiet(server: Server, *, idle: float = 0.05, within: float = 30) -> None:
    """Until the workers use under ``idle`` of a core over half a second (at most ``within``)."""
    deadline = time.monotonic() + within
    before = server_cpu(server)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = server_cpu(server)
        if now - before < idle * 0.5:
            return
        before = now


class RssPeak:
    """Samples the summed worker RSS every ``interval`` seconds in the background."""

    def __init__(self, server: Server, interval: float = 0.2) -> None:
        self.server = server
        self.interval = interval
        self.peak = 0
        # (wall time, summed worker RSS) every ``interval``: memory over the run.
        self.samples: list[tuple[float, int]] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            rss = server_rss(self.server)
            self.peak = max(self.peak, rss)
            self.samples.append((time.time(), rss))
            await asyncio.sleep(self.interval)

    def over(self, start: float, end: float, every: float) -> list[tuple[float, int]]:
        """The first sample of each ``every`` seconds from ``start`` to ``end``."""
        picked: dict[int, tuple[float, int]] = {}
        for t, rss in self.samples:
            if start <= t <= end:
                picked.setdefault(int((t - start) // every), (t - start, rss))
        return [picked[k] for k in sorted(picked)]

    def __enter__(self) -> RssPeak:
        self.peak = server_rss(self.server)
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


# --------------------------------------------------------------------------- measuring


def _expected(
    commits: dict[tuple[str, str], float],
    device_ids: Sequence[str],
    selections: dict[str, list[str]],
) -> tuple[int, int]:
    """Messages (one per push and device selecting any customer of it) and changes due."""
    by_customer: dict[str, int] = defaultdict(int)
    for d in device_ids:
        for c in selections[d]:
            by_customer[c] += 1
    pushes: dict[float, set[str]] = defaultdict(set)
    for rid, _ in commits:
        pushes[commits[(rid, _)]].add(rid)
    messages = sum(
        1 for touched in pushes.values() for d in device_ids if touched.intersection(selections[d])
    )
    return messages, sum(by_customer[rid] for rid, _ in commits)


def _join(
    deliveries: Sequence[tuple[str, str, float, int]],
    commits: dict[tuple[str, str], float],
    first: float,
    workers: Sequence[int] | None = None,
) -> tuple[list[float], int, float, list[Sample]]:
    """Latency of every delivered change that a commit of the run wrote; distinct messages
    carrying them; the last such receive time; each as a :class:`Sample` with its commit
    time and the server worker of ``workers`` (per delivery; 0 = unknown)."""
    latencies: list[float] = []
    samples: list[Sample] = []
    messages: set[int] = set()
    last_t = first
    for n, (rid, vkey, t, message) in enumerate(deliveries):
        committed = commits.get((rid, vkey))
        if committed is None:
            continue
        latencies.append(t - committed)
        samples.append(Sample(committed, t - committed, workers[n] if workers else 0))
        messages.add(message)
        last_t = max(last_t, t)
    return latencies, len(messages), last_t, samples


@dataclass
class FanoutResult:
    """One fan-out run against one server."""

    label: str
    subscribers: int
    connect_s: float
    catchup_s: float
    catchup_missing: int
    pushes: int
    changes_written: int
    writer_seconds: float
    expected_deliveries: int
    expected_changes: int
    deliveries: int
    changes_delivered: int
    latencies: list[float]
    span_s: float
    rss_before: int
    rss_peak: int
    rss_end: int
    server_cpu_s: float
    pg_cpu_s: float
    client_cpu_s: float
    bench_cpu_s: float
    window_s: float
    catchup_server_cpu_s: float
    catchup_pg_cpu_s: float
    # The client processes' CPU over the same span: handshakes, subscribes and reading the
    # catch-up pages, which the server's catch-up may wait on.
    catchup_client_cpu_s: float
    push_s: list[float]
    sockets: list[int]
    errors: int
    error_samples: list[str]
    # What shows a stall as what it is: delivered changes with commit time and worker,
    # the lag histogram of each worker over the catch-up and write phases, the stalls the
    # server logged in the write window, and the load average at each phase.
    samples: list[Sample] = field(default_factory=list)
    first_commit: float = 0.0
    lag_catchup: list[str] = field(default_factory=list)
    lag_write: list[str] = field(default_factory=list)
    stalls: list[Stall] = field(default_factory=list)
    loads: list[str] = field(default_factory=list)
    # Summed worker RSS over the write window: (seconds since its start, bytes).
    rss_write: list[tuple[float, int]] = field(default_factory=list)

    @property
    def deliveries_per_s(self) -> float:
        """Messages carrying committed changes per second (first commit to last message)."""
        return self.deliveries / self.span_s if self.span_s > 0 else 0.0

    @property
    def changes_per_s(self) -> float:
        """Changes delivered per second over the same span."""
        return self.changes_delivered / self.span_s if self.span_s > 0 else 0.0

    def p(self, q: float) -> float:
        """Latency percentile (seconds)."""
        return percentile(self.latencies, q) if self.latencies else float("nan")

    def on_time(self) -> float:
        """Share of delivered changes within the p99 target."""
        if not self.latencies:
            return 0.0
        return sum(1 for x in self.latencies if x <= P99_TARGET_S) / len(self.latencies)


async def write_window(
    writer: Writer,
    fleet: Fleet,
    order: Iterator[str],
    args: argparse.Namespace,
    *,
    label: str,
    seconds: float,
    drain: float,
    status: Any,
) -> tuple[float, float, int, Any]:
    """The writer's pushes and the drain after them: (first commit, last commit, pushes,
    the fleet's status); none with ``seconds`` 0 (``--catchup-only``)."""
    if seconds <= 0:
        now = time.time()
        return now, now, 0, status
    first, last, pushes = await writer.run(
        order, rate=args.rate, seconds=seconds, per_push=args.per_push, tag=label
    )
    log(f"{label}: writer done: {pushes} pushes in {last - first:.1f}s; draining")
    return first, last, pushes, await fleet.wait_quiet(quiet=2.0, within=drain)


async def run_fanout(
    label: str,
    server: Server,
    writer: Writer,
    token: str,
    device_ids: Sequence[str],
    selections: dict[str, list[str]],
    order: Iterator[str],
    args: argparse.Namespace,
    *,
    seconds: float,
    drain: float,
) -> FanoutResult:
    """Subscribe ``device_ids`` from scratch, wait for catch-up, write, collect, close."""
    url = ws_url(server)
    database = make_url(args.database_url).database or ""
    loads = [f"before subscribing: {load_line()}"]
    lag0: LagSnapshot = await asyncio.to_thread(scrape_lag, server)
    async with Fleet(args.client_procs) as fleet:
        rss_before = server_rss(server)
        with RssPeak(server) as peak:
            started = time.time()
            catchup_cpu0, catchup_pg0 = server_cpu(server), pg_cpu(database)
            catchup_client0 = fleet.cpu_seconds()
            subs = [Sub(d, None, selections[d]) for d in device_ids]
            opened = await fleet.start(url, token, subs, record=True, concurrency=args.concurrency)
            connect_s = time.time() - started
            log(
                f"{label}: {opened['connected']:,} subscribed in {connect_s:.1f}s"
                f" ({opened['failed']} failed, {opened['retries']} retries); catching up"
            )
            status = await fleet.wait_caught_up(
                args.catchup_timeout, label=f"{label} catch-up", log=log
            )
            catchup_s = time.time() - started
            missing = status.connected - status.caught_up
            log(
                f"{label}: {status.caught_up:,}/{status.connected:,} caught up in"
                f" {catchup_s:.1f}s ({status.changes:,} changes, {status.messages:,} messages)"
            )
            catchup_cpu = server_cpu(server) - catchup_cpu0
            catchup_pg = pg_cpu(database) - catchup_pg0
            catchup_client = fleet.cpu_seconds() - catchup_client0
            loads.append(f"after catch-up: {load_line()}")
            lag1 = await asyncio.to_thread(scrape_lag, server)
            await wait_server_quiet(server, within=15)
            lag2 = await asyncio.to_thread(scrape_lag, server)
            cpu0, client0, bench0 = server_cpu(server), fleet.cpu_seconds(), time.process_time()
            pg0 = pg_cpu(database)
            w0 = time.time()
            written_before = len(writer.commits)
            commits_before = set(writer.commits)
            pushes_before = len(writer.push_seconds)
            first, last, pushes, status = await write_window(
                writer, fleet, order, args, label=label, seconds=seconds, drain=drain, status=status
            )
            window = time.time() - w0
            cpu1, client1, bench1 = server_cpu(server), fleet.cpu_seconds(), time.process_time()
            pg1 = pg_cpu(database)
            sockets = sockets_per_worker(server)
            rss_end = server_rss(server)
            lag3 = await asyncio.to_thread(scrape_lag, server)
            # Stalls are looked up in the log up to here: closing thousands of sockets
            # afterwards stalls the workers too, but that is not the write window.
            w1 = time.time()
            if seconds > 0:
                loads.append(f"after the write window: {load_line()}")
            owners = worker_of_ports(server)
            report = await fleet.report()
        await fleet.close()
    new_commits = {k: t for k, t in writer.commits.items() if k not in commits_before}
    expected_deliveries, expected_changes = _expected(new_commits, device_ids, selections)
    ports = [c.port for c in report.clients]
    workers = [owners.get(ports[i], 0) for i in report.delivery_clients]
    latencies, messages, last_t, samples = _join(report.deliveries, new_commits, first, workers)
    return FanoutResult(
        label=label,
        subscribers=len(device_ids),
        connect_s=connect_s,
        catchup_s=catchup_s,
        catchup_missing=missing,
        pushes=pushes,
        changes_written=len(writer.commits) - written_before,
        writer_seconds=last - first,
        expected_deliveries=expected_deliveries,
        expected_changes=expected_changes,
        deliveries=messages,
        changes_delivered=len(latencies),
        latencies=latencies,
        span_s=last_t - first,
        rss_before=rss_before,
        rss_peak=peak.peak,
        rss_end=rss_end,
        server_cpu_s=cpu1 - cpu0,
        pg_cpu_s=pg1 - pg0,
        client_cpu_s=client1 - client0,
        bench_cpu_s=bench1 - bench0,
        window_s=window,
        catchup_server_cpu_s=catchup_cpu,
        catchup_pg_cpu_s=catchup_pg,
        catchup_client_cpu_s=catchup_client,
        push_s=writer.push_seconds[pushes_before:],
        sockets=sockets,
        errors=status.error_count,
        error_samples=status.errors[:5],
        samples=samples,
        first_commit=first,
        lag_catchup=lag_lines(lag0, lag1),
        lag_write=lag_lines(lag2, lag3),
        stalls=logged_stalls(server.log_path, w0, w1),
        loads=loads,
        rss_write=peak.over(w0, w1, max(1.0, seconds / 10)),
    )


@dataclass
class IdleResult:
    """Server memory with idle subscribed sockets."""

    sockets: int
    failed: int
    rss_before: int
    rss_after: int
    per_worker: list[int]
    client_rss: int

    @property
    def per_socket_kb(self) -> float:
        """RSS growth per idle subscribed socket (KB)."""
        return (self.rss_after - self.rss_before) / max(1, self.sockets) / 1024


async def warm_up(
    server: Server, token: str, device_ids: Sequence[str], args: argparse.Namespace
) -> None:
    """A few subscriptions caught up and closed: imports, pools, prepared statements."""
    async with Fleet(1) as fleet:
        await fleet.start(ws_url(server), token, [Sub(d) for d in device_ids], concurrency=20)
        await asyncio.sleep(2)
        status = await fleet.status()
        await fleet.close()
    if status.failed or status.error_count:
        raise RuntimeError(f"warm-up subscriptions failed: {status.errors}")


async def run_idle(
    server: Server, token: str, device_ids: Sequence[str], since: str, args: argparse.Namespace
) -> IdleResult:
    """Summed worker RSS with every device subscribed from the head, minus before."""
    await wait_server_quiet(server, within=15)
    before = server_rss(server)
    async with Fleet(args.client_procs) as fleet:
        subs = [Sub(d, since) for d in device_ids]
        started = time.time()
        opened = await fleet.start(ws_url(server), token, subs, concurrency=args.concurrency)
        log(
            f"idle: {opened['connected']:,} subscribed from the head in"
            f" {time.time() - started:.1f}s ({opened['failed']} failed); waiting for quiet"
        )
        await asyncio.sleep(1)
        await wait_server_quiet(server, within=30)
        after = server_rss(server)
        per_worker = sockets_per_worker(server)
        client_rss = fleet.rss()
        status = await fleet.status()
        await fleet.close()
    if status.error_count:
        log(f"idle: {status.error_count} errors, e.g. {status.errors[:3]}")
    return IdleResult(opened["connected"], opened["failed"], before, after, per_worker, client_rss)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def print_catchup(r: FanoutResult) -> None:
    """The catch-up figures of a run (``--catchup-only``)."""
    print(
        f"  {r.label}: CATCH-UP {r.subscribers:,} subscriptions joining together: subscribed"
        f" in {r.connect_s:.1f}s, caught up in {r.catchup_s:.1f}s (target <="
        f" {CATCHUP_TARGET_S:.0f}s: {'PASS' if r.catchup_s <= CATCHUP_TARGET_S else 'FAIL'};"
        f" {r.catchup_missing} not caught up); server CPU {r.catchup_server_cpu_s:.1f}s,"
        f" PostgreSQL {r.catchup_pg_cpu_s:.1f}s, clients {r.catchup_client_cpu_s:.1f}s"
        f" meanwhile; errors {r.errors}" + (f" e.g. {r.error_samples[:2]}" if r.errors else "")
    )
    for line in r.loads:
        print(f"    load {line}")
    if r.lag_catchup:
        print("    event-loop lag (fieldsync_event_loop_lag_seconds) during catch-up:")
        for line in r.lag_catchup:
            print(f"      {line}")


def print_fanout(r: FanoutResult, workers: int, bucket_s: float = 1.0) -> None:
    """The figures of one fan-out run."""
    print(
        f"  {r.label}: {r.subscribers:,} subscriptions: subscribed in {r.connect_s:.1f}s,"
        f" caught up in {r.catchup_s:.1f}s ({r.catchup_missing} not caught up; server CPU"
        f" {r.catchup_server_cpu_s:.1f}s, PostgreSQL {r.catchup_pg_cpu_s:.1f}s, clients"
        f" {r.catchup_client_cpu_s:.1f}s meanwhile);"
        f" {r.pushes} pushes / {r.changes_written:,} changes in {r.writer_seconds:.1f}s"
        f" (pushChanges p50 {_ms(percentile(r.push_s, 50))}, max {_ms(max(r.push_s))})"
    )
    print(
        f"    deliveries: {r.deliveries:,} of {r.expected_deliveries:,} expected messages,"
        f" {r.changes_delivered:,} of {r.expected_changes:,} expected changes;"
        f" latency p50 {_ms(r.p(50))}, p99 {_ms(r.p(99))}, max {_ms(r.p(100))};"
        f" {r.on_time():.1%} within {_ms(P99_TARGET_S)}"
    )
    print(
        f"    {r.deliveries_per_s:,.0f} deliveries/s ({r.changes_per_s:,.0f} changes/s) over"
        f" {r.span_s:.1f}s from first commit to last delivery"
    )
    print(
        f"    server RSS (workers): {r.rss_before / MB:.0f} MB before subscribing, peak"
        f" {r.rss_peak / MB:.0f} MB, {r.rss_end / MB:.0f} MB at the end; sockets per worker"
        f" {r.sockets}; over the {r.window_s:.1f}s write window server CPU"
        f" {r.server_cpu_s:.1f}s ({r.server_cpu_s / r.window_s / workers:.0%} of {workers}"
        f" cores), PostgreSQL backends {r.pg_cpu_s:.1f}s"
    )
    print(
        f"    client CPU {r.client_cpu_s:.1f}s ({r.client_cpu_s / r.window_s:.0%} of one core);"
        f" bench process (writer) {r.bench_cpu_s:.1f}s; errors {r.errors}"
        + (f" e.g. {r.error_samples[:2]}" if r.errors else "")
    )
    for line in r.loads:
        print(f"    load {line}")
    if r.rss_write:
        series = ", ".join(f"+{t:.0f}s {rss / MB:.0f}" for t, rss in r.rss_write)
        print(f"    server RSS (MB, workers summed) over the write window: {series}")
    if r.lag_catchup:
        print("    event-loop lag (fieldsync_event_loop_lag_seconds) during catch-up:")
        for line in r.lag_catchup:
            print(f"      {line}")
    if r.lag_write:
        print("    event-loop lag during the write window:")
        for line in r.lag_write:
            print(f"      {line}")
    gc_pauses = [st for st in r.stalls if st.kind == "gc"]
    loop_stalls = [st for st in r.stalls if st.kind == "loop"]
    print(
        f"    logged by the server in the write window: {len(loop_stalls)} loop stalls >= 100 ms"
        f" (max {max((st.ms for st in loop_stalls), default=0)} ms), {len(gc_pauses)} GC"
        f" pauses >= 50 ms (max {max((st.ms for st in gc_pauses), default=0)} ms)"
    )
    print(f"    delivery latency by worker and per {bucket_s:g} s of commit time:")
    for line in latency_table(r.samples, r.first_commit, r.stalls, bucket_s):
        print(f"      {line}")


async def run(args: argparse.Namespace, url: str) -> int:
    """Seed, measure fieldsync (idle, fan-out), then the naive baseline; print figures."""
    t_start = time.monotonic()
    start_machine = machine()
    tenant = await seed_tenant(url, args.customers)
    rng = random.Random(args.seed)
    sels = [
        rng.sample(tenant.customer_ids, rng.randint(1, min(20, len(tenant.customer_ids))))
        for _ in range(args.subscribers)
    ]
    db = app_database(url)
    try:
        device_ids = await seed_devices(db, tenant, sels)
    finally:
        await db.close()
    selections = {d: [str(c) for c in s] for d, s in zip(device_ids, sels, strict=True)}
    log(
        f"seeded {len(tenant.customer_ids):,} customers, {len(device_ids):,} devices"
        f" (mean selection {sum(map(len, sels)) / len(sels):.1f})"
    )
    order = shuffled_pool(tenant.customer_ids, args.seed)
    idle: IdleResult | None = None
    results: list[FanoutResult] = []
    with running_server(url, workers=args.workers) as server:
        async with api_client(server) as api:
            await api.login(tenant.email, PASSWORD)
            assert api.token is not None
            token = api.token
            writer = await Writer.create(api)
            if not args.skip_fieldsync:
                await warm_up(server, token, device_ids[:20], args)
                if not args.skip_idle:
                    idle = await run_idle(
                        server, token, device_ids[: args.idle_sockets], writer.checkpoint, args
                    )
                    log(f"idle: {idle.per_socket_kb:.1f} KB per socket")
                results.append(
                    await run_fanout(
                        "fieldsync",
                        server,
                        writer,
                        token,
                        device_ids,
                        selections,
                        order,
                        args,
                        seconds=args.seconds,
                        drain=args.drain,
                    )
                )
            remaining = args.budget - (time.monotonic() - t_start)
            naive_n = min(args.naive_subscribers, len(device_ids))
            if naive_n and remaining > 45:
                seconds = min(args.seconds, max(5.0, remaining - 40))
                with naive_server(url, server_secret(server), workers=args.workers) as naive:
                    await warm_up(naive, token, device_ids[:20], args)
                    results.append(
                        await run_fanout(
                            "naive",
                            naive,
                            writer,
                            token,
                            device_ids[:naive_n],
                            selections,
                            order,
                            args,
                            seconds=seconds,
                            drain=min(args.drain, max(5.0, remaining - 45 - seconds)),
                        )
                    )
            else:
                log(f"naive baseline skipped (remaining budget {remaining:.0f}s)")

    print_summary(args, start_machine, tenant, sels, idle, results)
    print(f"  total time {time.monotonic() - t_start:.0f}s")
    return 0


def print_summary(
    args: argparse.Namespace,
    start_machine: str,
    tenant: Tenant,
    sels: Sequence[Sequence[uuid.UUID]],
    idle: IdleResult | None,
    results: list[FanoutResult],
) -> None:
    """Figures, the ratio and PASS/FAIL against the issue's targets."""
    print()
    print(f"machine: {start_machine} at start; {machine()} at the end")
    mean_sel = sum(map(len, sels)) / len(sels)
    print(
        f"fan-out: pool of {len(tenant.customer_ids):,} customers, {len(sels):,} devices"
        f" selecting 1-20 (mean {mean_sel:.1f}); one writer: {args.per_push} customer edits"
        f" per pushChanges at {args.rate:g} pushes/s; servers --workers {args.workers};"
        f" {args.client_procs} client process(es)"
    )
    if idle is not None:
        verdict = "PASS" if idle.per_socket_kb <= IDLE_TARGET_KB else "FAIL"
        print(
            f"  idle cost: {idle.sockets:,} idle subscribed sockets ({idle.failed} failed):"
            f" server RSS {idle.rss_before / MB:.0f} -> {idle.rss_after / MB:.0f} MB ="
            f" {idle.per_socket_kb:.1f} KB/socket (target <= {IDLE_TARGET_KB:.0f} KB: {verdict});"
            f" sockets per worker {idle.per_worker}; client RSS {idle.client_rss / MB:.0f} MB"
        )
    for r in results:
        if args.catchup_only:
            print_catchup(r)
        else:
            print_fanout(r, args.workers, args.bucket_seconds)
    if args.skip_fieldsync or args.catchup_only or not results:
        return
    fs = results[0]
    p99_ok = fs.p(99) < P99_TARGET_S and fs.catchup_missing == 0
    print(
        f"  fieldsync p99 {_ms(fs.p(99))} (target < {_ms(P99_TARGET_S)}:"
        f" {'PASS' if p99_ok else 'FAIL'})"
    )
    if len(results) > 1:
        nv = results[1]
        ratio = fs.deliveries_per_s / nv.deliveries_per_s if nv.deliveries_per_s else float("inf")
        print(
            f"  RATIO deliveries/s fieldsync/naive = {ratio:.1f}x ({fs.subscribers:,} vs"
            f" {nv.subscribers:,} subscribers; target >= {RATIO_TARGET:.0f}x:"
            f" {'PASS' if ratio >= RATIO_TARGET else 'FAIL'}); changes/s ratio"
            f" {fs.changes_per_s / max(nv.changes_per_s, 1e-9):.1f}x; p99"
            f" {_ms(fs.p(99))} vs {_ms(nv.p(99))}"
        )
        if fs.deliveries >= 0.99 * fs.expected_deliveries:
            print(
                "    (fieldsync delivered everything it was offered: its deliveries/s is the"
                " writer's offered load, a lower bound of its capacity; raise --rate to probe)"
            )


def main() -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=5000)
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rate", type=float, default=10, help="pushes per second")
    parser.add_argument("--per-push", type=int, default=5, help="customers edited per push")
    parser.add_argument("--naive-subscribers", type=int, default=1000, help="0 skips the baseline")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--client-procs", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=100, help="handshakes in flight")
    parser.add_argument("--catchup-timeout", type=float, default=180)
    parser.add_argument("--drain", type=float, default=15, help="max wait after the writer")
    parser.add_argument("--budget", type=float, default=300, help="seconds; shortens the baseline")
    parser.add_argument("--idle-sockets", type=int, default=2000, help="K for the idle cost")
    parser.add_argument("--skip-idle", action="store_true")
    parser.add_argument(
        "--catchup-only",
        action="store_true",
        help="only the catch-up of --subscribers joining together (no idle phase, writer"
        " or baseline)",
    )
    parser.add_argument(
        "--client-deflate",
        action="store_true",
        help="clients offer permessage-deflate (as phones do); default: they do not",
    )
    parser.add_argument(
        "--skip-fieldsync", action="store_true", help="only the naive baseline (for testing it)"
    )
    parser.add_argument(
        "--bucket-seconds", type=float, default=1.0, help="latency over time: bucket width"
    )
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.catchup_only:
        args.skip_idle, args.naive_subscribers, args.seconds = True, 0, 0.0
    if args.client_deflate:
        os.environ["FIELDSYNC_BENCH_WS_DEFLATE"] = "1"  # read by the bench.ws_load workers
    with bench_database() as url:
        args.database_url = url
        return asyncio.run(run(args, url))


if __name__ == "__main__":
    sys.exit(main())
