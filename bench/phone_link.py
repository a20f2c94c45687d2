"""Initial sync over a phone's link: a shaped TCP link between the client and the server.

Seeds one tenant (5,000 customers x (1 facility + 20 assets) = 110,000 changes), starts
`python -m server serve --workers 2` and puts a shaper in front of it: a TCP proxy with a
token bucket per direction (bandwidth) and a one-way delay of half the round trip. Through
it, for each link, a client does the initial sync in these ways:

- ``pages-plain``: today's way, the baseline: HTTP pull pages of 1,000, no compression;
- ``pages-zstd`` / ``pages-gzip``: the same pages, compressed as negotiated;
- ``catch-up``: the `changes` subscription's catch-up over one WebSocket (no round trip
  per page; permessage-deflate offered, as phones' clients do), read until every change has
  arrived; ``catch-up-plain`` the same without deflate.

For each: time to the last change decoded in the client's hands, bytes on the wire (both
directions), requests, and the server's CPU per change (its workers' CPU time during the
sync / changes). The shaper checks itself: bulk throughput and a small request's round trip
through it, against the nominal figures.

    python -m bench.phone_link [--links 4g,poor] [--ways pages-plain,pages-zstd,catch-up]
        [--customers 5000] [--assets-per-customer 20] [--levels]

``--levels`` first prints compression ratio and time of zstd and gzip levels on a real
pull page (how server/compression.py's levels were chosen).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import psutil
import websockets
import zstandard

from bench.common import (
    PASSWORD,
    PULL,
    Api,
    api_client,
    bench_database,
    log,
    machine,
    running_server,
)
from bench.pull_initial_sync import seed

CHUNK = 16 * 1024


@dataclass(frozen=True)
class Link:
    """A phone's link: bandwidth each way and the round trip."""

    name: str
    down_mbit: float
    up_mbit: float
    rtt_ms: float


LINKS = {
    "4g": Link("4G", 20, 5, 60),
    "poor": Link("poor", 4, 1, 150),
}


@dataclass
class Direction:
    """One direction of the link: bytes carried and when the last one was delivered."""

    bytes: int = 0
    first_arrival: float | None = None
    last_delivery: float = 0.0


class Shaper:
    """A TCP proxy that delays and rate-limits each direction like the link it models.

    A chunk entering a direction waits for the link to finish the chunks before it
    (bandwidth), then for half the round trip (propagation); chunks are delivered in order.
    """

    def __init__(self, upstream_port: int, link: Link) -> None:
        self.upstream_port = upstream_port
        self.link = link
        self.down = Direction()
        self.up = Direction()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Shaper:
        self.server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    def reset(self) -> None:
        """Start counting afresh (between measured runs); open pipes keep their objects."""
        for direction in (self.down, self.up):
            direction.bytes, direction.first_arrival, direction.last_delivery = 0, None, 0.0

    async def _connection(self, client_r: Any, client_w: Any) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        delay = self.link.rtt_ms / 2000
        await asyncio.gather(
            self._pipe(client_r, server_w, self.link.up_mbit, delay, self.up),
            self._pipe(server_r, client_w, self.link.down_mbit, delay, self.down),
            return_exceptions=True,
        )

    async def _pipe(
        self, reader: Any, writer: Any, mbit: float, delay: float, direction: Direction
    ) -> None:
        loop = asyncio.get_running_loop()
        bytes_per_second = mbit * 1e6 / 8
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        link_free_at = 0.0

        async def carry() -> None:
            while (item := await queue.get()) is not None:
                deliver_at, chunk = item
                wait = deliver_at - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(chunk)
                await writer.drain()
                direction.last_delivery = time.perf_counter()
            writer.close()

        carrier = asyncio.create_task(carry())
        try:
            while chunk := await reader.read(CHUNK):
                now = loop.time()
                if direction.first_arrival is None:
                    direction.first_arrival = time.perf_counter()
                link_free_at = max(now, link_free_at) + len(chunk) / bytes_per_second
                direction.bytes += len(chunk)
                queue.put_nowait((link_free_at + delay, chunk))
        except (ConnectionError, OSError):
            pass
        queue.put_nowait(None)
        await carrier


@dataclass
class SyncRun:
    way: str
    seconds: float
    changes: int
    requests: int
    down_bytes: int
    up_bytes: int
    cpu_seconds: float
    notes: list[str] = field(default_factory=list)


class WorkerCpu:
    """CPU time of the server's processes (workers and supervisor) across a run."""

    def __init__(self, pids: list[int]) -> None:
        self.procs = [psutil.Process(pid) for pid in pids]

    def total(self) -> float:
        spent = 0.0
        for proc in self.procs:
            times = proc.cpu_times()
            spent += times.user + times.system
        return spent


