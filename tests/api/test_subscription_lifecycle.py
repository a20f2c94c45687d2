"""The `changes` subscription across a connection's and a process's life.

- a consumer that stops reading is closed with 4003 once its bounded send buffer is full,
  without disturbing another subscriber, and resumes with exactly what it missed;
- SIGTERM drains a server process: every socket is closed with a documented shutdown code,
  the process exits in bounded time, clients resume on another process;
- the strawberry resolver (`schema.subscribe`) catches up, then follows the hub.

Every server is a real `fieldsync serve` process on 127.0.0.1, started and stopped by its
pid; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import socket
import struct
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from math import ceil
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from db.engine import Database
from resolvers.context import Context
from server.schema import build_schema
from server.settings import Settings
from tests.api.sync_client import Device
from tests.api.test_subscriptions import phone
from tests.api.ws_client import CHANGES, Socket, ids_in
from tests.conftest import (
    LIVE_TEST_ENV,
    ServerProcess,
    Tenant,
    new_tenant,
    spawn_server,
    stop_server,
)

# -- a raw client that can really stop reading ------------------------------------------


class RawSocket:
    """graphql-transport-ws over a plain TCP socket with a tiny receive buffer.

    Once the test stops calling :meth:`read_frame`, nothing reads the socket: the kernel's
    receive window closes and the server's writes back up, as with a stalled phone.
    Blocking calls run in a thread (``asyncio.to_thread``), each with a timeout.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    @classmethod
    def open(cls, ws_url: str, *, rcvbuf: int = 4096, seconds: float = 10) -> RawSocket:
        """TCP connect (receive buffer set before connecting) and the HTTP upgrade."""
        assert ws_url.startswith("ws://127.0.0.1:"), ws_url
        host_port, _, path = ws_url.removeprefix("ws://").partition("/")
        host, _, port = host_port.partition(":")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Set before connect: the window is negotiated small and never auto-tuned upwards.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(seconds)
        sock.connect((host, int(port)))
        raw = cls(sock)
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            (
                f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
            ).encode()
        )
        while b"\r\n\r\n" not in raw.buffer:
            raw._fill()
        head, _, raw.buffer = raw.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return raw

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the TCP connection")
        self.buffer += chunk

    def _take(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._fill()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def send_frame(self, opcode: int, payload: bytes) -> None:
        """One masked client frame."""
        header = bytes([0x80 | opcode])
        if len(payload) < 126:
            header += bytes([0x80 | len(payload)])
        elif len(payload) < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", len(payload))
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send(self, message: dict[str, Any]) -> None:
        """A text frame with a JSON message."""
        self.send_frame(0x1, orjson.dumps(message))

    def read_frame(self) -> tuple[int, bytes]:
        """The next complete frame from the server (unmasked, unfragmented)."""
        first, second = self._take(2)
        assert first & 0x80, "fragmented frames are not expected"
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._take(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._take(8))
        return first & 0x0F, self._take(length)

    def recv(self) -> dict[str, Any]:
        """The next graphql-transport-ws message (protocol pings answered)."""
        while True:
            opcode, payload = self.read_frame()
            if opcode == 0x9:
                self.send_frame(0xA, payload)
                continue
            assert opcode == 0x1, (opcode, payload[:200])
            message: dict[str, Any] = orjson.loads(payload)
            if message.get("type") == "ping":
                self.send({"type": "pong"})
                continue
            return message

    def drain_until_close(self) -> tuple[list[dict[str, Any]], int]:
        """Read everything the server had queued, up to its close frame: (messages, code)."""
        messages: list[dict[str, Any]] = []
        while True:
            opcode, payload = self.read_frame()
            if opcode == 0x8:
                (code,) = struct.unpack("!H", payload[:2])
                # Complete the closing handshake, then let go of the socket.
                with contextlib.suppress(OSError):
                    self.send_frame(0x8, payload[:2])
                self.sock.close()
                return messages, code
            if opcode == 0x1:
                messages.append(orjson.loads(payload))

    def close(self) -> None:
        """Drop the TCP connection."""
        self.sock.close()


# -- helpers -----------------------------------------------------------------------------


async def push_customers(writer: Device, n: int, size: int = 0) -> list[str]:
    """Create ``n`` customers in one transaction (one live batch); returns their ids."""
    name = "x" * size if size else "Pushed"
    changes = [
        writer.change("customer", str(uuid.uuid4()), {"businessName": name}, base=None)
        for _ in range(n)
    ]
    result = await writer.push(changes)
    assert {r["outcome"] for r in result["results"]} == {"APPLIED"}, result
    return [c["recordId"] for c in changes]


BATCH_BYTES = 100_000


def max_tcp_send_buffer() -> int:
    """The kernel's largest auto-tuned TCP send buffer (Linux), 4 MB if unknown."""
    try:
        return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, IndexError, ValueError):
        return 4 * 1024 * 1024


