"""Database faults under load (issue #7 part 5): the server heals by itself.

Each scenario runs a real server process, a writer pushing one new customer per push, a
subscriber on the `changes` stream (reconnecting from its last checkpoint whenever its
socket or subscription ends) and a `/readyz` poller; then it breaks the database:

- (a) ``pg_terminate_backend`` of every backend of the server's database (pool connections
  and the LISTEN connection alike), on the shared test PostgreSQL;
- (b) a stop and start of a dedicated PostgreSQL 15 (the shared one cannot be restarted).

Checks: recovery without help within seconds (printed), ``/readyz`` 503 during an outage,
every acknowledged push stored, receipts and rows consistent for every push attempted (no
half-applied push), and the subscriber got every acknowledged change, in order, with
duplicates only across a reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from db.engine import Database
from db.migrate import upgrade
from tests.api.sync_client import Device
from tests.api.test_subscriptions import owner_sql
from tests.api.ws_client import Socket
from tests.conftest import (
    LIVE_TEST_ENV,
    ServerProcess,
    Tenant,
    free_port,
    new_tenant,
    spawn_server,
    stop_server,
)

PG_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass
class Load:
    """What the writer, subscriber and readiness poller saw (monotonic timestamps)."""

    acked: list[tuple[float, str, str]] = field(default_factory=list)  # (t, id, mutation id)
    attempted: list[tuple[str, str]] = field(default_factory=list)  # (id, mutation id)
    failures: list[tuple[float, float, str]] = field(default_factory=list)  # (t, seconds, why)
    # (t, session number, record id): sessions count the subscriber's (re)subscriptions.
    received: list[tuple[float, int, str]] = field(default_factory=list)
    sessions: int = 0
    readyz: list[tuple[float, int]] = field(default_factory=list)
    # The writer stops first so the subscriber can still receive the last acknowledged changes.
    stop_writing: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)


async def write(load: Load, device: Device) -> None:
    """One new customer per push, sequentially, until told to stop."""
    while not load.stop_writing.is_set():
        record_id = str(uuid.uuid4())
        change = device.change("customer", record_id, {"businessName": "F"}, base=None)
        load.attempted.append((record_id, change["clientMutationId"]))
        started = time.monotonic()
        try:
            response = await device.api.post(
                "mutation($d: ID!, $c: [ChangeInput!]!) { pushChanges(deviceId: $d, changes: $c)"
                " { __typename ... on PushResult { results { outcome } } } }",
                {"d": device.id, "c": [change]},
            )
            body = response.json()
            outcomes = (
                [
                    r["outcome"]
                    for r in (body.get("data") or {}).get("pushChanges", {}).get("results", [])
                ]
                if body.get("data")
                else []
            )
            if outcomes == ["APPLIED"]:
                load.acked.append((time.monotonic(), record_id, change["clientMutationId"]))
            else:
                codes = {(e.get("extensions") or {}).get("code") for e in body.get("errors") or []}
                load.failures.append((started, time.monotonic() - started, f"codes {codes}"))
        except (httpx.HTTPError, ValueError) as exc:
            load.failures.append((started, time.monotonic() - started, repr(exc)))
        await asyncio.sleep(0.02)


async def subscribe(load: Load, ws_url: str, device: Device) -> None:
    """Follow the stream; on any end (close, error, timeout) resume from the checkpoint."""
    checkpoint: str | None = None
    while not load.stop.is_set():
        load.sessions += 1
        session = load.sessions
        try:
            socket = await Socket.open(ws_url, device.api.token)
        except (OSError, ConnectionClosed, AssertionError, TimeoutError):
            await asyncio.sleep(0.2)
            continue
        try:
            await socket.subscribe("s", device.id, checkpoint)
            while not load.stop.is_set():
                try:
                    message = await socket.recv(1)
                except TimeoutError:
                    continue
                if message.get("type") != "next" or message.get("id") != "s":
                    break  # an error for the subscription: resubscribe from the checkpoint
                batch = message["payload"]["data"]["changes"]
                now = time.monotonic()
                load.received += [(now, session, c["recordId"]) for c in batch["changes"]]
                checkpoint = batch["checkpoint"]
        except (ConnectionClosed, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                await socket.close()
        await asyncio.sleep(0.2)


async def poll_readyz(load: Load, client: httpx.AsyncClient) -> None:
    """Sample /readyz every 100 ms."""
    while not load.stop.is_set():
        try:
            status = (await client.get("/readyz", timeout=5)).status_code
        except httpx.HTTPError:
            status = 0
        load.readyz.append((time.monotonic(), status))
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running_load(
    server: ServerProcess, db: Database, client: httpx.AsyncClient
) -> AsyncIterator[Load]:
    """A tenant, a writer, a subscriber (caught up) and a readiness poller on ``server``."""
    tenant: Tenant = await new_tenant(db, client)
    writer = await Device(await tenant.add_user("TECHNICIAN")).register()
    reader = await Device(await tenant.add_user("TECHNICIAN")).register()
    load = Load()
    tasks = [
        asyncio.create_task(subscribe(load, server.ws_url, reader)),
        asyncio.create_task(write(load, writer)),
        asyncio.create_task(poll_readyz(load, client)),
    ]
    try:
        await wait_for(lambda: len(load.received) >= 3, 20, "the load to start flowing")
        yield load
    finally:
        load.stop_writing.set()
        await asyncio.wait(tasks[1:2], timeout=10)
        # Whatever was acknowledged gets a bounded while to arrive; check_consistency judges.
        with contextlib.suppress(AssertionError):
            await wait_for(lambda: not undelivered(load), 20, "every change delivered")
        load.stop.set()
        await asyncio.wait(tasks, timeout=10)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def wait_for(condition: Any, seconds: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def recovery(load: Load, fault_end: float) -> tuple[float, float]:
    """Seconds from ``fault_end`` to the first acknowledged push and the first delivery."""
    push = min(t for t, _, _ in load.acked if t > fault_end) - fault_end
    # Delivery of a change acknowledged after the fault (not one already in flight).
    after = {r for t, r, _ in load.acked if t > fault_end}
    delivery = min(t for t, _, r in load.received if r in after) - fault_end
    return push, delivery


def undelivered(load: Load) -> list[str]:
    """Acknowledged changes the subscriber has not received."""
    received = {r for _, _, r in load.received}
    return [r for _, r, _ in load.acked if r not in received]


def delivered_after(load: Load, moment: float) -> bool:
    """A change acknowledged after ``moment`` has reached the subscriber."""
    after = {r for t, r, _ in load.acked if t > moment}
    return any(r in after for _, _, r in load.received)


async def check_consistency(load: Load, owner_url: str) -> None:
    """Acknowledged pushes stored and delivered in order; no push half-applied."""
    acked_ids = [record_id for _, record_id, _ in load.acked]
    # The subscriber got every acknowledged change (running_load waited for it).
    missing = undelivered(load)
    assert not missing, (
        f"{len(missing)} of {len(acked_ids)} acknowledged changes never delivered: {missing[:5]}"
        f" (acked at {[round(t, 2) for t, r, _ in load.acked if r in missing[:5]]},"
        f" last received {round(load.received[-1][0], 2) if load.received else None},"
        f" {load.sessions} sessions)"
    )
    rows = await owner_sql(
        owner_url,
        "SELECT id::text FROM customers WHERE id::text = ANY(:ids)",
        ids=[r for r, _ in load.attempted],
    )
    stored = {r for (r,) in rows}
    receipts = {
        m
        for (m,) in await owner_sql(
            owner_url,
            "SELECT client_mutation_id FROM push_receipts WHERE client_mutation_id = ANY(:ms)",
            ms=[m for _, m in load.attempted],
        )
    }
    assert set(acked_ids) <= stored, "an acknowledged push is missing"
    # All or nothing: a push's row exists exactly when its receipt does.
    for record_id, mutation_id in load.attempted:
        assert (record_id in stored) == (mutation_id in receipts), (record_id, mutation_id)
    # In commit order (one sequential writer), duplicates only across a reconnect.
    first_seen: dict[str, int] = {}
    order: list[str] = []
    for _, session, record_id in load.received:
        if record_id in first_seen:
            assert first_seen[record_id] != session, f"{record_id} twice in one session"
            continue
        first_seen[record_id] = session
        order.append(record_id)
    delivered_acked = [r for r in order if r in set(acked_ids)]
    assert delivered_acked == acked_ids, "acknowledged changes arrived out of order"


def clean_failures(load: Load, since: float) -> None:
    """Pushes failing during an outage fail fast, with an error, instead of hanging."""
    failures = [f for f in load.failures if f[0] >= since]
    slow = [f for f in failures if f[1] > 15]
    assert not slow, slow
    # A GraphQL error says what happened (retry later); a dropped HTTP connection is fine too.
    unclear = [f for f in failures if "codes" in f[2] and "DATABASE_UNAVAILABLE" not in f[2]]
    assert not unclear, unclear


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    """A server process on the shared test database."""
    process = spawn_server(database_url, tmp_path, LIVE_TEST_ENV)
    yield process
    stop_server(process)


async def test_terminated_backends_heal(server, db, database_url, capsys):
    """Every backend of the server killed at once: pushes and the stream resume by themselves."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        async with running_load(server, db, client) as load:
            await asyncio.sleep(1)
            killed_at = time.monotonic()
            killed = await owner_sql(
                database_url,
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND usename = 'fieldsync_app'"
                " AND pid <> pg_backend_pid()",
            )
            assert killed[0][0] >= 2, killed  # at least a pooled connection and the listener
            await wait_for(
                lambda: delivered_after(load, killed_at),
                30,
                "recovery after pg_terminate_backend",
            )
            await asyncio.sleep(1)
        push, delivery = recovery(load, killed_at)
        await check_consistency(load, database_url)
        clean_failures(load, killed_at)
    with capsys.disabled():
        print(
            f"\n[faults] pg_terminate_backend of {killed[0][0]} backends: push ok after"
            f" {push:.2f}s, subscriber received after {delivery:.2f}s,"
            f" {len(load.failures)} failed pushes, {load.sessions} subscriber sessions"
        )


