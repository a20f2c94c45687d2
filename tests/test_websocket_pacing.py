"""A socket's send queue (``server.websocket.Outbox``) and catch-up pacing, with a fake
socket: messages written at once when nothing waits, a catch-up page only once the socket
took the previous one (one page of a socket at a time), and a socket that takes nothing
closed as a slow consumer (4003)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from server.settings import Settings
from server.websocket import PACE_BYTES, CloseCode, Connection


class FakeWebSocket:
    """What ``Connection`` uses of Starlette's WebSocket; ``send_text`` waits for ``gate``
    (a client that does not read)."""

    def __init__(self) -> None:
        self.scope: dict[str, object] = {}
        self.sent: list[str] = []
        self.closed: int | None = None
        self.gate = asyncio.Event()
        self.gate.set()

    async def _send(self, message: object) -> None:
        raise AssertionError("not used")

    async def send_text(self, text: str) -> None:
        await self.gate.wait()
        self.sent.append(text)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed = code


class FakeProtocol:
    """``LeanWSProtocol``'s part in it: writes at once when ``writable``."""

    def __init__(self) -> None:
        self.writable = True
        self.written: list[str] = []
        self.unsent = 0

    def send_text_now(self, text: str) -> bool:
        if not self.writable:
            return False
        self.written.append(text)
        return True

    def unsent_bytes(self) -> int:
        return self.unsent


def connection(stall: float = 5.0) -> tuple[Connection, FakeWebSocket]:
    server = SimpleNamespace(
        settings=Settings(ws_send_stall_seconds=stall),
        hub=SimpleNamespace(remove=lambda subscriber: None),
        connections=set(),
        closers=set(),
    )
    websocket = FakeWebSocket()
    return Connection(server, websocket), websocket  # type: ignore[arg-type]


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_message_goes_out_at_once_when_nothing_waits_before_it():
    conn, websocket = connection()
    protocol = conn.protocol = FakeProtocol()  # type: ignore[assignment]
    conn.outbox.append("one")
    assert protocol.written == ["one"]
    protocol.writable = False
    conn.outbox.append("two")
    protocol.writable = True
    # Queued behind "two": in order, through the writer.
    conn.outbox.append(("prefix", "payload"))
    assert protocol.written == ["one"]
    await settle()
    assert websocket.sent == ["two", "prefixpayload}"]
    conn.outbox.append(("a", "b"))
    assert protocol.written == ["one", "ab}"]


async def test_drained_waits_until_the_socket_took_everything():
    conn, websocket = connection()
    websocket.gate.clear()
    conn.outbox.append("page")
    assert not await conn.outbox.drained(0.05)
    websocket.gate.set()
    assert await conn.outbox.drained(1.0)
    assert websocket.sent == ["page"]


async def test_one_catch_up_page_of_a_socket_at_a_time_once_the_previous_was_taken():
    conn, websocket = connection()
    websocket.gate.clear()
    conn.outbox.append("previous page")
    order: list[str] = []
    release = asyncio.Event()

    async def page(name: str) -> None:
        async with conn.catch_up_turn():
            order.append(f"{name} in")
            await release.wait()
            order.append(f"{name} out")

    first = asyncio.create_task(page("first"))
    second = asyncio.create_task(page("second"))
    await settle()
    assert order == [], "a page pulled before the socket took the previous one"
    websocket.gate.set()
    await settle()
    assert order == ["first in"]
    release.set()
    await asyncio.gather(first, second)
    assert order == ["first in", "first out", "second in", "second out"]
    assert not conn.closing


async def test_a_page_waits_for_unacknowledged_bytes_to_drain():
    conn, _websocket = connection()
    protocol = conn.protocol = FakeProtocol()  # type: ignore[assignment]
    protocol.unsent = PACE_BYTES + 1
    entered = asyncio.Event()

    async def page() -> None:
        async with conn.catch_up_turn():
            entered.set()

    task = asyncio.create_task(page())
    await asyncio.sleep(0.05)
    assert not entered.is_set()
    protocol.unsent = PACE_BYTES
    await asyncio.wait_for(task, 2.0)
    assert not conn.closing


async def test_a_socket_that_takes_nothing_is_closed_as_a_slow_consumer():
    conn, websocket = connection(stall=0.05)
    websocket.gate.clear()
    conn.outbox.append("page nobody reads")
    async with conn.catch_up_turn():
        assert conn.closing
    await settle()
    assert websocket.closed == CloseCode.SLOW_CONSUMER


async def test_a_socket_whose_kernel_queue_stays_full_is_closed_too():
    conn, websocket = connection(stall=0.05)
    protocol = conn.protocol = FakeProtocol()  # type: ignore[assignment]
    protocol.unsent = 4 * PACE_BYTES
    async with conn.catch_up_turn():
        assert conn.closing
    await settle()
    assert websocket.closed == CloseCode.SLOW_CONSUMER
