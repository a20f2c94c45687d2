"""permessage-deflate on the subscription socket (issue #18): negotiated with no context
takeover, large catch-up pages compressed and small messages not, real clients (Python
`websockets`, npm `graphql-ws` on `ws`) decode it, and a compressed bomb from a client is
refused within the message limit."""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import httpx
import orjson
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request
from wsproto.extensions import PerMessageDeflate

from db.engine import Database
from db.seed import seed_records
from server.websocket_deflate import MIN_MESSAGE_BYTES, _DeflatingConnection
from tests.api.sync_client import Device
from tests.api.ws_client import CHANGES, Socket
from tests.conftest import LiveServer, Tenant, new_tenant

PAGE = 1000  # a full catch-up page


async def seeded(
    db: Database, live_server: LiveServer, http: httpx.AsyncClient
) -> tuple[Tenant, Device, int]:
    """A tenant with more than one catch-up page and a device that sees all of it."""
    tenant = await new_tenant(db, http)
    counts = await seed_records(
        db, tenant.org_id, customers_count=120, contacts_per_customer=0, assets_per_customer=10
    )
    total = counts.customers + counts.facilities + counts.assets
    return tenant, await Device(tenant.admin).register(), total


class RawSocket:
    """A WebSocket spoken by hand, to see each frame's RSV1 bit and raw size."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.extensions = ""

    @classmethod
    async def open(cls, url: str, offer: str | None) -> RawSocket:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            "GET /graphql HTTP/1.1",
            f"Host: {host}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Protocol: graphql-transport-ws",
        ]
        if offer:
            lines.append(f"Sec-WebSocket-Extensions: {offer}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode()
        assert head.startswith("HTTP/1.1 101"), head
        socket = cls(reader, writer)
        for line in head.split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "sec-websocket-extensions":
                socket.extensions = value.strip()
        return socket

    def send(self, payload: bytes, *, compressed: bool = False) -> None:
        """One masked text frame (clients must mask)."""
        first = 0x80 | 0x01 | (0x40 if compressed else 0)
        mask = os.urandom(4)
        size = len(payload)
        if size < 126:
            header = struct.pack("!BB", first, 0x80 | size)
        elif size < 65536:
            header = struct.pack("!BBH", first, 0x80 | 126, size)
        else:
            header = struct.pack("!BBQ", first, 0x80 | 127, size)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(header + mask + masked)

    def send_json(self, message: dict[str, Any]) -> None:
        self.send(orjson.dumps(message))

    async def frame(self) -> tuple[int, bool, bytes]:
        """(opcode, RSV1, payload as sent) of the next frame from the server."""
        first, second = await asyncio.wait_for(self.reader.readexactly(2), 15)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
        payload = await asyncio.wait_for(self.reader.readexactly(size), 15)
        return first & 0x0F, bool(first & 0x40), payload

    def close(self) -> None:
        self.writer.transport.abort()


def inflate(payload: bytes) -> bytes:
    """A permessage-deflate message without context: raw deflate plus the sync marker."""
    return zlib.decompressobj(-zlib.MAX_WBITS).decompress(payload + b"\x00\x00\xff\xff")


async def test_catch_up_pages_are_compressed_and_small_messages_are_not(
    live_server: LiveServer, db: Database
) -> None:
    """Offered deflate, the server answers with no context takeover both ways; the ack stays
    plain, each full catch-up page arrives compressed several times smaller."""
    async with httpx.AsyncClient(base_url=live_server.url, timeout=60) as http:
        tenant, device, total = await seeded(db, live_server, http)
    socket = await RawSocket.open(live_server.url, "permessage-deflate; client_max_window_bits")
    try:
        assert "permessage-deflate" in socket.extensions
        assert "server_no_context_takeover" in socket.extensions
        assert "client_no_context_takeover" in socket.extensions
        socket.send_json(
            {
                "type": "connection_init",
                "payload": {"authorization": f"Bearer {tenant.admin.token}"},
            }
        )
        opcode, compressed, payload = await socket.frame()
        assert (opcode, compressed) == (1, False)
        assert orjson.loads(payload) == {"type": "connection_ack"}
        socket.send_json(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {"query": CHANGES, "variables": {"d": device.id, "since": None}},
            }
        )
        received = 0
        while received < total:
            opcode, compressed, payload = await socket.frame()
            text = inflate(payload) if compressed else payload
            message = orjson.loads(text)
            if message.get("type") == "ping":
                continue
            batch = message["payload"]["data"]["changes"]["changes"]
            received += len(batch)
            if len(text) >= MIN_MESSAGE_BYTES:
                assert compressed, len(text)
                assert len(payload) * 4 < len(text), (len(payload), len(text))
            else:
                assert not compressed
        assert received == total
    finally:
        socket.close()


async def test_without_an_offer_nothing_is_compressed(
    live_server: LiveServer, db: Database
) -> None:
    """A client that does not offer deflate gets plain frames, pages included."""
    async with httpx.AsyncClient(base_url=live_server.url, timeout=60) as http:
        tenant, device, _ = await seeded(db, live_server, http)
    socket = await RawSocket.open(live_server.url, None)
    try:
        assert socket.extensions == ""
        socket.send_json(
            {
                "type": "connection_init",
                "payload": {"authorization": f"Bearer {tenant.admin.token}"},
            }
        )
        assert (await socket.frame())[1] is False
        socket.send_json(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {"query": CHANGES, "variables": {"d": device.id, "since": None}},
            }
        )
        _, compressed, payload = await socket.frame()
        assert not compressed
        assert len(orjson.loads(payload)["payload"]["data"]["changes"]["changes"]) == PAGE
    finally:
        socket.close()


def deflate_bomb() -> bytes:
    """20 MB of spaces as one permessage-deflate payload of ~20 KB."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = deflate.compress(b" " * (20 * 1024 * 1024)) + deflate.flush(zlib.Z_SYNC_FLUSH)
    return bomb[:-4]


