"""The trimmed uvicorn WebSocket protocol (``server/websocket_protocol.py``).

An in-process uvicorn server runs a small echo app with :class:`LeanWSProtocol`: messages
flow in order through the paused-and-resumed reads; an idle socket's protocol keeps none
of what it trimmed (no instance dict, no deques, no handshake, no timer of its own); the
keepalive wheel pings a client that answers and closes one that does not (1011), as
uvicorn's own per-socket timers do. A closed socket, protocol and endpoint objects alike,
is freed by reference counting: nothing of it waits for the (rarely run) full collection.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import os
import socket
import struct
import uuid
import weakref
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from websockets.asyncio.client import connect

from server.settings import Settings
from server.websocket import Connection, SocketSubscription
from server.websocket_protocol import (
    _SPENT_HANDSHAKE,
    Flag,
    Inbox,
    LeanWSProtocol,
    _EventList,
)
from sync.hub import Subscriber
from tests.collector import no_collector


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Accept, then echo each text message (a little slowly: reads pause meanwhile)."""
    assert scope["type"] == "websocket"
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await asyncio.sleep(0.001)
        await send({"type": "websocket.send", "text": message["text"]})


@contextlib.asynccontextmanager
async def echo_server(*, ping: float | None = None) -> AsyncIterator[uvicorn.Server]:
    """uvicorn on a free port of 127.0.0.1 with the lean protocol (keepalive every ``ping``
    seconds, same timeout)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        echo_app,
        ws=LeanWSProtocol,
        lifespan="off",
        log_level="warning",
        ws_ping_interval=ping,
        ws_ping_timeout=ping,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started
        yield server
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


def url_of(server: uvicorn.Server) -> str:
    """The server's ws:// address."""
    port = server.servers[0].sockets[0].getsockname()[1]
    return f"ws://127.0.0.1:{port}/"


def protocols(server: uvicorn.Server) -> list[LeanWSProtocol]:
    """The server's open WebSocket protocol objects."""
    return [c for c in server.server_state.connections if isinstance(c, LeanWSProtocol)]


async def test_messages_arrive_in_order_and_an_idle_socket_keeps_nothing_trimmed() -> None:
    """Bursts go through the paused-and-resumed reads in order; idle, the protocol object
    has no instance dict, no deque, no handshake and no timer of its own."""
    async with echo_server(ping=20) as server, connect(url_of(server)) as ws:
        for burst in range(3):
            sent = [f"{burst}-{n}" for n in range(40)]
            for text in sent:
                await ws.send(text)
            assert [await asyncio.wait_for(ws.recv(), 10) for _ in sent] == sent
        [protocol] = protocols(server)
        assert vars(protocol) == {}, "an attribute uvicorn added: give it a slot"
        assert isinstance(protocol.queue, Inbox)
        assert protocol.queue.empty()
        assert isinstance(protocol.writable, Flag)
        assert protocol.writable.is_set()
        assert protocol.conn.handshake is _SPENT_HANDSHAKE
        assert protocol.conn.connection is not None
        assert isinstance(protocol.conn.connection._events, _EventList)
        assert protocol.ping_timer is None
        assert protocol.pong_timer is None
        assert protocol.keepalive_slot is not None
        assert not protocol.read_paused


async def test_the_keepalive_wheel_pings_and_a_client_that_answers_stays() -> None:
    """A client that answers pings (websockets does) is pinged and stays open."""
    async with echo_server(ping=0.2) as server, connect(url_of(server), ping_interval=None) as ws:
        await asyncio.sleep(1.0)
        [protocol] = protocols(server)
        assert protocol.ping_sent_at > 0
        assert protocol.last_ping_rtt > 0, "no pong came back: was it pinged?"
        await ws.send("still here")
        assert await asyncio.wait_for(ws.recv(), 5) == "still here"