async def pages(api: Api, device_id: str, limit: int) -> tuple[int, int]:
    """Pull every page; returns (changes, requests). Decoding is part of the request."""
    since: str | None = None
    changes = requests = 0
    while True:
        page = (await api(PULL, {"d": device_id, "since": since, "limit": limit}))["pull"]
        requests += 1
        changes += len(page["changes"])
        since = page["checkpoint"]
        if not page["hasMore"]:
            return changes, requests


CATCH_UP = """subscription($d: ID!, $since: String) {
  changes(deviceId: $d, since: $since) { checkpoint reset
    changes { entity recordId customerId op version data } } }"""


async def catch_up(
    port: int, token: str, device_id: str, total: int, *, deflate: bool
) -> tuple[int, int]:
    """Subscribe from the beginning and read until ``total`` changes have arrived."""
    async with websockets.connect(
        f"ws://127.0.0.1:{port}/graphql",
        subprotocols=[websockets.Subprotocol("graphql-transport-ws")],
        max_size=None,
        compression="deflate" if deflate else None,
        # The server pings; a client ping's answer would queue behind megabytes of catch-up
        # on a slow link and time out.
        ping_interval=None,
    ) as socket:
        await socket.send(
            orjson.dumps(
                {"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}
            )
        )
        ack = orjson.loads(await socket.recv())
        assert ack["type"] == "connection_ack", ack
        await socket.send(
            orjson.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": CATCH_UP, "variables": {"d": device_id, "since": None}},
                }
            )
        )
        changes = messages = 0
        while changes < total:
            message = orjson.loads(await socket.recv())
            if message["type"] == "ping":
                # The server's keepalive (every 20 s, any phase of it): answered as any
                # graphql-ws client does.
                await socket.send(b'{"type":"pong"}')
                continue
            assert message["type"] == "next", message
            changes += len(message["payload"]["data"]["changes"]["changes"])
            messages += 1
        return changes, messages