def test_inflation_stops_at_the_message_limit() -> None:
    """The extension inflates at most the socket's message limit, then fails the message with
    1009 instead of allocating what the bomb expands to."""
    server = _DeflatingConnection(256 * 1024)
    client = WSConnection(ConnectionType.CLIENT)
    server.receive_data(
        client.send(Request(host="x", target="/", extensions=[PerMessageDeflate()]))
    )
    assert isinstance(next(server.events()), Request)
    client.receive_data(server.send(AcceptConnection()))
    assert isinstance(next(client.events()), AcceptConnection)
    bomb = deflate_bomb()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(bomb))
    server.receive_data(struct.pack("!BBH", 0xC1, 0x80 | 126, len(bomb)) + mask + masked)
    tracemalloc.start()
    try:
        events = list(server.events())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [(type(e), e.code) for e in events] == [(CloseConnection, 1009)]
    assert peak < 4 * 1024 * 1024, peak


async def test_a_compressed_bomb_ends_the_socket_not_the_server(
    live_server: LiveServer,
) -> None:
    """Through a real server the bomb's socket is dropped at once; the server keeps serving."""
    socket = await RawSocket.open(live_server.url, "permessage-deflate")
    try:
        socket.send(deflate_bomb(), compressed=True)
        try:
            opcode, _, payload = await socket.frame()
        except asyncio.IncompleteReadError:
            pass  # uvicorn drops the connection on a protocol failure without a close frame
        else:
            assert opcode == 8, opcode
            assert struct.unpack("!H", payload[:2])[0] == 1009, payload
    finally:
        socket.close()
    async with httpx.AsyncClient(base_url=live_server.url, timeout=10) as http:
        assert (await http.get("/readyz")).status_code == 200


async def test_websockets_client_negotiates_and_decodes(
    live_server: LiveServer, db: Database
) -> None:
    """The Python `websockets` client (deflate offered by default) gets every change."""
    async with httpx.AsyncClient(base_url=live_server.url, timeout=60) as http:
        tenant, device, total = await seeded(db, live_server, http)
    socket = await Socket.open(
        live_server.url.replace("http:", "ws:") + "/graphql", tenant.admin.token
    )
    try:
        extensions = [type(e).__name__ for e in socket.ws.protocol.extensions]
        assert extensions == ["PerMessageDeflate"], extensions
        await socket.subscribe("1", device.id, None)
        received = 0
        while received < total:
            message = await socket.recv()
            received += len(message["payload"]["data"]["changes"]["changes"])
        assert received == total
    finally:
        await socket.ws.close()


async def test_graphql_ws_client_negotiates_and_decodes(
    live_server: LiveServer, db: Database, js_packages: Path
) -> None:
    """The npm `graphql-ws` client on `ws` negotiates deflate and receives every change."""
    async with httpx.AsyncClient(base_url=live_server.url, timeout=60) as http:
        tenant, device, total = await seeded(db, live_server, http)
    process = await asyncio.create_subprocess_exec(
        "node",
        str(js_packages / "subscribe.mjs"),
        live_server.url.replace("http:", "ws:") + "/graphql",
        tenant.admin.token or "",
        device.id,
        "",
        str(total),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()
    assert "permessage-deflate" in stderr.decode(), stderr.decode()
    batches = [orjson.loads(line) for line in stdout.splitlines() if line.strip()]
    assert sum(len(b["changes"]) for b in batches) == total
