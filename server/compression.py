"""Compressed HTTP responses, negotiated from ``Accept-Encoding`` (zstd, else gzip).

A pull page of 1,000 changes is about 400 KB of JSON that compresses 8-10x; on a phone's
link the bytes, not the server, are what the technician waits for. The middleware sits
outside the app, so every route that answers with text (GraphQL, GraphiQL's assets) gets
it; WebSockets never reach it (they have their own negotiation).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import anyio.to_thread
import orjson
import zstandard
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Levels chosen by measurement on 480-510 KB pull pages (`python -m bench.phone_link
# --levels`): zstd 1 compresses 10.8x in 0.4 ms (level 3: 10.1x in 0.5 ms); gzip 3 gives
# 7.7-7.9x in 1.9 ms, the knee (level 5: 8.5x in 3.7 ms, which put 1.4x the server CPU per
# change on a whole initial sync; level 6: 8.8x in 4.6 ms).
ZSTD_LEVEL = 1
GZIP_LEVEL = 3
# Below this many bytes the framing and headers eat the gain.
MIN_BYTES = 1024
# A body at least this large is compressed on a worker thread, in pieces sent as they are
# ready: the event loop keeps serving other sockets, and the first bytes leave early.
THREAD_BYTES = 64 * 1024
PIECE_BYTES = 256 * 1024
# An Accept-Encoding longer than this is not from a real client; it is read as absent.
MAX_HEADER_CHARS = 1024
SUPPORTED = ("zstd", "gzip")  # the server's preference among equally weighted codings
COMPRESSIBLE = (
    b"application/json",
    b"application/graphql-response+json",
    b"application/javascript",
    b"text/",
    b"image/svg+xml",
)
# Streams whose parts must reach the client when produced are never buffered.
STREAMING = (b"text/event-stream", b"multipart/")


class NotAcceptableError(Exception):
    """The client refuses identity and offers no coding the server has."""


def choose_encoding(header: str | None) -> str | None:
    """The coding for a response to a request with this ``Accept-Encoding`` (None: none).

    Weights as in HTTP semantics: a coding listed with ``q=0`` is refused, ``*`` stands for
    every coding not listed, identity is acceptable unless refused. The highest weight
    wins (identity only when listed); ties go to the server's order (zstd, gzip). Raises
    ``NotAcceptableError`` when identity is refused and nothing else is offered. Linear in
    the header's length.
    """
    if header is None or len(header) > MAX_HEADER_CHARS:
        return None
    weights: dict[str, float] = {}
    for item in header.split(","):
        name, _, params = item.partition(";")
        name = name.strip().lower()
        if not name:
            continue
        weight = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    weight = min(max(float(value.strip()), 0.0), 1.0)
                except ValueError:
                    weight = 0.0  # an unreadable weight offers nothing
        weights["gzip" if name == "x-gzip" else name] = weight
    wildcard = weights.get("*")
    best: str | None = None
    best_weight = 0.0
    for coding in SUPPORTED:
        weight = weights.get(coding, wildcard if wildcard is not None else 0.0)
        if weight > best_weight:
            best, best_weight = coding, weight
    identity = weights.get("identity", wildcard if wildcard is not None else 1.0)
    if best is None and identity <= 0.0:
        raise NotAcceptableError(header)
    # Identity outranks a coding only when the client weighs it explicitly above it.
    if best is not None and weights.get("identity", 0.0) > best_weight:
        return None
    return best


@dataclass
class _Compressor:
    """One response's compressor: ``feed`` returns the bytes ready so far."""

    feed: Callable[[bytes], bytes]
    finish: Callable[[], bytes]


def _compressor(coding: str) -> _Compressor:
    if coding == "zstd":
        stream = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()
        return _Compressor(stream.compress, stream.flush)
    deflate = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip framing
    return _Compressor(deflate.compress, deflate.flush)


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _without(headers: list[tuple[bytes, bytes]], *names: bytes) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in headers if k.lower() not in names]


