"""uvicorn's wsproto WebSocket protocol, trimmed for thousands of idle sockets per worker.

A subscribed phone mostly waits: its socket's protocol object lives for hours while nothing
moves. uvicorn's ``WSProtocol`` keeps, per socket, state that only matters while something
happens, and ``tracemalloc`` put about 8 KB of a ~27 KB idle socket there:

- an ``asyncio.Queue`` (three deques of ~750 bytes each) and an ``asyncio.Event`` (one more)
  for a receive queue that is empty almost always and a "writable" flag that is almost
  always set;
- the HTTP handshake (an h11 connection, the request and its headers, a deque), kept after
  the upgrade only to be asked for events it no longer has; the open connection's own
  event deque, used only by a way of closing that uvicorn never takes;
- its 33 attributes, more than a shared-key instance dict holds: each socket got a ~1.5 KB
  dict of its own;
- a keepalive timer per socket (a timer handle, its libuv timer, a context).

:class:`LeanWSProtocol` behaves the same (messages, backpressure, close handshakes,
keepalive pings and their timeout; :class:`_Keepalive` says when those fall) with slots
for the attributes, a queue and a flag that hold nothing while idle, the handshake dropped
once the socket is open, and one keepalive timer per worker that visits the sockets as a
wheel. It also offers the endpoint (``server/websocket.py``) two things ``send`` cannot:
writing a message at once, without a turn of the event loop, when the transport takes it
(``send_text_now``), and the bytes the client has not acknowledged yet
(``unsent_bytes``), which is how a catch-up tells a socket that stopped reading.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import struct
import termios
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import wsproto
from uvicorn.protocols.websockets.wsproto_impl import WSProtocol
from wsproto.connection import ConnectionType
from wsproto.events import Event, Message, Ping
from wsproto.handshake import H11Handshake
from wsproto.utilities import LocalProtocolError

T = TypeVar("T")

# The buffer an ``ioctl`` fills with one C int, and the request for a socket's unsent bytes
# (``SIOCOUTQ`` on Linux; a platform without it counts the transport's buffer only).
_INT = struct.pack("i", 0)
_OUTQ: int | None = getattr(termios, "TIOCOUTQ", None)

# Slots of the keepalive wheel: with uvicorn's default 20 s interval one slot every 100 ms.
KEEPALIVE_SLOTS = 200


class Inbox(Generic[T]):
    """The protocol's receive queue: what ``WSProtocol`` asks of its ``asyncio.Queue``.

    Empty, it holds two empty slots (``asyncio.Queue`` holds three deques); a waiting
    receiver waits on a future that the next message completes, not on a coroutine of its
    own. ``on_take`` runs once a message has been handed out: the protocol resumes
    reading there, as it does after ``Queue.get``.
    """

    __slots__ = ("_items", "_waiter", "on_take")

    def __init__(self) -> None:
        self._items: list[T] | None = None
        self._waiter: asyncio.Future[T] | None = None
        self.on_take: Callable[[], None] | None = None

    def empty(self) -> bool:
        """Nothing queued."""
        return not self._items

    def qsize(self) -> int:
        """Messages queued."""
        return len(self._items) if self._items else 0

    def put_nowait(self, item: T) -> None:
        """Queue ``item``, or hand it to the waiting receiver."""
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(item)
                if self.on_take is not None:
                    # After the caller's own step (uvicorn pauses reading right after
                    # queueing a message), as the woken receiver would run it.
                    waiter.get_loop().call_soon(self.on_take)
                return
        if self._items is None:
            self._items = [item]
        else:
            self._items.append(item)

    def get(self) -> Awaitable[T]:
        """The next item (a future: awaiting it costs no coroutine while idle)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if self._items:
            future.set_result(self._items.pop(0))
            if not self._items:
                self._items = None
            if self.on_take is not None:
                self.on_take()
            return future
        if self._waiter is not None and not self._waiter.done():
            raise RuntimeError("one receiver at a time")
        self._waiter = future
        return future


class Flag:
    """``asyncio.Event`` as ``WSProtocol`` uses it ("the transport takes more data"), with
    no deque while nobody waits."""

    __slots__ = ("_value", "_waiters")

    def __init__(self) -> None:
        self._value = False
        self._waiters: list[asyncio.Future[bool]] | None = None

    def is_set(self) -> bool:
        """Whether it is set."""
        return self._value

    def set(self) -> None:
        """Set it and wake every waiter."""
        self._value = True
        waiters, self._waiters = self._waiters, None
        for future in waiters or ():
            if not future.done():
                future.set_result(True)

    def clear(self) -> None:
        """Unset it."""
        self._value = False

    async def wait(self) -> bool:
        """Until it is set."""
        if self._value:
            return True
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(future)
        try:
            return await future
        finally:
            if self._waiters is not None and future in self._waiters:
                self._waiters.remove(future)


