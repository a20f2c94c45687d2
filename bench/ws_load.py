"""Load generator for the subscription benchmarks: many graphql-transport-ws clients.

Clients run in worker processes (``python -m bench.ws_load worker``, one or more, driven by
a :class:`Fleet` over stdin/stdout JSON lines) so their CPU is measured apart from the
benchmark's own process (writer, orchestration) and can be spread over cores. Each worker
runs its clients on one uvloop event loop with the ``websockets`` asyncio client
(permessage-deflate off unless ``FIELDSYNC_BENCH_WS_DEFLATE`` is set, as
``subscriptions_fanout --client-deflate`` does; no client keepalive pings; a server ``ping``
gets a ``pong``).

Per client: ``connection_init`` with the bearer token, ``connection_ack``, one ``subscribe``
of :data:`SUBSCRIPTION`; every ``next`` is timestamped with ``time.time()`` as it is read.
A client is *caught up* when it holds every record it expects (any version, or an exact
version per record). With ``record`` on, every received change is kept as
``(record id, version key, receive time)`` so the benchmark can join deliveries with the
writer's commit times (same machine, same clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil  # type: ignore[import-untyped]

from bench.common import close_sockets, serve_commands

SUBSCRIPTION = (
    "subscription($d: ID!, $since: String) { changes(deviceId: $d, since: $since) {"
    " changes { entity recordId customerId op version data } checkpoint reset } }"
)
PROTOCOL = "graphql-transport-ws"
PONG = '{"type":"pong"}'
MAX_ERRORS = 20
# Phones offer permessage-deflate; the idle-socket cost is measured both ways.
COMPRESSION = "deflate" if os.environ.get("FIELDSYNC_BENCH_WS_DEFLATE") else None
ROOT = Path(__file__).resolve().parent.parent


def version_key(version: dict[str, int]) -> str:
    """Canonical text of a version vector (sorted keys): how deliveries and commits join."""
    return orjson.dumps(version, option=orjson.OPT_SORT_KEYS).decode()


@dataclass(frozen=True)
class Sub:
    """One subscription to open: a device, its checkpoint, and what it must receive.

    ``expect`` is the name of a shared expectation (record id -> exact version key) given
    to :meth:`Fleet.start`, a list of record ids (any version), or None (nothing).
    """

    device_id: str
    since: str | None = None
    expect: str | list[str] | None = None


# --------------------------------------------------------------------------- worker side


class _Expectation:
    """Record ids to receive (shared by clients), with the exact version key or None."""

    def __init__(self, wanted: dict[str, str | None]) -> None:
        self.index = {rid: i for i, rid in enumerate(wanted)}
        self.versions = list(wanted.values())

    def __len__(self) -> int:
        return len(self.versions)


class _Client:
    """One WebSocket and its subscription."""

    __slots__ = (
        "caught_up_at",
        "changes",
        "checkpoint",
        "connected_at",
        "device_id",
        "done",
        "expect",
        "got",
        "messages",
        "port",
        "remaining",
        "retries",
        "since",
        "ws",
    )

    def __init__(self, device_id: str, since: str | None, expect: _Expectation | None) -> None:
        self.device_id = device_id
        self.since = since
        self.checkpoint = since
        self.expect = expect
        self.got = bytearray(len(expect)) if expect is not None else bytearray()
        self.remaining = len(expect) if expect is not None else 0
        self.caught_up_at: float | None = None if self.remaining else 0.0
        self.connected_at: float | None = None
        self.messages = 0
        self.changes = 0
        self.retries = 0
        # The client's local TCP port: the bench finds the server worker holding the
        # other end of the socket by it (latency by worker).
        self.port = 0
        self.done = False
        self.ws: Any = None


def _match(client: _Client, expect: _Expectation, rid: str, vkey: str, t: float) -> None:
    """Count an expected record (at the expected version) as received."""
    i = expect.index.get(rid)
    if i is not None and not client.got[i]:
        wanted = expect.versions[i]
        if wanted is None or wanted == vkey:
            client.got[i] = 1
            client.remaining -= 1
            if not client.remaining:
                client.caught_up_at = t


class _Pool:
    """The clients of one worker process."""

    def __init__(self) -> None:
        self.clients: list[_Client] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.record = False
        self.deliveries: list[tuple[str, str, float, int]] = []
        # Per delivery (same index): the receiving client's index in ``clients``.
        self.delivery_clients: list[int] = []
        self.message_no = 0
        self.errors: list[str] = []
        self.error_count = 0
        self.failed = 0
        self.closed_early = 0
        self.last_recv = 0.0
        self.last_change = 0.0
        self.started_at = 0.0

    def _error(self, text: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(text[:500])

    async def start(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Open every subscription (``concurrency`` handshakes at a time); return when each
        is subscribed or has failed."""
        shared = {name: _Expectation(w) for name, w in spec.get("expectations", {}).items()}
        self.record = bool(spec.get("record"))
        self.deliveries = []
        self.delivery_clients = []
        self.clients = []
        for device_id, since, expect in spec["subs"]:
            if isinstance(expect, str):
                exp: _Expectation | None = shared[expect]
            elif expect:
                exp = _Expectation(dict.fromkeys(expect))
            else:
                exp = None
            self.clients.append(_Client(device_id, since, exp))
        init = orjson.dumps(
            {"type": "connection_init", "payload": {"authorization": f"Bearer {spec['token']}"}}
        ).decode()
        gate = asyncio.Semaphore(int(spec.get("concurrency", 100)))
        retries = int(spec.get("retries", 5))
        pending = [len(self.clients)]
        subscribed = asyncio.Event()
        if not self.clients:
            subscribed.set()

        async def run(index: int, client: _Client) -> None:
            try:
                ws = await self._open(client, spec["url"], init, gate, retries)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                ws = None
                self.failed += 1
                self._error(f"connect failed: {exc!r}")
            pending[0] -= 1
            if pending[0] == 0:
                subscribed.set()
            if ws is not None:
                await self._read(index, client, ws)

        self.started_at = time.time()
        self.tasks = [asyncio.create_task(run(i, c)) for i, c in enumerate(self.clients)]
        await subscribed.wait()
        connects = [c.connected_at - self.started_at for c in self.clients if c.connected_at]
        return {
            "connected": len(connects),
            "failed": self.failed,
            "retries": sum(c.retries for c in self.clients),
            "connect_s": sorted(connects),
        }

    async def _open(
        self, client: _Client, url: str, init: str, gate: asyncio.Semaphore, retries: int
    ) -> Any:
        """Handshake, connection_init/ack and subscribe, retried with backoff."""
        from websockets.asyncio.client import connect
        from websockets.typing import Subprotocol

        subscribe = orjson.dumps(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {
                    "query": SUBSCRIPTION,
                    "variables": {"d": client.device_id, "since": client.since},
                },
            }
        ).decode()
        for attempt in range(retries + 1):
            ws = None
            try:
                async with gate:
                    ws = await connect(
                        url,
                        subprotocols=[Subprotocol(PROTOCOL)],
                        compression=COMPRESSION,
                        max_size=None,
                        ping_interval=None,
                        proxy=None,
                        open_timeout=120,
                        close_timeout=2,
                    )
                    await ws.send(init)
                    ack = orjson.loads(await asyncio.wait_for(ws.recv(), 120))
                    while ack["type"] == "ping":
                        await ws.send(PONG)
                        ack = orjson.loads(await asyncio.wait_for(ws.recv(), 120))
                    if ack["type"] != "connection_ack":
                        raise RuntimeError(f"expected connection_ack, got {ack}")
                    await ws.send(subscribe)
                client.ws = ws
                with contextlib.suppress(Exception):
                    client.port = int(ws.local_address[1])
                client.connected_at = time.time()
                return ws
            except Exception as exc:
                if ws is not None:
                    with contextlib.suppress(Exception):
                        await ws.close()
                client.retries += 1
                if attempt >= retries:
                    raise
                self._error(f"connect retry: {exc!r}")
                await asyncio.sleep(0.2 * (attempt + 1) + random.random() * 0.3)
        raise AssertionError("unreachable")

    async def _read(self, index: int, client: _Client, ws: Any) -> None:
        record = self.record
        deliveries = self.deliveries
        delivery_clients = self.delivery_clients
        try:
            while True:
                raw = await ws.recv(decode=False)
                t = time.time()
                self.last_recv = t
                msg = orjson.loads(raw)
                kind = msg.get("type")
                if kind == "next":
                    payload = msg.get("payload") or {}
                    data = payload.get("data")
                    if payload.get("errors") or not data:
                        self._error(f"next with errors: {str(payload)[:300]}")
                        continue
                    batch = data["changes"]
                    client.checkpoint = batch["checkpoint"]
                    client.messages += 1
                    self.message_no += 1
                    message_no = self.message_no
                    changes = batch["changes"]
                    client.changes += len(changes)
                    if changes:
                        self.last_change = t
                    expect = client.expect
                    if not record and (expect is None or not client.remaining):
                        continue
                    for change in changes:
                        rid = change["recordId"]
                        vkey = version_key(change["version"]) if change["version"] else ""
                        if record:
                            deliveries.append((rid, vkey, t, message_no))
                            delivery_clients.append(index)
                        if expect is not None and client.remaining:
                            _match(client, expect, rid, vkey, t)
                elif kind == "ping":
                    await ws.send(PONG)
                elif kind == "error":
                    self._error(f"error: {str(msg)[:300]}")
                    break
                elif kind == "complete":
                    self._error("server completed the subscription")
                    break
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the close is what we report
            if not client.done:
                self.closed_early += 1
                self._error(f"connection lost: {exc!r}")

    def status(self) -> dict[str, Any]:
        """Counters so far."""
        return {
            "clients": len(self.clients),
            "connected": sum(1 for c in self.clients if c.connected_at),
            "failed": self.failed,
            "caught_up": sum(1 for c in self.clients if c.caught_up_at is not None),
            "messages": sum(c.messages for c in self.clients),
            "changes": sum(c.changes for c in self.clients),
            "deliveries": len(self.deliveries),
            "last_recv": self.last_recv,
            "last_change": self.last_change,
            "closed_early": self.closed_early,
            "error_count": self.error_count,
            "errors": self.errors[:MAX_ERRORS],
        }

    def report(self, path: str) -> dict[str, Any]:
        """Per-client figures and (with ``record``) every delivery, written to ``path``."""
        Path(path).write_bytes(
            orjson.dumps(
                {
                    "deliveries": self.deliveries,
                    "delivery_clients": self.delivery_clients,
                    "clients": [
                        {
                            "device": c.device_id,
                            "checkpoint": c.checkpoint,
                            "connected_at": c.connected_at,
                            "caught_up_at": c.caught_up_at,
                            "missing": c.remaining,
                            "messages": c.messages,
                            "changes": c.changes,
                            "port": c.port,
                        }
                        for c in self.clients
                    ],
                }
            )
        )
        return {"path": path}

    async def close(self) -> dict[str, Any]:
        """Close every socket (a graceful close each, concurrently)."""
        await close_sockets(self.clients, self.tasks)
        self.tasks = []
        return {"closed": len(self.clients)}