@asynccontextmanager
async def shaped_api(port: int, accept: str) -> AsyncIterator[Api]:
    """An API client through the shaper offering ``accept`` (one keep-alive connection)."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}",
        timeout=httpx.Timeout(600),
        limits=limits,
        headers={"Accept-Encoding": accept},
    ) as client:
        yield Api(client)


async def measure(
    way: str,
    shaper: Shaper,
    cpu: WorkerCpu,
    run: Callable[[], Awaitable[tuple[int, int]]],
) -> SyncRun:
    shaper.reset()
    cpu_before = cpu.total()
    started = time.perf_counter()
    changes, requests = await run()
    seconds = time.perf_counter() - started
    return SyncRun(
        way,
        seconds,
        changes,
        requests,
        shaper.down.bytes,
        shaper.up.bytes,
        cpu.total() - cpu_before,
    )


async def shaper_check(shaper: Shaper, api: Api) -> str:
    """How close the shaper is to its nominal link: a bulk download and a tiny round trip."""
    shaper.reset()
    rtts = []
    for _ in range(5):
        started = time.perf_counter()
        await api.client.get("/healthz")
        rtts.append(time.perf_counter() - started)
    shaper.reset()
    await api.client.get("/graphiql/static/graphiql.min.js")  # ~1 MB of JavaScript, identity
    down = shaper.down
    assert down.first_arrival is not None
    carried = down.bytes * 8 / (down.last_delivery - down.first_arrival) / 1e6
    link = shaper.link
    return (
        f"shaper check ({link.name}): bulk {carried:.1f} Mbit/s of {link.down_mbit:g}"
        f" ({carried / link.down_mbit:.0%}); small request round trip"
        f" {min(rtts) * 1000:.0f} ms of {link.rtt_ms:g} ms"
    )


def levels(page: bytes) -> None:
    """Ratio and time of each candidate level on one real page (best of 5)."""
    print(f"compression levels on one pull page of {len(page) / 1e3:.0f} KB:")

    def best(fn: Callable[[], bytes]) -> tuple[float, int]:
        times, size = [], 0
        for _ in range(5):
            started = time.perf_counter()
            size = len(fn())
            times.append(time.perf_counter() - started)
        return min(times), size

    candidates: list[tuple[str, Callable[[], bytes]]] = []
    for level in (1, 3, 6, 9):
        candidates.append(
            (f"zstd {level}", lambda lv=level: zstandard.ZstdCompressor(level=lv).compress(page))
        )
    for level in (1, 2, 3, 4, 5, 6, 9):
        candidates.append((f"gzip {level}", lambda lv=level: gzip.compress(page, lv, mtime=0)))
    candidates.append(("deflate 6", lambda: zlib.compress(page, 6)))
    for name, fn in candidates:
        seconds, size = best(fn)
        print(f"  {name:>9}: {len(page) / size:5.1f}x, {seconds * 1000:6.2f} ms")


def report(link: Link, runs: list[SyncRun], check: str) -> None:
    base = next((r for r in runs if r.way == "pages-plain"), None)
    print(
        f"\n{link.name}: {link.down_mbit:g} Mbit/s down, {link.up_mbit:g} up,"
        f" {link.rtt_ms:g} ms RTT"
    )
    print(f"  {check}")
    for run in runs:
        wire = run.down_bytes + run.up_bytes
        cpu_us = run.cpu_seconds / max(run.changes, 1) * 1e6
        line = (
            f"  {run.way:>12}: {run.seconds:6.2f} s to the last change, {run.changes:,} changes,"
            f" {run.requests} requests/messages, wire {wire / 1e6:6.2f} MB"
            f" (down {run.down_bytes / 1e6:.2f}, up {run.up_bytes / 1e6:.2f}),"
            f" server CPU {cpu_us:.1f} us/change"
        )
        if base is not None and run is not base:
            base_wire = base.down_bytes + base.up_bytes
            base_cpu = base.cpu_seconds / max(base.changes, 1)
            line += (
                f"; vs pages-plain: time {base.seconds / run.seconds:.1f}x faster,"
                f" bytes {base_wire / wire:.1f}x fewer,"
                f" CPU/change {run.cpu_seconds / max(run.changes, 1) / base_cpu:.2f}x"
            )
        print(line)


async def run(args: argparse.Namespace, url: str) -> int:
    start_machine = machine()
    _org, email, counts = await seed(url, args.customers, args.assets_per_customer)
    total = counts.customers + counts.contacts + counts.facilities + counts.assets
    ways = args.ways.split(",")
    with running_server(url, workers=args.workers) as server:
        upstream = int(server.url.rsplit(":", 1)[1])
        cpu = WorkerCpu([server.process.pid, *server.worker_pids()])
        async with api_client(server) as direct:
            await direct.login(email, PASSWORD)
            token = direct.token
            assert token
            if args.levels:
                device = await direct.register_device("levels")
                response = await direct.client.post(
                    "/graphql",
                    json={
                        "query": PULL,
                        "variables": {"d": device["id"], "since": None, "limit": 1000},
                    },
                    headers={"Authorization": f"Bearer {token}", "Accept-Encoding": "identity"},
                )
                levels(response.content)
            for name in args.links.split(","):
                link = LINKS[name]
                async with Shaper(upstream, link) as shaper:
                    results: list[SyncRun] = []
                    async with shaped_api(shaper.port, "identity") as plain:
                        plain.token = token
                        check = await shaper_check(shaper, plain)
                        log(check)
                    for way in ways:
                        device = await direct.register_device(f"{name}-{way}")
                        if way.startswith("catch-up"):
                            result = await measure(
                                way,
                                shaper,
                                cpu,
                                lambda d=device["id"], z=way == "catch-up": catch_up(
                                    shaper.port, token, d, total, deflate=z
                                ),
                            )
                        else:
                            coding = {"pages-plain": "identity", "pages-zstd": "zstd"}.get(
                                way, "gzip"
                            )
                            async with shaped_api(shaper.port, coding) as api:
                                api.token = token
                                result = await measure(
                                    way,
                                    shaper,
                                    cpu,
                                    lambda api=api, d=device["id"]: pages(api, d, args.page),
                                )
                        if result.changes != total:
                            raise AssertionError(f"{way}: {result.changes} of {total} changes")
                        log(f"{link.name} {way}: {result.seconds:.2f}s")
                        results.append(result)
                    report(link, results, check)
    print(f"\nmachine: {start_machine} at start; {machine()} at the end")
    print(f"initial sync of {total:,} changes ({counts.assets:,} assets), pages of {args.page}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--links", default="4g,poor")
    parser.add_argument(
        "--ways", default="pages-plain,pages-gzip,pages-zstd,catch-up-plain,catch-up"
    )
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--assets-per-customer", type=int, default=20)
    parser.add_argument("--page", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--levels", action="store_true")
    args = parser.parse_args()
    with bench_database() as url:
        return asyncio.run(run(args, url))


if __name__ == "__main__":
    raise SystemExit(main())