@dataclass
class Postgres:
    """A dedicated PostgreSQL 15 cluster (pg_ctl, as the `postgres` OS user)."""

    data: Path
    port: int

    def ctl(self, *args: str) -> None:
        """Run pg_ctl on the cluster; root may not run PostgreSQL, so as `postgres`."""
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.data),
                "-w",
                "-t",
                "30",
                *args,
            ],
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        """Start on 127.0.0.1 only; its socket directory is the data directory."""
        self.ctl(
            "-l",
            str(self.data / "log"),
            "-o",
            f"-h 127.0.0.1 -p {self.port} -k {self.data}",
            "start",
        )

    def stop(self) -> None:
        """A fast shutdown: clients are disconnected, as in a real restart."""
        self.ctl("-m", "fast", "stop")


@pytest.fixture
def dedicated_pg() -> Iterator[tuple[Postgres, str]]:
    """A fresh cluster in a temporary directory, migrated; stopped and removed afterwards."""
    if not (PG_BIN / "initdb").exists() or shutil.which("runuser") is None:
        pytest.skip("PostgreSQL 15 binaries or runuser not available")
    root = Path(tempfile.mkdtemp(prefix="fieldsync-faults-pg-"))
    shutil.chown(root, "postgres")
    pg = Postgres(root / "data", free_port())
    subprocess.run(
        [
            "runuser",
            "-u",
            "postgres",
            "--",
            str(PG_BIN / "initdb"),
            "-D",
            str(pg.data),
            "-A",
            "trust",
            "-U",
            "postgres",
        ],
        check=True,
        capture_output=True,
    )
    pg.start()
    try:
        url = f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"
        upgrade(url, app_role="fieldsync_app", app_password=None)
        yield pg, url
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            pg.stop()
        shutil.rmtree(root, ignore_errors=True)