async def _worker() -> None:
    """Serve the parent's commands (bench.common.serve_commands)."""
    pool = _Pool()

    async def status(_: dict[str, Any]) -> dict[str, Any]:
        return pool.status()

    async def report(command: dict[str, Any]) -> dict[str, Any]:
        return pool.report(command["path"])

    async def close(_: dict[str, Any]) -> dict[str, Any]:
        return await pool.close()

    await serve_commands(
        {"start": pool.start, "status": status, "report": report, "close": close}, pool.close
    )


def worker_main() -> None:
    """Entry point of a worker process (uvloop)."""
    import uvloop

    # No cyclic collector in the load generator: its full passes over thousands of sockets'
    # objects and every recorded delivery paused all of a process's sockets at once, which
    # read as server latency (two such processes stalled together for 200-300 ms, 17 s into
    # a 10,000-subscription write window, while the server's loops ran free). A worker lives
    # for one run; what reference counting does not free stays until it exits.
    gc.disable()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_worker())


# --------------------------------------------------------------------------- parent side


@dataclass
class Status:
    """Counters summed over the worker processes."""

    clients: int = 0
    connected: int = 0
    failed: int = 0
    caught_up: int = 0
    messages: int = 0
    changes: int = 0
    deliveries: int = 0
    last_recv: float = 0.0
    last_change: float = 0.0
    closed_early: int = 0
    error_count: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class ClientResult:
    """One client's figures at report time."""

    device: str
    checkpoint: str | None
    connected_at: float | None
    caught_up_at: float | None
    missing: int
    messages: int
    changes: int
    # The client's local TCP port (0: unknown).
    port: int = 0