def _with_vary(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Caches must key on Accept-Encoding: the same URL answers in several codings."""
    vary = _header(headers, b"vary")
    if vary is not None and b"accept-encoding" in vary.lower():
        return headers
    merged = vary + b", Accept-Encoding" if vary else b"Accept-Encoding"
    return [*_without(headers, b"vary"), (b"vary", merged)]


def _compressible(headers: list[tuple[bytes, bytes]]) -> bool:
    if _header(headers, b"content-encoding") is not None:
        return False
    media = (_header(headers, b"content-type") or b"").lower()
    return media.startswith(COMPRESSIBLE) and not media.startswith(STREAMING)


NOT_ACCEPTABLE_BODY = orjson.dumps(
    {
        "errors": [
            {
                "message": "No acceptable content coding: this server answers in "
                + ", ".join(SUPPORTED)
                + " or identity",
                "extensions": {"code": "NOT_ACCEPTABLE"},
            }
        ]
    }
)


class CompressResponses:
    """ASGI middleware: compress text responses for clients that offer zstd or gzip."""

    def __init__(self, app: ASGIApp, enabled: bool = True) -> None:
        self.app = app
        self.enabled = enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry."""
        if scope["type"] != "http" or not self.enabled:
            await self.app(scope, receive, send)
            return
        raw = _header(list(scope.get("headers") or []), b"accept-encoding")
        try:
            coding = choose_encoding(raw.decode("latin-1") if raw is not None else None)
        except NotAcceptableError:
            await _send_not_acceptable(send)
            return
        await self.app(scope, receive, _ResponseCompressor(send, coding).send)


async def _send_not_acceptable(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 406,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(NOT_ACCEPTABLE_BODY)).encode()),
                (b"vary", b"Accept-Encoding"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": NOT_ACCEPTABLE_BODY})


class _ResponseCompressor:
    """Wraps one response's ``send``: holds the start until the first body part decides."""

    def __init__(self, send: Send, coding: str | None) -> None:
        self._send = send
        self._coding = coding
        self._start: Message | None = None
        self._stream: _Compressor | None = None
        self._passthrough = False

    async def send(self, message: Message) -> None:
        """The app's ``send``."""
        kind = message["type"]
        if kind == "http.response.start":
            headers = list(message.get("headers") or [])
            if not _compressible(headers):
                self._passthrough = True
                await self._send(message)
                return
            self._start = {**message, "headers": _with_vary(headers)}
            return
        if kind != "http.response.body" or self._passthrough or self._start is None:
            await self._send(message)
            return
        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        if self._stream is None:
            if self._coding is None or (not more and len(body) < MIN_BYTES):
                await self._send_start(None)
                self._passthrough = True
                await self._send(message)
                return
            await self._send_start(self._coding)
            self._stream = _compressor(self._coding)
        await self._send_compressed(self._stream, body, more)

    async def _send_start(self, coding: str | None) -> None:
        assert self._start is not None
        start = self._start
        if coding is not None:
            headers = _without(start["headers"], b"content-length")
            start = {**start, "headers": [*headers, (b"content-encoding", coding.encode())]}
        await self._send(start)

    async def _send_compressed(self, stream: _Compressor, body: bytes, more: bool) -> None:
        for offset in range(0, max(len(body), 1), PIECE_BYTES):
            piece = body[offset : offset + PIECE_BYTES]
            last_piece = offset + PIECE_BYTES >= len(body)
            finish = last_piece and not more
            out = await _run(stream, piece, finish, threaded=len(body) >= THREAD_BYTES)
            if out or finish:
                await self._send(
                    {"type": "http.response.body", "body": out, "more_body": not finish}
                )


async def _run(stream: _Compressor, piece: bytes, finish: bool, *, threaded: bool) -> bytes:
    def work() -> bytes:
        out = stream.feed(piece)
        return out + stream.finish() if finish else out

    if threaded:
        # zstd and zlib release the GIL while compressing: the loop keeps running.
        return await anyio.to_thread.run_sync(work)
    return work()
