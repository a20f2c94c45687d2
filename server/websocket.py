"""The graphql-transport-ws endpoint at ``/graphql`` (see docs/subscriptions.md).

strawberry's own handler executes a subscription's selection once per subscriber per event;
this one hands `changes` subscriptions to the hub (``sync/hub.py``), which encodes a batch
once per group of subscribers with the same selection and rows. Each socket then only wraps
the shared payload in its ``{"id":..,"type":"next","payload":..}`` envelope and queues it.

Per connection: authentication in ``connection_init`` (the bearer token and the user row,
as for HTTP), a close at the token's expiry, a bounded send queue (a consumer that falls
behind is closed with 4003 and resumes from its checkpoint), a cap on operations, server
pings. Errors about one subscription (bad document, unknown device, forged checkpoint) are
``error`` messages for its id; protocol violations close the socket with the protocol's
codes. Nothing a client sends can raise out of its own connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections import deque
from collections.abc import AsyncIterator, Coroutine, Hashable
from typing import Any
from uuid import UUID

import orjson
import strawberry
import structlog
from graphql import GraphQLError
from starlette.websockets import WebSocket, WebSocketDisconnect
from strawberry.schema.base import BaseSchema

from db.auth import InvalidTokenError, TokenClaims, read_token, still_valid
from db.commands.sync import feed_name
from db.engine import Database
from db.live import read_only
from db.user_facts import user_facts
from resolvers.context import Context, PublicError
from resolvers.selection_json.changes import (
    BatchEncoder,
    ChangesSubscription,
    OtherOperation,
    prepare_subscription,
)
from resolvers.selection_json.documents import DocumentError, Documents
from resolvers.sync import feed_position, feed_types, record_uuid
from schema.limits import code_for
from schema.sync import SyncEntity
from server import metrics
from server.auth import bearer_token
from server.settings import Settings
from server.websocket_protocol import LeanWSProtocol
from sync.hub import Batch, Hub, Subscriber, SubscriptionError

log = structlog.get_logger("fieldsync.ws")
PROTOCOL = "graphql-transport-ws"
MAX_ID_CHARS = 128
# Unacknowledged bytes a socket may still have on its way when its next catch-up page is
# pulled: a page of 1,000 customers is about 570 KB, so a client that does not read holds
# one such page, while one that reads gets the next before the previous has quite arrived
# (a catch-up then moves at least this much per round trip of the link).
PACE_BYTES = 512 * 1024
# Slots of the ping wheel: with the default 20 s interval one slot is pinged every 100 ms.
PING_SLOTS = 200


class CloseCode(enum.IntEnum):
    """Every code this endpoint closes a socket with (docs/subscriptions.md)."""

    GOING_AWAY = 1001  # the server is shutting down: reconnect and resume
    TOKEN_EXPIRED = 4001  # the token's `exp` passed: init again with a fresh token
    REVOKED = 4002  # the user was deactivated or the token revoked
    SLOW_CONSUMER = 4003  # the send buffer filled up: reconnect and resume
    TOO_MANY_OPERATIONS = 4004  # more operations than ws_max_subscriptions at once
    BAD_REQUEST = 4400  # a malformed or unexpected message
    UNAUTHORIZED = 4401  # subscribe before connection_ack
    FORBIDDEN = 4403  # connection_init without a valid token of an active user
    INIT_TIMEOUT = 4408  # no connection_init in time
    DUPLICATE_ID = 4409  # an operation id already in use on this socket
    TOO_MANY_INITS = 4429  # a second connection_init
    INTERNAL_ERROR = 4500  # a bug: reconnect and resume


def _error_payload(message: str, code: str) -> list[dict[str, Any]]:
    return [{"message": message, "extensions": {"code": code}}]


# A queued message: its text, or a live batch as (this subscription's envelope prefix, the
# payload every subscriber of the selection shares). Joined when the socket sends it, so a
# queue that waits on a slow or silent client holds references to the shared payloads, not
# a copy each. With a copy each, 50 sockets that never read (ten subscriptions each) grew
# the workers by 936 MB and stalled their loops for up to 2 s (collector passes over the
# copies) before the queues filled and were closed; now 364 MB and no stall
# (`bench.fanout_bad_clients --storm 0 --slow 0 --many-subs 0`).
Queued = str | tuple[str, str]


def _size(message: Queued) -> int:
    """The characters ``message`` sends (what the queue's limit counts)."""
    return len(message) if isinstance(message, str) else len(message[0]) + len(message[1]) + 1


class Outbox:
    """A socket's bounded send queue (messages and characters).

    The writer task exists only while there is something to send: an idle socket holds
    no task of its own (thousands of idle subscribers are the common case).
    """

    # Slots, here and on the other per-socket objects: no instance dict per socket (the
    # idle cost of a subscribed socket is what a worker's memory is made of). The owner
    # is called directly rather than through callbacks (a bound method or a closure each,
    # per socket), and the deque (~750 bytes even empty) exists only while something waits.
    # Closing lets go of the owner: a closed socket's objects are then freed at once by
    # reference counting, not left to a full collection (the collector is tuned to run
    # those rarely, server/gc_pauses.py), which a reconnect storm would wait on.
    __slots__ = (
        "_chars",
        "_idle",
        "_queue",
        "_room",
        "_writer",
        "closed",
        "max_chars",
        "max_messages",
        "owner",
    )

    def __init__(self, owner: Connection, *, max_messages: int, max_chars: int) -> None:
        self.owner: Connection | None = owner
        self.max_messages = max_messages
        self.max_chars = max_chars
        self.closed = False
        self._queue: deque[Queued] | None = None
        self._chars = 0
        self._writer: asyncio.Task[None] | None = None
        self._room: asyncio.Event | None = None
        # Set when everything queued has been handed to the socket (catch-up pacing).
        self._idle: asyncio.Event | None = None

    def _full(self, size: int) -> bool:
        if not self._queue:
            return False  # one oversized message may always go out alone
        return len(self._queue) >= self.max_messages or self._chars + size > self.max_chars

    def offer(self, message: Queued) -> None:
        """Queue without waiting; a full queue means the consumer cannot keep up."""
        if self.closed:
            return
        if self._full(_size(message)):
            if self.owner is not None:
                self.owner.close(CloseCode.SLOW_CONSUMER, "send buffer full: reconnect and resume")
            return
        self.append(message)

    async def put(self, message: str) -> None:
        """Queue, waiting while the queue is full (catch-up pages: backpressure)."""
        while not self.closed and self._full(len(message)):
            if self._room is None:
                self._room = asyncio.Event()
            self._room.clear()
            await self._room.wait()
        if not self.closed:
            self.append(message)

    def append(self, message: Queued) -> None:
        """Queue regardless of the limits (protocol messages) and make sure a writer runs;
        with nothing queued before it, a message the socket takes at once is written now."""
        if self.closed:
            return
        if self._queue is None and self._writer is None:
            owner = self.owner
            if owner is not None and owner.send_now(message):
                return
        if self._queue is None:
            self._queue = deque()
        self._queue.append(message)
        self._chars += _size(message)
        if self._writer is None and self.owner is not None:
            self._writer = self.owner.spawn(self._write())

    def close(self) -> None:
        """Drop whatever is queued and wake every waiter."""
        self.closed = True
        self.owner = None
        self._queue = None
        self._chars = 0
        if self._room is not None:
            self._room.set()
        if self._idle is not None:
            self._idle.set()

    def _drained(self) -> bool:
        return self.closed or (not self._queue and self._writer is None)

    async def drained(self, seconds: float) -> bool:
        """Wait until everything queued has been handed to the socket (or it closed);
        False if that took longer than ``seconds``."""
        if self._drained():
            return True
        try:
            async with asyncio.timeout(seconds):
                while not self._drained():
                    if self._idle is None:
                        self._idle = asyncio.Event()
                    self._idle.clear()
                    await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def _write(self) -> None:
        try:
            while self._queue and self.owner is not None:
                message = self._queue.popleft()
                self._chars -= _size(message)
                if self._room is not None:
                    self._room.set()
                await self.owner.send_text(
                    message if isinstance(message, str) else f"{message[0]}{message[1]}}}"
                )
        finally:
            self._writer = None
            if not self._queue:
                self._queue = None
                if self._idle is not None:
                    self._idle.set()


class SocketSubscription:
    """A `changes` subscription of one socket: the hub's sink for it."""

    __slots__ = ("connection", "encoder", "op_id", "prefix", "subscriber")

    def __init__(self, connection: Connection, op_id: str, encoder: BatchEncoder) -> None:
        self.connection = connection
        self.op_id = op_id
        self.encoder = encoder
        self.prefix = '{"id":' + orjson.dumps(op_id).decode() + ',"type":"next","payload":'
        self.subscriber: Subscriber | None = None

    @property
    def group_key(self) -> Hashable:
        """Subscriptions with equal selections share one encoding."""
        return self.encoder.key

    def encode(self, batch: Batch) -> str:
        """The shared payload."""
        return self.encoder.encode(batch)

    def offer(self, batch: Batch, encoded: str) -> None:
        """Queue the shared payload with this subscription's envelope, joined only when
        the socket sends it."""
        self.connection.outbox.offer((self.prefix, encoded))

    async def put(self, batch: Batch) -> None:
        """Queue a catch-up page, waiting for room."""
        await self.connection.outbox.put(self.prefix + self.encoder.encode(batch) + "}")

    def pace(self) -> contextlib.AbstractAsyncContextManager[None]:
        """The socket's turn for a catch-up page (see :meth:`Connection.catch_up_turn`)."""
        return self.connection.catch_up_turn()

    def fail(self, error: SubscriptionError) -> None:
        """Send an `error` for this id and forget it."""
        self.connection.finish(self.op_id)
        self.connection.send_message(
            {"id": self.op_id, "type": "error", "payload": _error_payload(str(error), error.code)}
        )

    def revoke(self, reason: str) -> None:
        """The user may no longer be connected."""
        self.connection.close(CloseCode.REVOKED, reason)


class Connection:
    """One graphql-transport-ws socket."""

    __slots__ = (
        "_closer",
        "_expiry",
        "_init_timer",
        "_tasks",
        "_turn",
        "claims",
        "closing",
        "init_received",
        "operations",
        "outbox",
        "ping_slot",
        "protocol",
        "server",
        "token",
        "websocket",
    )

    def __init__(self, server: SubscriptionServer, websocket: WebSocket) -> None:
        self.server = server
        self.websocket = websocket
        settings = server.settings
        self.outbox = Outbox(
            self,
            max_messages=settings.ws_send_buffer_messages,
            max_chars=settings.ws_send_buffer_bytes,
        )
        self.operations: dict[str, SocketSubscription | asyncio.Task[None]] = {}
        self.init_received = False
        self.claims: TokenClaims | None = None
        self.token: str | None = None
        self.closing = False
        self._init_timer: asyncio.TimerHandle | None = None
        # The close at the token's expiry.
        self._expiry: asyncio.TimerHandle | None = None
        # Tasks of this socket (writer, queries); a set only while there are any.
        self._tasks: set[asyncio.Task[None]] | None = None
        self._closer: asyncio.Task[None] | None = None
        # Its slot of the server's ping wheel (set once acknowledged).
        self.ping_slot: set[Connection] | None = None
        # The uvicorn protocol under the socket, when it can write a message at once.
        send = getattr(websocket, "_send", None)
        protocol = getattr(send, "__self__", None)
        self.protocol = protocol if isinstance(protocol, LeanWSProtocol) else None
        # Held by the catch-up page being pulled and queued (one at a time per socket).
        self._turn: asyncio.Event | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def serve(self) -> None:
        """Run the socket until either side closes it."""
        if PROTOCOL not in self.websocket.scope.get("subprotocols", []):
            # Handshake refused (HTTP 403): only graphql-transport-ws is spoken here.
            await self.websocket.close(code=CloseCode.FORBIDDEN)
            return
        await self.websocket.accept(subprotocol=PROTOCOL)
        # 4408 is for a client that sends no connection_init in time, not for a server
        # slow to check one (a reconnect storm queues thousands of user lookups).
        self._init_timer = asyncio.get_running_loop().call_later(
            self.server.settings.ws_init_timeout_seconds, self._init_timeout
        )
        self.server.start_pings()
        # The ASGI receive itself, not Starlette's wrapper around it: a waiting socket then
        # keeps one coroutine frame fewer (the messages after the accept are all
        # `websocket.receive` or `websocket.disconnect`, which is all the wrapper checks).
        receive = self.websocket._receive
        try:
            while not self.closing:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    break
                data = message.get("text")
                if data is None:
                    data = message.get("bytes")
                try:
                    await self._handle(data)
                except Exception:
                    log.exception("websocket message failed")
                    self.close(CloseCode.INTERNAL_ERROR, "Internal server error")
        except WebSocketDisconnect:
            pass
        finally:
            self._cleanup()
            if self._closer is not None:
                # The close frame goes out before the ASGI app returns.
                await asyncio.wait({self._closer}, timeout=5)

    def _init_timeout(self) -> None:
        if not self.init_received:
            self.close(CloseCode.INIT_TIMEOUT, "Connection initialisation timeout")

    def close(self, code: int, reason: str) -> None:
        """Close the socket (from any context) and end every operation on it."""
        if self.closing:
            return
        self.closing = True
        self.outbox.close()
        self._cleanup()

        async def send_close() -> None:
            with contextlib.suppress(Exception):
                await self.websocket.close(code=code, reason=reason[:120])

        task = self._closer = asyncio.create_task(send_close())
        self.server.closers.add(task)
        task.add_done_callback(self.server.closers.discard)

    def _cleanup(self) -> None:
        for op_id in list(self.operations):
            self.finish(op_id)
        if self._init_timer is not None:
            self._init_timer.cancel()
            self._init_timer = None
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self.outbox.close()
        for task in list(self._tasks or ()):
            if task is not asyncio.current_task():
                task.cancel()
        self.server.connections.discard(self)
        if self.ping_slot is not None:
            self.ping_slot.discard(self)
            self.ping_slot = None

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``coroutine`` as a task of this socket (cancelled when it closes)."""
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if self._tasks is not None:
            self._tasks.discard(task)
            if not self._tasks:
                self._tasks = None

    def send_now(self, message: Queued) -> bool:
        """Write ``message`` now if the socket takes it at once (see
        ``LeanWSProtocol.send_text_now``); False: queue it."""
        protocol = self.protocol
        if protocol is None or self.closing:
            return False
        text = message if isinstance(message, str) else f"{message[0]}{message[1]}}}"
        return protocol.send_text_now(text)

    @contextlib.asynccontextmanager
    async def catch_up_turn(self) -> AsyncIterator[None]:
        """One catch-up page of this socket at a time, pulled once the socket has taken
        what it was given.

        A socket that does not read would otherwise be handed a page per subscription and
        page, each pulled, decoded and encoded for nothing (50 never-reading sockets of ten
        subscriptions each took most of the workers' CPU while well-behaved sockets
        waited), and held in memory until it closed. One that takes nothing for
        ``ws_send_stall_seconds`` while a page waits is closed as a slow consumer (4003):
        it resumes from the checkpoint of the last page it read.
        """
        while self._turn is not None:
            await self._turn.wait()
        turn = self._turn = asyncio.Event()
        try:
            if not await self._taken(self.server.settings.ws_send_stall_seconds):
                self.close(CloseCode.SLOW_CONSUMER, "socket not reading: reconnect and resume")
            yield
        finally:
            self._turn = None
            turn.set()

    async def _taken(self, seconds: float) -> bool:
        """Wait until the socket has taken what it was given: nothing queued here and at
        most ``PACE_BYTES`` unacknowledged (the rest of a page still on its way while the
        next one is pulled); False if that took longer than ``seconds``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        if not await self.outbox.drained(seconds):
            return False
        protocol = self.protocol
        if protocol is None:
            return True
        # Nothing wakes us when the kernel's queue drains: look again, less and less often.
        pause = 0.01
        while not self.closing and protocol.unsent_bytes() > PACE_BYTES:
            if loop.time() + pause > deadline:
                return False
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)
        return True

    async def send_text(self, message: str) -> None:
        """Write one message to the socket (the outbox's writer calls this)."""
        try:
            await self.websocket.send_text(message)
        except (WebSocketDisconnect, RuntimeError, OSError):
            # The peer is gone: the receive loop sees the disconnect and cleans up.
            self.outbox.close()

    def send_message(self, message: dict[str, Any]) -> None:
        """Queue a protocol message (not subject to the slow-consumer rule)."""
        self.outbox.append(orjson.dumps(message).decode())

    # -- messages --------------------------------------------------------------------

    async def _handle(self, data: str | bytes | None) -> None:
        try:
            message = orjson.loads(data) if data is not None else None
        except orjson.JSONDecodeError:
            message = None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            self.close(CloseCode.BAD_REQUEST, "Invalid message received")
            return
        kind = message["type"]
        if kind == "connection_init":
            await self._init(message.get("payload"))
        elif kind == "ping":
            self.send_message({"type": "pong"})
        elif kind == "pong":
            pass
        elif kind == "subscribe":
            await self._subscribe(message)
        elif kind == "complete":
            op_id = message.get("id")
            if not isinstance(op_id, str):
                self.close(CloseCode.BAD_REQUEST, "Invalid message received")
                return
            self.finish(op_id)
        else:
            self.close(CloseCode.BAD_REQUEST, f"Unexpected message of type {kind[:40]!r}")

    async def _init(self, payload: object) -> None:
        if self.init_received:
            self.close(CloseCode.TOO_MANY_INITS, "Too many initialisation requests")
            return
        self.init_received = True
        token = _token_from(payload)
        if token is None:
            self.close(CloseCode.FORBIDDEN, "Forbidden: send {authorization: 'Bearer <token>'}")
            return
        secret = self.server.settings.secret_key
        assert secret is not None
        try:
            claims = read_token(secret, token)
        except InvalidTokenError:
            self.close(CloseCode.FORBIDDEN, "Forbidden: invalid or expired token")
            return
        # A handshake can wait for a live batch being read or handed out.
        await self.server.hub.after_live()
        row = await self.server.users.get(claims.org_id, claims.user_id)
        if not still_valid(row, claims):
            self.close(CloseCode.FORBIDDEN, "Forbidden: this token was revoked")
            return
        if self.closing:
            return
        self.claims, self.token = claims, token
        if self._init_timer is not None:
            self._init_timer.cancel()
            self._init_timer = None
        delay = max(0.0, claims.expires_at.timestamp() - time.time())
        self._expiry = asyncio.get_running_loop().call_later(
            delay, self.close, CloseCode.TOKEN_EXPIRED, "Token expired: sign in again"
        )
        self.send_message({"type": "connection_ack"})
        self.server.add_to_ping_wheel(self)

    async def _subscribe(self, message: dict[str, Any]) -> None:
        if self.claims is None:
            self.close(CloseCode.UNAUTHORIZED, "Unauthorized")
            return
        op_id = message.get("id")
        payload = message.get("payload")
        if (
            not isinstance(op_id, str)
            or not 0 < len(op_id) <= MAX_ID_CHARS
            or not isinstance(payload, dict)
            or not isinstance(payload.get("query"), str)
            or not isinstance(payload.get("variables") or {}, dict)
            or not isinstance(payload.get("operationName") or "", str)
        ):
            self.close(CloseCode.BAD_REQUEST, "Invalid message received")
            return
        if op_id in self.operations:
            self.close(CloseCode.DUPLICATE_ID, f"Subscriber for {op_id} already exists")
            return
        if len(self.operations) >= self.server.settings.ws_max_subscriptions:
            self.close(
                CloseCode.TOO_MANY_OPERATIONS,
                f"more than {self.server.settings.ws_max_subscriptions} operations on one socket",
            )
            return
        await self.server.hub.after_live()
        if self.closing:
            return
        try:
            prepared = prepare_subscription(
                self.server.documents,
                payload["query"],
                payload.get("variables"),
                payload.get("operationName"),
            )
        except DocumentError as exc:
            self.send_message(
                {"id": op_id, "type": "error", "payload": [_coded(e) for e in exc.errors]}
            )
            return
        if isinstance(prepared, OtherOperation):
            self.operations[op_id] = self.spawn(self._execute(op_id, payload))
            return
        self._start_changes(op_id, prepared)

    def _start_changes(self, op_id: str, prepared: ChangesSubscription) -> None:
        assert self.claims is not None
        try:
            device_id = record_uuid(prepared.device_id, "deviceId")
        except Exception:  # noqa: BLE001 - any malformed id is the client's error
            self._op_error(op_id, f"{prepared.device_id!r} is not a device id", "BAD_USER_INPUT")
            return
        try:
            types = None if prepared.types is None else [SyncEntity(t) for t in prepared.types]
            feed = feed_types(types)
            # An omitted `since` resumes from the server's position for the feed's types.
            since = None if prepared.resume else feed_position(prepared.since, feed)
        except PublicError as exc:
            self._op_error(op_id, exc.message, str((exc.extensions or {}).get("code")))
            return
        sink = SocketSubscription(self, op_id, prepared.encoder)
        sink.subscriber = Subscriber(
            org_id=self.claims.org_id,
            user_id=self.claims.user_id,
            device_id=device_id,
            token_epoch=self.claims.epoch,
            sink=sink,
            since=since,
            types=None if types is None else frozenset(t.value for t in feed),
            feed=feed_name(feed),
        )
        self.operations[op_id] = sink
        self.server.hub.add(sink.subscriber)

    def _op_error(self, op_id: str, message: str, code: str) -> None:
        self.send_message({"id": op_id, "type": "error", "payload": _error_payload(message, code)})

    async def _execute(self, op_id: str, payload: dict[str, Any]) -> None:
        """A query or mutation over the socket: executed like an HTTP request."""
        context = Context(
            request=self.websocket,
            db=self.server.db,
            settings=self.server.settings,
            token=self.token,
            count_push_outcomes=metrics.count_push_outcomes,
        )
        try:
            result = await self.server.schema.execute(
                payload["query"],
                variable_values=payload.get("variables"),
                context_value=context,
                operation_name=payload.get("operationName"),
            )
            body: dict[str, Any] = {"data": result.data}
            if result.errors:
                body["errors"] = [e.formatted for e in result.errors]
            if self.operations.get(op_id) is asyncio.current_task():
                self.send_message({"id": op_id, "type": "next", "payload": body})
                self.send_message({"id": op_id, "type": "complete"})
        finally:
            if self.operations.get(op_id) is asyncio.current_task():
                del self.operations[op_id]

    def finish(self, op_id: str) -> None:
        """End an operation (client `complete`, an error, or the socket closing)."""
        operation = self.operations.pop(op_id, None)
        if isinstance(operation, SocketSubscription):
            if operation.subscriber is not None:
                self.server.hub.remove(operation.subscriber)
                # The two refer to each other: unlinked, both go once the hub lets go.
                operation.subscriber = None
        elif operation is not None and operation is not asyncio.current_task():
            operation.cancel()


