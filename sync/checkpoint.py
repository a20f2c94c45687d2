"""Opaque pull checkpoints: a position in one feed of the tenant's change stream.

A *feed* is the stream of one set of record types (``*``: all of them); its checkpoints are
valid for that feed only, so each carries the feed's name and a checkpoint of another feed
is refused instead of silently skipping the other types' changes.

A position is (effective seq, kind, entity rank, record id). Most pages end at the head,
where only the seq matters; a page cut short by ``limit`` ends inside a group of rows that
share one effective seq (a newly selected customer arrives whole at the seq of its
selection, an unselected one leaves as evictions at the seq it left), so the kind (evictions
before records: a customer that left and came back at one seq is dropped first, then sent
whole), rank and id say where to continue, and ``base`` keeps the seq the whole pull started
from: which rows are due (tombstones included) is decided against it on every page.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Collection
from dataclasses import dataclass
from uuid import UUID

PREFIX = "v2"
# Checkpoints of contract v1 were positions in the one feed there was (all types), without a
# kind: they are still honoured as checkpoints of the all-types feed.
V1_PREFIX = "v1"
# Seqs are PostgreSQL bigints and ranks integers: a position past them was never issued,
# and would fail as a query parameter instead of being refused.
MAX_SEQ = 2**63 - 1
MAX_RANK = 2**31 - 1
# Within one effective seq, evictions come before records.
EVICTION = 0
RECORD = 1
# The feed of every record type, whatever types are added later.
ALL_TYPES = "*"
# A feed name: ``*`` or type names in order, joined by ``+`` (``asset+facility``).
_FEED = re.compile(r"\*|[a-z]+(\+[a-z]+)*")
_MAX_FEED_CHARS = 200


@dataclass(frozen=True, order=True)
class Checkpoint:
    """A position in a feed; ``Checkpoint()`` is the very beginning of the all-types feed."""

    seq: int = 0
    rank: int = -1
    record_id: UUID | None = None
    base: int | None = None
    kind: int = RECORD
    feed: str = ALL_TYPES

    @property
    def since(self) -> int:
        """The seq the pull started from (the position itself at a boundary)."""
        return self.seq if self.base is None else self.base

    @property
    def at_boundary(self) -> bool:
        """True when every row with this seq has been delivered."""
        return self.record_id is None


class InvalidCheckpointError(ValueError):
    """The checkpoint was not issued by this server (or is corrupted)."""


class OtherFeedError(InvalidCheckpointError):
    """A checkpoint this server issued, but for a feed of other record types."""


def feed_of(types: Collection[str] | None, every: Collection[str]) -> str:
    """The name of the feed of ``types`` (None: all of ``every``, which it also names)."""
    if types is None or set(every) <= set(types):
        return ALL_TYPES
    if not types:
        raise ValueError("a feed has at least one record type")
    return "+".join(sorted(set(types)))


def feed_types(feed: str, every: Collection[str]) -> frozenset[str]:
    """The record types of ``feed`` (the inverse of :func:`feed_of`)."""
    return frozenset(every) if feed == ALL_TYPES else frozenset(feed.split("+"))


def encode(checkpoint: Checkpoint) -> str:
    """The opaque string clients store and send back."""
    rid = "" if checkpoint.record_id is None else checkpoint.record_id.hex
    raw = (
        f"{PREFIX}.{checkpoint.seq}.{checkpoint.kind}.{checkpoint.rank}.{rid}"
        f".{checkpoint.since}.{checkpoint.feed}"
    )
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode(
    value: str | None, feed: str | None = None, known: Collection[str] | None = None
) -> Checkpoint:
    """Parse a checkpoint; None or "" is the beginning (of ``feed``, default all types).

    With ``feed``, a checkpoint of another feed raises :class:`OtherFeedError`; anything
    else this server did not issue (with ``known``: a feed naming other types than these)
    raises :class:`InvalidCheckpointError`.
    """
    if not value:
        return Checkpoint(feed=feed or ALL_TYPES)
    try:
        padded = value + "=" * (-len(value) % 4)
        parts = base64.urlsafe_b64decode(padded.encode()).decode().split(".")
        if parts[0] == V1_PREFIX and len(parts) == 5:
            _, seq, rank, rid, base = parts
            kind, name = str(RECORD), ALL_TYPES
        elif parts[0] == PREFIX and len(parts) == 7:
            _, seq, kind, rank, rid, base, name = parts
        else:
            raise ValueError(parts[0])
        position = int(seq)
        since = int(base)
        checkpoint = Checkpoint(
            position,
            int(rank),
            UUID(hex=rid) if rid else None,
            None if since == position else since,
            int(kind),
            name,
        )
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidCheckpointError(_refusal(value)) from exc
    if (
        not 0 <= checkpoint.seq <= MAX_SEQ
        or not -1 <= checkpoint.rank <= MAX_RANK
        or not 0 <= checkpoint.since <= checkpoint.seq
        or checkpoint.kind not in (EVICTION, RECORD)
        or not _canonical(checkpoint.feed)
        or (known is not None and not feed_types(checkpoint.feed, known) <= set(known))
    ):
        raise InvalidCheckpointError(_refusal(value))
    if feed is not None and checkpoint.feed != feed:
        raise OtherFeedError(
            f"this checkpoint belongs to the feed of types {_shown(checkpoint.feed)}, not"
            f" {_shown(feed)}: send it with the types it was issued for, or start this feed"
            " from null"
        )
    return checkpoint


def _canonical(feed: str) -> bool:
    if len(feed) > _MAX_FEED_CHARS or not _FEED.fullmatch(feed):
        return False
    names = feed.split("+")
    return feed == ALL_TYPES or names == sorted(set(names))


def _shown(feed: str) -> str:
    return "[all]" if feed == ALL_TYPES else "[" + ", ".join(feed.upper().split("+")) + "]"


def _refusal(value: str) -> str:
    # Untrusted input: quote only the start of it back to the client.
    shown = value if len(value) <= 100 else value[:100] + "..."
    return f"not a checkpoint issued by this server: {shown!r}"