def next_batches(messages: list[dict[str, Any]], op_id: str) -> list[dict[str, Any]]:
    """The `changes` payloads of ``op_id``'s `next` messages (anything else fails)."""
    batches = []
    for message in messages:
        assert message.get("id") == op_id, message
        assert message["type"] == "next", message
        batches.append(message["payload"]["data"]["changes"])
    return batches


async def open_socket(ws_url: str, token: str) -> Socket:
    """Like ``Socket.open``, without the client's 1 MB message limit (full catch-up pages
    of large records are bigger)."""
    ws = await connect(
        ws_url, subprotocols=["graphql-transport-ws"], open_timeout=10, max_size=None
    )
    socket_ = Socket(ws)
    await socket_.send({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
    assert await socket_.recv() == {"type": "connection_ack"}
    return socket_


async def read_until_closed(
    socket_: Socket, op_id: str, seconds: float
) -> tuple[list[dict[str, Any]], int]:
    """Every batch received before the server's close frame, and the close code."""
    batches: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds

    async def receive_until_closed() -> None:
        while True:
            message = await socket_.recv(max(0.01, deadline - time.monotonic()))
            batches.extend(next_batches([message], op_id))

    with pytest.raises(ConnectionClosed) as closed:
        await receive_until_closed()
    frame = closed.value.rcvd
    assert frame is not None, "closed without a close frame"
    return batches, frame.code


# -- fixtures ----------------------------------------------------------------------------

# Four queued messages per socket (1 MB): a stalled consumer overflows after a few batches.
SMALL_BUFFER_ENV = {
    **LIVE_TEST_ENV,
    "FIELDSYNC_WS_SEND_BUFFER_MESSAGES": "4",
    "FIELDSYNC_WS_SEND_BUFFER_BYTES": str(1024 * 1024),
    "FIELDSYNC_WS_PING_SECONDS": "0",
}


@pytest.fixture
def small_buffer_server(database_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    """A dedicated server process whose sockets have a small send buffer."""
    server = spawn_server(database_url, tmp_path, SMALL_BUFFER_ENV)
    yield server
    stop_server(server)


@pytest.fixture
def doomed_and_survivor(
    database_url: str, tmp_path: Path
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two server processes (started in parallel): one the test terminates, one that stays.

    Both are stopped by their pids at the end (the first only if it is still running).
    """
    dirs = [tmp_path / "doomed", tmp_path / "survivor"]
    for path in dirs:
        path.mkdir()
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(spawn_server, database_url, path, LIVE_TEST_ENV) for path in dirs]
        wait(futures)
    started = [f.result() for f in futures if f.exception() is None]
    if len(started) < 2:
        for server in started:
            stop_server(server)
        raise next(e for f in futures if (e := f.exception()) is not None)
    yield started[0], started[1]
    for server in started:
        stop_server(server)


@pytest.fixture
async def http_of(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """HTTP clients by base URL, closed at the end."""
    clients: dict[str, httpx.AsyncClient] = {}
    yield clients
    for client in clients.values():
        await client.aclose()


def http_client(clients: dict[str, httpx.AsyncClient], server: ServerProcess) -> httpx.AsyncClient:
    if server.url not in clients:
        clients[server.url] = httpx.AsyncClient(base_url=server.url, timeout=30)
    return clients[server.url]


# -- 1. slow consumer --------------------------------------------------------------------


class TestSlowConsumer:
    async def test_stalled_reader_is_closed_4003_and_resumes_with_what_it_missed(
        self, small_buffer_server: ServerProcess, db: Database, http_of: Any
    ) -> None:
        """A subscriber that stops reading while many batches are pushed is closed with 4003
        once its send buffer is full; a reading subscriber on the same server gets every
        batch and keeps receiving; the slow one, resuming from the last checkpoint it got,
        receives exactly the changes it missed."""
        server = small_buffer_server
        tenant = await new_tenant(db, http_client(http_of, server))
        slow_device, fast_device, writer = [await phone(tenant) for _ in range(3)]

        fast = await Socket.open(server.ws_url, fast_device.api.token)
        await fast.subscribe("fast", fast_device.id)
        await fast.collect("fast", lambda bs: len(bs) >= 1)

        slow = await asyncio.to_thread(RawSocket.open, server.ws_url)
        try:
            await asyncio.to_thread(
                slow.send,
                {
                    "type": "connection_init",
                    "payload": {"authorization": f"Bearer {slow_device.api.token}"},
                },
            )
            assert await asyncio.to_thread(slow.recv) == {"type": "connection_ack"}
            await asyncio.to_thread(
                slow.send,
                {
                    "id": "slow",
                    "type": "subscribe",
                    "payload": {
                        "query": CHANGES,
                        "variables": {"d": slow_device.id, "since": None},
                    },
                },
            )
            [caught_up] = next_batches([await asyncio.to_thread(slow.recv)], "slow")
            assert caught_up["changes"] == []
            # From here on nothing reads the slow socket.

            written: list[str] = []
            fast_batches: list[dict[str, Any]] = []
            # ~100 KB per transaction (one live batch each), in all more than the kernel can
            # buffer for the stalled socket (the server's largest TCP send buffer plus our small
            # receive buffer) plus four queued messages.
            for _ in range(ceil((max_tcp_send_buffer() + 2 * 1024 * 1024) / BATCH_BYTES)):
                written += await push_customers(writer, 40, size=BATCH_BYTES // 40)
                expected = len(written) - len(ids_in(fast_batches))
                fast_batches += await fast.collect(
                    "fast", lambda bs, n=expected: len(ids_in(bs)) >= n, seconds=15
                )
            assert ids_in(fast_batches) == written

            messages, code = await asyncio.wait_for(asyncio.to_thread(slow.drain_until_close), 30)
        finally:
            slow.close()  # also when an assertion above failed
        assert code == 4003
        received = next_batches(messages, "slow")
        got = ids_in(received)
        assert got == written[: len(got)], "the slow socket got its batches in order"
        assert len(got) < len(written), "the slow socket was closed before the end"
        checkpoint = received[-1]["checkpoint"] if received else caught_up["checkpoint"]

        # The reading subscriber is unaffected and keeps receiving.
        after = await push_customers(writer, 1)
        assert ids_in(await fast.collect("fast", lambda bs: len(bs) >= 1)) == after
        written += after

        # Resuming from its last checkpoint brings exactly what it missed, once.
        resumed = await open_socket(server.ws_url, slow_device.api.token)
        await resumed.subscribe("again", slow_device.id, checkpoint)
        missed = written[len(got) :]
        batches = await resumed.collect(
            "again", lambda bs: len(ids_in(bs)) >= len(missed), seconds=30
        )
        assert ids_in(batches) == missed
        # Nothing else was pending: the next write arrives alone.
        last = await push_customers(writer, 1)
        assert ids_in(await resumed.collect("again", lambda bs: len(bs) >= 1)) == last
        await resumed.close()
        await fast.close()


# -- 2. graceful drain -------------------------------------------------------------------

SHUTDOWN_CODES = {1001, 1012}  # docs/subscriptions.md: application drain, uvicorn restart


class TestGracefulDrain:
    async def test_sigterm_closes_every_socket_and_clients_resume_elsewhere(
        self,
        doomed_and_survivor: tuple[ServerProcess, ServerProcess],
        db: Database,
        http_of: Any,
    ) -> None:
        """SIGTERM to a server with open subscriptions closes every socket with 1001 or 1012
        and the process exits within seconds; each client, resuming on another server process
        from the last checkpoint it received, gets exactly the changes committed after it
        (writes go on throughout the shutdown)."""
        doomed, survivor = doomed_and_survivor
        tenant = await new_tenant(db, http_client(http_of, survivor))
        writer = await phone(tenant)
        devices = [await phone(tenant) for _ in range(3)]
        sockets: list[Socket] = []
        received: list[list[dict[str, Any]]] = []
        for device in devices:
            socket_ = await Socket.open(doomed.ws_url, device.api.token)
            await socket_.subscribe("live", device.id)
            received.append(await socket_.collect("live", lambda bs: len(bs) >= 1))
            sockets.append(socket_)
        written = await push_customers(writer, 3)
        for socket_, batches in zip(sockets, received, strict=True):
            live = await socket_.collect("live", lambda bs: len(ids_in(bs)) >= 3)
            assert ids_in(live) == written
            batches.extend(live)

        stop_writing = asyncio.Event()

        async def keep_writing() -> None:
            while not stop_writing.is_set():
                written.extend(await push_customers(writer, 2))
                await asyncio.sleep(0.02)

        writing = asyncio.create_task(keep_writing())
        try:
            await asyncio.sleep(0.5)
            signalled = time.monotonic()
            doomed.process.send_signal(signal.SIGTERM)
            closes = await asyncio.gather(
                *(read_until_closed(s, "live", seconds=15) for s in sockets)
            )
            exit_code = await asyncio.to_thread(doomed.process.wait, 20)
            exited_after = time.monotonic() - signalled
            # Commits go on while the clients are disconnected.
            await asyncio.sleep(0.3)
        finally:
            stop_writing.set()
            await asyncio.wait_for(writing, 15)

        assert exited_after < 10, doomed.output()
        assert exit_code == 0, doomed.output()
        for (drained, code), batches in zip(closes, received, strict=True):
            assert code in SHUTDOWN_CODES, code
            batches.extend(drained)
        for device, batches in zip(devices, received, strict=True):
            got = ids_in(batches)
            assert got == written[: len(got)], "delivered in order, once"
            missed = written[len(got) :]
            assert missed, "writes went on after the socket closed"
            resumed = await Socket.open(survivor.ws_url, device.api.token)
            await resumed.subscribe("again", device.id, batches[-1]["checkpoint"])
            expected = len(missed)
            again = await resumed.collect(
                "again", lambda bs, n=expected: len(ids_in(bs)) >= n, seconds=20
            )
            assert ids_in(again) == missed
            # Nothing else was pending: the next write arrives alone.
            last = await push_customers(writer, 1)
            written += last
            assert ids_in(await resumed.collect("again", lambda bs: len(bs) >= 1)) == last
            await resumed.close()


# -- 3. the strawberry resolver ----------------------------------------------------------


class TestSchemaSubscribe:
    async def test_schema_subscribe_points_to_the_websocket_endpoint(
        self, settings: Settings, db: Database, tenant: Tenant
    ) -> None:
        """The WebSocket endpoint is the one implementation of `changes`; the schema's
        field only types it. graphql-core's own subscribe (no transport of this server
        runs it) ends with one result saying where subscriptions are served."""
        device = await phone(tenant)
        stream = await build_schema().subscribe(
            CHANGES,
            variable_values={"d": device.id, "since": None},
            context_value=Context(request=None, db=db, settings=settings, token=None),  # type: ignore[arg-type]
        )
        assert isinstance(stream, AsyncGenerator), stream
        try:
            failed = await asyncio.wait_for(anext(stream), 15)
            assert failed.data is None, failed
            assert [e.extensions["code"] for e in failed.errors] == ["BAD_REQUEST"], failed
            assert "WebSocket" in failed.errors[0].message
            with pytest.raises(StopAsyncIteration):
                await asyncio.wait_for(anext(stream), 15)
        finally:
            await stream.aclose()
