"""permessage-deflate for large WebSocket messages only, with no state kept between them.

A catch-up page of 1,000 changes is ~500 KB of JSON that deflates 7-8x; a live batch is a
few hundred bytes that would not. So the server negotiates permessage-deflate with no
context takeover in either direction: each large message is compressed on its own and the
compressor is freed after it, so an idle socket keeps no zlib state (~270 KB each
otherwise). Messages under ``MIN_MESSAGE_BYTES`` go out uncompressed (the extension allows
that per message). What a client sends compressed is inflated within the socket's message
limit, so a small frame cannot expand into a large allocation.
"""

from __future__ import annotations

import dataclasses
import zlib

import wsproto
from wsproto.events import AcceptConnection, Event
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol, Opcode, RsvBits

from server.websocket_protocol import LeanWSConnection, LeanWSProtocol

# Smaller messages (acks, live batches of a few changes) are not worth a compressor; a
# catch-up page or a big live batch is.
MIN_MESSAGE_BYTES = 16 * 1024
# Level 5: 8.5x on pull pages in 3.7 ms per 500 KB page, where level 1 gives 7.5x in 1.8 ms
# and the default level 6 8.8x in 4.6 ms (`python -m bench.phone_link --levels`, gzip rows:
# the same deflate).
LEVEL = 5


class LargeMessageDeflate(PerMessageDeflate):
    """permessage-deflate, no context takeover, outbound only for large messages, inbound
    inflated within ``max_message_bytes``."""

    def __init__(self, max_message_bytes: int) -> None:
        super().__init__(client_no_context_takeover=True, server_no_context_takeover=True)
        self._max_message_bytes = max_message_bytes
        self._inflated = 0  # bytes of the inbound message inflated so far
        self._outbound_plain = False  # the outbound message in progress is sent as is

    def frame_outbound(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        data: bytes,
        fin: bool,
    ) -> tuple[RsvBits, bytes]:
        """Compress a large message; leave a small one (and control frames) alone."""
        if not self._compressible_opcode(opcode):
            return (rsv, data)
        if opcode is not Opcode.CONTINUATION:
            self._outbound_plain = len(data) < MIN_MESSAGE_BYTES
        if self._outbound_plain:
            return (rsv, data)
        if self._compressor is None:
            self._compressor = zlib.compressobj(
                LEVEL, zlib.DEFLATED, -int(self.server_max_window_bits)
            )
        return super().frame_outbound(proto, opcode, rsv, data, fin)

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> CloseReason | RsvBits:
        """A new message starts its inflation budget afresh."""
        if self._inbound_compressed is None:
            self._inflated = 0
        return super().frame_inbound_header(proto, opcode, rsv, payload_length)

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        """Inflate at most what the message limit allows; past it the socket closes (1009)."""
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        assert self._decompressor is not None
        room = self._max_message_bytes - self._inflated
        try:
            out = self._decompressor.decompress(bytes(data), room + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._inflated += len(out)
        if self._inflated > self._max_message_bytes or self._decompressor.unconsumed_tail:
            return CloseReason.MESSAGE_TOO_BIG
        return out


class _DeflatingConnection(LeanWSConnection):
    """wsproto's server connection that accepts with ``LargeMessageDeflate`` when offered."""

    def __init__(self, max_message_bytes: int) -> None:
        super().__init__()
        self._max_message_bytes = max_message_bytes

    def send(self, event: Event) -> bytes:
        """Accepting: offer our extension (used only if the client asked for deflate)."""
        if isinstance(event, AcceptConnection):
            event = dataclasses.replace(
                event, extensions=[LargeMessageDeflate(self._max_message_bytes)]
            )
        return super().send(event)


class DeflateLargeMessagesProtocol(LeanWSProtocol):
    """The lean wsproto WebSocket protocol with ``LargeMessageDeflate`` negotiated."""

    __slots__ = ()

    def new_connection(self) -> wsproto.WSConnection:
        """A connection that accepts with the extension when the client offers deflate."""
        return _DeflatingConnection(self.config.ws_max_size)