@dataclass
class Report:
    """What the workers hold: per-client figures and the recorded deliveries."""

    clients: list[ClientResult]
    #: (record id, version key, receive time, message number unique over the fleet)
    deliveries: list[tuple[str, str, float, int]]
    #: per delivery (same index): the receiving client's index in ``clients``
    delivery_clients: list[int] = field(default_factory=list)


class Fleet:
    """Worker processes running the clients; use as ``async with Fleet(procs) as fleet``."""

    def __init__(self, procs: int = 1) -> None:
        self.procs = max(1, procs)
        self.workers: list[asyncio.subprocess.Process] = []
        self.ps: list[psutil.Process] = []
        self._dir = Path(tempfile.mkdtemp(prefix="fieldsync-wsload-"))

    async def __aenter__(self) -> Fleet:
        for _ in range(self.procs):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.ws_load",
                "worker",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                cwd=ROOT,
                limit=1 << 30,
            )
            self.workers.append(proc)
            self.ps.append(psutil.Process(proc.pid))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for proc in self.workers:
            if proc.returncode is None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._call(proc, {"op": "exit"}), 30)
        for proc in self.workers:
            if proc.returncode is None:
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()  # by its pid
                    await proc.wait()
        for f in self._dir.glob("*"):
            f.unlink()
        self._dir.rmdir()

    async def _call(self, proc: asyncio.subprocess.Process, command: dict[str, Any]) -> Any:
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.write(orjson.dumps(command) + b"\n")
        await proc.stdin.drain()
        line = await proc.stdout.readline()
        if not line:
            raise RuntimeError(f"load worker {proc.pid} exited ({proc.returncode})")
        return orjson.loads(line)

    async def _all(self, commands: Sequence[dict[str, Any]]) -> list[Any]:
        return list(
            await asyncio.gather(
                *(self._call(p, c) for p, c in zip(self.workers, commands, strict=True))
            )
        )

    def pids(self) -> list[int]:
        """The worker processes' pids."""
        return [p.pid for p in self.workers]

    def cpu_seconds(self) -> float:
        """User + system CPU seconds used so far by the worker processes."""
        total = 0.0
        for p in self.ps:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def rss(self) -> int:
        """Summed RSS of the worker processes (bytes)."""
        total = 0
        for p in self.ps:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return int(total)

    async def start(
        self,
        url: str,
        token: str,
        subs: Sequence[Sub],
        *,
        expectations: dict[str, dict[str, str | None]] | None = None,
        record: bool = False,
        concurrency: int = 100,
        retries: int = 5,
    ) -> dict[str, Any]:
        """Open ``subs`` (spread round-robin over the workers); returns when every one is
        subscribed or failed: counts and sorted connect times (s since the start)."""
        parts: list[list[list[Any]]] = [[] for _ in self.workers]
        for i, s in enumerate(subs):
            parts[i % len(parts)].append([s.device_id, s.since, s.expect])
        per = max(1, concurrency // len(self.workers))
        replies = await self._all(
            [
                {
                    "op": "start",
                    "url": url,
                    "token": token,
                    "subs": part,
                    "expectations": expectations or {},
                    "record": record,
                    "concurrency": per,
                    "retries": retries,
                }
                for part in parts
            ]
        )
        return {
            "connected": sum(r["connected"] for r in replies),
            "failed": sum(r["failed"] for r in replies),
            "retries": sum(r["retries"] for r in replies),
            "connect_s": sorted(x for r in replies for x in r["connect_s"]),
        }

    async def status(self) -> Status:
        """Counters over all workers."""
        replies = await self._all([{"op": "status"}] * len(self.workers))
        s = Status()
        for r in replies:
            for name in (
                "clients",
                "connected",
                "failed",
                "caught_up",
                "messages",
                "changes",
                "deliveries",
                "closed_early",
                "error_count",
            ):
                setattr(s, name, getattr(s, name) + int(r[name]))
            s.last_recv = max(s.last_recv, float(r["last_recv"]))
            s.last_change = max(s.last_change, float(r["last_change"]))
            s.errors.extend(r["errors"])
        return s

    async def wait_caught_up(
        self, within: float, *, label: str = "", log: Any = None, every: float = 5.0
    ) -> Status:
        """Poll until every connected client is caught up, or ``within`` seconds passed."""
        deadline = time.monotonic() + within
        next_log = time.monotonic() + every
        while True:
            s = await self.status()
            if s.caught_up >= s.connected or time.monotonic() > deadline:
                return s
            if log is not None and time.monotonic() >= next_log:
                next_log += every
                log(
                    f"{label}: {s.caught_up:,}/{s.connected:,} caught up,"
                    f" {s.changes:,} changes in {s.messages:,} messages"
                )
            await asyncio.sleep(0.05)

    async def wait_quiet(self, quiet: float, within: float) -> Status:
        """Wait until no change was received for ``quiet`` seconds (at most ``within``)."""
        deadline = time.monotonic() + within
        while True:
            s = await self.status()
            if time.time() - s.last_change >= quiet or time.monotonic() > deadline:
                return s
            await asyncio.sleep(0.1)

    async def report(self) -> Report:
        """Collect per-client figures and recorded deliveries from every worker."""
        paths = [str(self._dir / f"report-{p.pid}.json") for p in self.workers]
        await self._all([{"op": "report", "path": path} for path in paths])
        clients: list[ClientResult] = []
        deliveries: list[tuple[str, str, float, int]] = []
        delivery_clients: list[int] = []
        for worker, path in enumerate(paths):
            data = _take(path)
            offset = len(clients)
            clients.extend(ClientResult(**c) for c in data["clients"])
            base = worker << 40
            deliveries.extend((d[0], d[1], d[2], base + d[3]) for d in data["deliveries"])
            delivery_clients.extend(offset + i for i in data["delivery_clients"])
        return Report(clients, deliveries, delivery_clients)

    async def close(self) -> None:
        """Close every socket of every worker."""
        await self._all([{"op": "close"}] * len(self.workers))


def _take(path: str) -> Any:
    """Read and delete a worker's report file."""
    data = orjson.loads(Path(path).read_bytes())
    Path(path).unlink()
    return data


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


if __name__ == "__main__":
    if sys.argv[1:] == ["worker"]:
        # Clients many: raise the open-files limit to its hard maximum.
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        worker_main()
    else:
        print("usage: python -m bench.ws_load worker (started by bench.* benchmarks)")
        sys.exit(os.EX_USAGE)
