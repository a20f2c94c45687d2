"""A raw graphql-transport-ws client for protocol-level tests (the `websockets` library)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

CHANGES = """subscription($d: ID!, $since: String, $types: [SyncEntity!]) {
  changes(deviceId: $d, since: $since, types: $types) {
  changes { entity recordId customerId op version data } checkpoint reset } }"""


class Socket:
    """One socket; answers server pings; every wait is bounded."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.close_code: int | None = None
        self.close_reason = ""

    @classmethod
    async def open(cls, ws_url: str, token: str | None = None, *, init: bool = True) -> Socket:
        """Connect; with ``init``, send connection_init and expect the ack."""
        ws = await connect(ws_url, subprotocols=["graphql-transport-ws"], open_timeout=10)
        socket = cls(ws)
        if init:
            await socket.send(
                {"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}
            )
            ack = await socket.recv()
            assert ack == {"type": "connection_ack"}, ack
        return socket

    async def send(self, message: Any) -> None:
        await self.ws.send(
            message if isinstance(message, str | bytes) else orjson.dumps(message).decode()
        )

    async def recv(self, seconds: float = 15) -> dict[str, Any]:
        """The next message that is not a ping (pings are answered)."""
        deadline = time.monotonic() + seconds
        while True:
            raw = await asyncio.wait_for(self.ws.recv(), max(0.01, deadline - time.monotonic()))
            message = orjson.loads(raw)
            if message.get("type") == "ping":
                await self.send({"type": "pong"})
                continue
            return message  # type: ignore[no-any-return]

    async def subscribe(
        self,
        op_id: str,
        device_id: str,
        since: str | None = None,
        query: str = CHANGES,
        *,
        types: list[str] | None = None,
        resume: bool = False,
    ) -> None:
        """Subscribe from ``since`` (null: the beginning), or with ``resume`` omit it (the
        server's own position for the feed); ``types`` filters the feed."""
        variables: dict[str, Any] = {"d": device_id}
        if not resume:
            variables["since"] = since
        if types is not None:
            variables["types"] = types
        await self.send(
            {"id": op_id, "type": "subscribe", "payload": {"query": query, "variables": variables}}
        )

    async def closed(self, seconds: float = 15) -> int:
        """Wait for the server to close the socket; returns the close code."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                await self.recv(max(0.01, deadline - time.monotonic()))
        except ConnectionClosed as exc:
            frame = exc.rcvd
        if frame is None:
            raise AssertionError("closed without a close frame")
        self.close_code, self.close_reason = frame.code, frame.reason
        return frame.code

    async def collect(
        self, op_id: str, until: Callable[[list[dict[str, Any]]], bool], seconds: float = 20
    ) -> list[dict[str, Any]]:
        """`next` payloads of ``op_id`` until ``until(batches)`` holds (fails on error/timeout)."""
        batches: list[dict[str, Any]] = []
        deadline = time.monotonic() + seconds
        while not until(batches):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"timed out; got {len(batches)} batches: {batches[-3:]}"
            message = await self.recv(remaining)
            assert message.get("id") == op_id, message
            assert message["type"] == "next", message
            batches.append(message["payload"]["data"]["changes"])
        return batches

    async def close(self) -> None:
        await self.ws.close()


def ids_in(batches: list[dict[str, Any]]) -> list[str]:
    """Record ids of every change of every batch, in arrival order."""
    return [c["recordId"] for b in batches for c in b["changes"]]