class _EventList(list[Event]):
    """wsproto's per-connection event deque as an empty list (56 bytes, not ~750)."""

    __slots__ = ()

    def popleft(self) -> Event:
        """The oldest event."""
        return self.pop(0)


# What a server connection's handshake is replaced with once the socket is open: it has
# no events left to give (wsproto asks it on every read).
_SPENT_HANDSHAKE = H11Handshake(ConnectionType.SERVER)


class LeanWSConnection(wsproto.WSConnection):
    """wsproto's server connection that lets go of the HTTP handshake once open."""

    def __init__(self) -> None:
        super().__init__(ConnectionType.SERVER)

    def send(self, event: Event) -> bytes:
        """Send ``event``; once the connection is open, drop the handshake."""
        data = super().send(event)
        if self.connection is not None and self.handshake is not _SPENT_HANDSHAKE:
            if not self.handshake._events:
                self.handshake = _SPENT_HANDSHAKE
            events = self.connection._events
            if not events and not isinstance(events, _EventList):
                self.connection._events = _EventList()  # type: ignore[assignment]
        return data


class _Keepalive:
    """WebSocket pings for every socket of a worker with one timer, as a wheel.

    Each tick visits one slot: a socket is pinged once per interval (the first time one to
    two intervals after it opened), and a ping still unanswered when its timeout has passed
    by its socket's next visit closes it (1011), as uvicorn's per-socket timers do.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self.loop = loop
        self.tick = interval / KEEPALIVE_SLOTS
        self.slots: list[set[LeanWSProtocol]] = [set() for _ in range(KEEPALIVE_SLOTS)]
        self.next_slot = 0  # where the next socket goes (round robin)
        self.current = 0  # the slot the next tick visits
        self.count = 0
        self.timer: asyncio.TimerHandle | None = None

    def add(self, protocol: LeanWSProtocol) -> None:
        """Ping ``protocol`` from now on."""
        slot = self.slots[self.next_slot]
        self.next_slot = (self.next_slot + 1) % KEEPALIVE_SLOTS
        slot.add(protocol)
        protocol.keepalive_slot = slot
        # Counted as a ping: the first one waits a whole interval, as uvicorn's does.
        protocol.ping_sent_at = self.loop.time()
        self.count += 1
        if self.timer is None:
            self.timer = self.loop.call_later(self.tick, self._visit)

    def discard(self, protocol: LeanWSProtocol) -> None:
        """Stop pinging ``protocol``."""
        slot = protocol.keepalive_slot
        if slot is not None:
            protocol.keepalive_slot = None
            slot.discard(protocol)
            self.count -= 1

    def _visit(self) -> None:
        self.timer = None
        now = self.loop.time()
        for protocol in list(self.slots[self.current]):
            protocol.keepalive_visit(now, self.tick)
        self.current = (self.current + 1) % KEEPALIVE_SLOTS
        if self.count > 0:
            self.timer = self.loop.call_later(self.tick, self._visit)


_WHEELS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, _Keepalive]] = (
    weakref.WeakKeyDictionary()
)


def _keepalive(loop: asyncio.AbstractEventLoop, interval: float) -> _Keepalive:
    wheels = _WHEELS.setdefault(loop, {})
    wheel = wheels.get(interval)
    if wheel is None:
        wheel = wheels[interval] = _Keepalive(loop, interval)
    return wheel


class LeanWSProtocol(WSProtocol):
    """uvicorn's wsproto protocol with what an idle socket keeps cut down (module doc)."""

    # Every attribute uvicorn sets, as slots: a socket's state then needs no instance dict
    # (33 attributes overflow the shared-key dict; an attribute a later uvicorn adds
    # simply lands in a dict again).
    __slots__ = (
        "app",
        "app_state",
        "asgi_version",
        "buffer",
        "client",
        "close_sent",
        "close_timeout",
        "close_timer",
        "config",
        "conn",
        "connections",
        "default_headers",
        "disconnected",
        "handshake_complete",
        "keepalive_slot",
        "last_ping_rtt",
        "logger",
        "loop",
        "pending_ping_payload",
        "ping_interval",
        "ping_sent_at",
        "ping_timeout",
        "ping_timer",
        "pong_timer",
        "queue",
        "read_paused",
        "response_started",
        "root_path",
        "scheme",
        "scope",
        "server",
        "tasks",
        "transport",
        "writable",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        inbox: Inbox[Any] = Inbox()
        inbox.on_take = self._taken
        self.queue = inbox  # type: ignore[assignment]
        writable = Flag()
        writable.set()
        self.writable = writable  # type: ignore[assignment]
        self.conn = self.new_connection()
        self.keepalive_slot: set[LeanWSProtocol] | None = None

    def new_connection(self) -> wsproto.WSConnection:
        """The wsproto connection of this socket."""
        return LeanWSConnection()

    def _taken(self) -> None:
        # What uvicorn's receive does after Queue.get: read again once the app has taken
        # everything queued.
        if self.read_paused and self.queue.empty():
            self.read_paused = False
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        """uvicorn's, then unlink the inbox from the protocol (its ``on_take`` refers
        back): a closed socket is freed by reference counting, not by a full collection."""
        super().connection_lost(exc)
        self.queue.on_take = None  # type: ignore[attr-defined]

    def receive(self) -> Awaitable[Any]:  # type: ignore[override]
        """The next ASGI event (a future, not a coroutine kept alive while waiting)."""
        return self.queue.get()

    def send_text_now(self, text: str) -> bool:
        """Write a text message now, as ``send`` of a ``websocket.send`` event would when the
        transport takes data; False (nothing written) when ``send`` would wait or refuse:
        the caller sends it the ASGI way then.

        ``send`` is a coroutine: a message handed out through it waits for a turn of the
        event loop in a task of its own, behind whatever else became ready meanwhile (a
        reconnect storm's handshakes and catch-up pages). A live batch is written straight
        from the hand-out instead.
        """
        if (
            not self.writable.is_set()
            or self.disconnected
            or not self.handshake_complete
            or self.close_sent
            or self.response_started
            or self.transport.is_closing()
        ):
            return False
        try:
            output = self.conn.send(Message(data=text))
        except LocalProtocolError:
            return False
        self.transport.write(output)
        return True

    def unsent_bytes(self) -> int:
        """Bytes written to this socket that the client has not yet acknowledged: those
        the transport still buffers and the kernel's send queue (``SIOCOUTQ``; 0 where
        that cannot be read).

        The kernel queue is what shows a client that stopped reading: it takes up to a
        few MB (the send buffer grows to ``tcp_wmem``'s maximum) before the transport
        has to buffer anything, and so before ``send`` would wait.
        """
        unsent = self.transport.get_write_buffer_size()
        sock = self.transport.get_extra_info("socket")
        if sock is None or _OUTQ is None:
            return unsent
        try:
            queued = fcntl.ioctl(sock.fileno(), _OUTQ, _INT)
        except (OSError, ValueError):
            return unsent
        return unsent + int(struct.unpack("i", queued)[0])

    # -- keepalive: one wheel per worker instead of a timer per socket ----------------

    def start_keepalive(self) -> None:
        """Ping this socket from the worker's keepalive wheel."""
        if self.ping_interval is not None and self.ping_interval > 0:
            _keepalive(self.loop, self.ping_interval).add(self)

    def stop_keepalive(self) -> None:
        """Stop pinging this socket."""
        if self.keepalive_slot is not None and self.ping_interval:
            _keepalive(self.loop, self.ping_interval).discard(self)
        self.pending_ping_payload = None

    def schedule_ping(self) -> None:
        """Nothing to schedule: the wheel comes back to this socket once per interval."""

    def keepalive_visit(self, now: float, tick: float) -> None:
        """The wheel's visit: time out an unanswered ping, or send the next one."""
        if self.close_sent or self.transport.is_closing():
            self.stop_keepalive()
            return
        # Visits come once per interval: what falls due before the next visit is due at
        # this one.
        if self.pending_ping_payload is not None and self.ping_timeout is not None:
            if now + tick >= self.ping_sent_at + self.ping_timeout:
                self.stop_keepalive()
                self.keepalive_timeout()
            return
        if (
            self.pending_ping_payload is None
            and self.ping_interval is not None
            and now + tick < self.ping_sent_at + self.ping_interval
        ):
            return  # pinged (or opened) less than an interval ago
        self.send_keepalive_ping()

    def send_keepalive_ping(self) -> None:
        """Send a ping (its random payload tells its pong from stale ones)."""
        if self.close_sent or self.transport.is_closing():
            return
        self.pending_ping_payload = os.urandom(4)
        self.ping_sent_at = self.loop.time()
        self.transport.write(self.conn.send(Ping(payload=self.pending_ping_payload)))