async def test_the_keepalive_wheel_closes_a_client_that_does_not_answer() -> None:
    """A peer that never answers a ping gets a ping, then a 1011 close."""
    async with echo_server(ping=0.2) as server:
        port = server.servers[0].sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            writer.write(
                (
                    "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 101"), head
            opcodes = []
            started = asyncio.get_running_loop().time()
            while True:
                first, second = await asyncio.wait_for(reader.readexactly(2), 5)
                payload = await reader.readexactly(second & 0x7F)
                opcodes.append(first & 0x0F)
                if first & 0x0F == 0x8:
                    break
            elapsed = asyncio.get_running_loop().time() - started
            assert opcodes[0] == 0x9, opcodes
            assert struct.unpack("!H", payload[:2])[0] == 1011, payload
            assert elapsed < 3, elapsed
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def test_inbox_hands_items_out_in_order_and_reports_each_take() -> None:
    """Queued items come out first in first out; an item for a waiting receiver goes
    straight to it, and the take is reported after the putter's own step."""
    inbox: Inbox[int] = Inbox()
    taken: list[int] = []
    inbox.on_take = lambda: taken.append(inbox.qsize())
    inbox.put_nowait(1)
    inbox.put_nowait(2)
    assert await inbox.get() == 1
    assert await inbox.get() == 2
    assert taken == [1, 0]
    assert inbox.empty()
    waiting = inbox.get()
    inbox.put_nowait(3)
    inbox.put_nowait(4)
    assert taken == [1, 0], "reported after the putter's step, not inside put_nowait"
    assert await waiting == 3
    await asyncio.sleep(0)
    assert taken == [1, 0, 1]
    assert await inbox.get() == 4


async def test_inbox_keeps_an_item_whose_receiver_gave_up() -> None:
    """A receiver cancelled while waiting does not swallow the next item."""
    inbox: Inbox[int] = Inbox()
    waiting = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    inbox.put_nowait(5)
    assert await inbox.get() == 5


async def test_flag_wakes_its_waiters() -> None:
    """Set, waiting returns at once; cleared, waiters wake at the next set."""
    flag = Flag()
    flag.set()
    assert await flag.wait()
    flag.clear()
    waiters = [asyncio.ensure_future(flag.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    flag.set()
    assert await asyncio.gather(*waiters) == [True, True, True]


def test_serve_uses_the_lean_protocol_with_or_without_compression() -> None:
    """`serve` hands uvicorn the lean protocol (its deflating subclass when compression is
    on), never uvicorn's own."""
    from server.cli import uvicorn_options
    from server.settings import Settings
    from server.websocket_deflate import DeflateLargeMessagesProtocol

    plain = uvicorn_options(Settings(ws_compression=False), host="127.0.0.1", port=8000)
    assert plain["ws"] is LeanWSProtocol
    deflating = uvicorn_options(Settings(ws_compression=True), host="127.0.0.1", port=8000)
    assert deflating["ws"] is DeflateLargeMessagesProtocol
    assert issubclass(DeflateLargeMessagesProtocol, LeanWSProtocol)


async def test_a_closed_socket_protocol_is_freed_without_the_collector() -> None:
    """Once its client is gone, nothing keeps the protocol object (no reference cycle)."""
    with no_collector():
        async with echo_server(ping=20) as server:
            async with connect(url_of(server)) as ws:
                await ws.send("hello")
                assert await asyncio.wait_for(ws.recv(), 5) == "hello"
                [protocol] = protocols(server)
                gone = weakref.ref(protocol)
                del protocol
            for _ in range(200):
                if gone() is None:
                    break
                await asyncio.sleep(0.01)
            assert gone() is None, [type(r) for r in gc.get_referrers(gone())]


class _Stub:
    """Attributes on demand (a weak reference can point at it)."""

    def __init__(self, **attributes: Any) -> None:
        self.__dict__.update(attributes)


def test_a_closed_connection_is_freed_without_the_collector() -> None:
    """A connection with a subscription, cleaned up as a close does, leaves no cycle (outbox
    and owner, subscription and hub subscriber): its websocket goes with the last
    reference."""
    removed: list[Subscriber] = []
    server = _Stub(settings=Settings(), connections=set(), hub=_Stub(remove=removed.append))
    with no_collector():
        websocket = _Stub()
        gone = weakref.ref(websocket)
        connection = Connection(server, websocket)  # type: ignore[arg-type]
        del websocket
        sink = SocketSubscription(connection, "1", _Stub(key="k"))  # type: ignore[arg-type]
        sink.subscriber = Subscriber(
            org_id=uuid.uuid4(),
            user_id=uuid.uuid4(),
            device_id=uuid.uuid4(),
            token_epoch=0,
            sink=sink,
            since=None,
        )
        connection.operations["1"] = sink
        del sink
        connection._cleanup()
        assert len(removed) == 1
        removed.clear()
        del connection
        assert gone() is None


async def test_a_message_written_at_once_and_the_bytes_the_client_has_not_taken() -> None:
    """``send_text_now`` writes while the transport takes data and refuses (writes nothing)
    once it has paused; ``unsent_bytes`` counts what a client that does not read left in
    the transport and the kernel's send queue, and falls to nothing once it reads."""
    async with echo_server() as server:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        port = server.servers[0].sockets[0].getsockname()[1]
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        # No permessage-deflate: the messages go out as large as they are.
        async with connect(url_of(server), sock=sock, max_size=None, compression=None) as ws:
            [protocol] = protocols(server)
            assert protocol.unsent_bytes() == 0
            chunk = "x" * 1_000_000
            written = 0
            # The kernel's send buffer grows to a few MB before the transport has to
            # buffer (and pause): write until it does.
            while protocol.send_text_now(chunk):
                written += 1
                assert written < 64, "the transport never paused"
            assert not protocol.writable.is_set()
            assert protocol.unsent_bytes() > 1_000_000
            for _ in range(written):
                assert await asyncio.wait_for(ws.recv(), 10) == chunk
            for _ in range(200):
                if protocol.unsent_bytes() == 0:
                    break
                await asyncio.sleep(0.01)
            assert protocol.unsent_bytes() == 0
            assert protocol.writable.is_set()
            assert protocol.send_text_now("and again")
            assert await asyncio.wait_for(ws.recv(), 10) == "and again"