async def test_database_restart_heals(dedicated_pg, tmp_path, capsys):
    """The database stops and starts mid-load: /readyz says 503 meanwhile, then all resumes."""
    pg, url = dedicated_pg
    server = spawn_server(url, tmp_path, LIVE_TEST_ENV)
    db = Database.connect(url, app_role="fieldsync_app", app_password=None, pool_size=2)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            async with running_load(server, db, client) as load:
                await asyncio.sleep(1)
                stopped_at = time.monotonic()
                await asyncio.to_thread(pg.stop)
                down_from = time.monotonic()  # the database has shut down by now
                await wait_for(
                    lambda: any(t > stopped_at and s == 503 for t, s in load.readyz),
                    10,
                    "/readyz to report the outage",
                )
                await asyncio.sleep(2)  # stay down a while under load
                down_until = time.monotonic()  # (it may accept before `pg_ctl start -w` returns)
                await asyncio.to_thread(pg.start)
                started_at = time.monotonic()
                await wait_for(
                    lambda: (
                        delivered_after(load, started_at)
                        and any(t > started_at and s == 200 for t, s in load.readyz)
                    ),
                    30,
                    "recovery after the restart",
                )
                await asyncio.sleep(1)
            push, delivery = recovery(load, started_at)
            ready = min(t for t, s in load.readyz if t > started_at and s == 200) - started_at
            down = [s for t, s in load.readyz if down_from + 0.3 < t < down_until]
            assert down, "no /readyz sample while the database was down"
            assert set(down) == {503}, down
            await check_consistency(load, url)
            clean_failures(load, stopped_at)
    finally:
        await db.close()
        stop_server(server)
    with capsys.disabled():
        print(
            f"\n[faults] database restart (down {started_at - stopped_at:.1f}s): /readyz ready"
            f" after {ready:.2f}s, push ok after {push:.2f}s, subscriber received after"
            f" {delivery:.2f}s, {len(load.failures)} failed pushes (slowest"
            f" {max((f[1] for f in load.failures), default=0):.2f}s, e.g."
            f" {load.failures[0][2][:120] if load.failures else '-'}),"
            f" {load.sessions} subscriber sessions"
        )