def _coded(error: GraphQLError) -> dict[str, Any]:
    """An error as sent, with the code the executor would give it (an unknown enum value in
    the variables is BAD_USER_INPUT over HTTP too)."""
    formatted = error.formatted
    extensions = dict(formatted.get("extensions") or {})
    code = extensions.get("code") or code_for(error.message)
    if code is None:
        return dict(formatted)
    return {**formatted, "extensions": {**extensions, "code": code}}


def _token_from(payload: object) -> str | None:
    """The bearer token of a ``connection_init`` payload: ``{authorization}``, ``{token}``,
    or ``{headers: {Authorization}}`` (what RxDB's and Apollo's clients send)."""
    if not isinstance(payload, dict):
        return None
    headers = payload.get("headers")
    for source in (payload, headers if isinstance(headers, dict) else {}):
        for key in ("authorization", "Authorization"):
            value = source.get(key)
            if isinstance(value, str):
                return bearer_token(value)
    token = payload.get("token")
    return token if isinstance(token, str) and token else None


class UserLookups:
    """``users`` rows for ``connection_init``, looked up together.

    A reconnect storm brings thousands of ``connection_init`` at once; one transaction
    each (four round trips and a pooled connection) made the handshakes queue behind each
    other and behind catch-up. Lookups of one tenant that arrive while its previous lookup
    runs (or in the same loop iteration) share one statement, run on the asyncpg
    connection in three round trips (``db.live.read_only``): through SQLAlchemy, its
    transaction and statement cost a storm's worker more Python than the handshake itself.
    """

    def __init__(self, db: Database, max_ids: int = 500) -> None:
        self.db = db
        self.max_ids = max_ids
        self._waiting: dict[UUID, dict[UUID, list[asyncio.Future[dict[str, Any] | None]]]] = {}
        self._running: dict[UUID, asyncio.Task[None]] = {}

    async def get(self, org_id: UUID, user_id: UUID) -> dict[str, Any] | None:
        """What ``still_valid`` reads of the user's row, ``active`` and ``token_epoch``
        (None: no such user in the tenant)."""
        future: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(org_id, {}).setdefault(user_id, []).append(future)
        if org_id not in self._running:
            self._running[org_id] = asyncio.create_task(self._look_up(org_id))
        return await future

    async def _look_up(self, org_id: UUID) -> None:
        try:
            # Let the lookups of this loop iteration join the first statement.
            await asyncio.sleep(0)
            while waiting := self._waiting.pop(org_id, None):
                ids = list(waiting)
                for start in range(0, len(ids), self.max_ids):
                    chunk = ids[start : start + self.max_ids]
                    try:
                        async with read_only(self.db, org_id) as conn:
                            rows = await user_facts(conn, org_id, chunk)
                    except Exception as exc:  # noqa: BLE001 - each waiter gets the error
                        for user_id in chunk:
                            for future in waiting[user_id]:
                                if not future.done():
                                    future.set_exception(exc)
                        continue
                    for user_id in chunk:
                        facts = rows.get(user_id)
                        row = (
                            None
                            if facts is None
                            else {"active": facts.active, "token_epoch": facts.token_epoch}
                        )
                        for future in waiting[user_id]:
                            if not future.done():
                                future.set_result(row)
        finally:
            self._running.pop(org_id, None)


class SubscriptionServer:
    """Process-wide state of the endpoint: hub, document cache, open connections."""

    def __init__(self, *, schema: BaseSchema, settings: Settings, db: Database, hub: Hub) -> None:
        assert isinstance(schema, strawberry.Schema)
        self.schema = schema
        self.settings = settings
        self.db = db
        self.hub = hub
        self.documents = Documents(schema._schema, settings.operation_limits())
        self.users = UserLookups(db)
        self.connections: set[Connection] = set()
        self.closers: set[asyncio.Task[None]] = set()
        self._pinger: asyncio.Task[None] | None = None
        # Acknowledged connections spread round robin over the slots of the ping wheel.
        self._ping_slots: list[set[Connection]] = [set() for _ in range(PING_SLOTS)]
        self._next_slot = 0

    def start_pings(self) -> None:
        """One task pings every acknowledged socket (not a sleeping task per socket)."""
        if self._pinger is None and self.settings.ws_ping_seconds > 0:
            self._pinger = asyncio.get_running_loop().create_task(self._pings())

    def add_to_ping_wheel(self, connection: Connection) -> None:
        """Ping ``connection`` from now on, in the next slot of the wheel (round robin)."""
        if connection.closing or connection.ping_slot is not None:
            return
        slot = self._ping_slots[self._next_slot]
        self._next_slot = (self._next_slot + 1) % len(self._ping_slots)
        slot.add(connection)
        connection.ping_slot = slot

    async def _pings(self) -> None:
        # A wheel, not a sweep: pinging every socket at once writes thousands of frames in
        # one loop iteration and brings thousands of pongs back together, a stall of every
        # socket of the worker each interval. Each tick pings one slot: every socket is
        # still pinged once per interval, a 1/PING_SLOTS share of them at a time.
        ping = orjson.dumps({"type": "ping"}).decode()
        tick = self.settings.ws_ping_seconds / len(self._ping_slots)
        slot = 0
        while True:
            await asyncio.sleep(tick)
            for connection in list(self._ping_slots[slot]):
                if connection.claims is not None and not connection.closing:
                    connection.outbox.append(ping)
            slot = (slot + 1) % len(self._ping_slots)

    def __call__(self, websocket: WebSocket) -> Coroutine[Any, Any, None]:
        """Serve one socket (await the result): the connection's own coroutine, with no
        frame of this call kept suspended under it for the socket's life."""
        connection = Connection(self, websocket)
        self.connections.add(connection)
        return connection.serve()

    async def drain(self) -> None:
        """Close every socket with 1001 so clients resume on another instance."""
        if self._pinger is not None:
            self._pinger.cancel()
            self._pinger = None
        for connection in list(self.connections):
            connection.close(CloseCode.GOING_AWAY, "server shutting down: reconnect and resume")
        if self.closers:
            await asyncio.wait(list(self.closers), timeout=5)
