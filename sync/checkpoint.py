"""Opaque pull checkpoints: a position in the tenant's change stream.

A position is (effective seq, entity rank, record id). Most pages end at the head, where
only the seq matters; a page cut short by ``limit`` ends inside a group of rows that share
one effective seq (a newly selected customer arrives whole at the seq of its selection), so
the rank and id say where to continue, and ``base`` keeps the seq the whole pull started
from: which rows are due (tombstones included) is decided against it on every page.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from uuid import UUID

PREFIX = "v1"
# Seqs are PostgreSQL bigints and ranks integers: a position past them was never issued,
# and would fail as a query parameter instead of being refused.
MAX_SEQ = 2**63 - 1
MAX_RANK = 2**31 - 1


@dataclass(frozen=True, order=True)
class Checkpoint:
    """A position in the change stream; ``Checkpoint()`` is the very beginning."""

    seq: int = 0
    rank: int = -1
    record_id: UUID | None = None
    base: int | None = None

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


def encode(checkpoint: Checkpoint) -> str:
    """The opaque string clients store and send back."""
    rid = "" if checkpoint.record_id is None else checkpoint.record_id.hex
    raw = f"{PREFIX}.{checkpoint.seq}.{checkpoint.rank}.{rid}.{checkpoint.since}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode(value: str | None) -> Checkpoint:
    """Parse a checkpoint; None or "" is the beginning. Raises InvalidCheckpointError."""
    if not value:
        return Checkpoint()
    try:
        padded = value + "=" * (-len(value) % 4)
        prefix, seq, rank, rid, base = base64.urlsafe_b64decode(padded.encode()).decode().split(".")
        if prefix != PREFIX:
            raise ValueError(prefix)
        position = int(seq)
        since = int(base)
        checkpoint = Checkpoint(
            position,
            int(rank),
            UUID(hex=rid) if rid else None,
            None if since == position else since,
        )
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidCheckpointError(_refusal(value)) from exc
    if (
        not 0 <= checkpoint.seq <= MAX_SEQ
        or not -1 <= checkpoint.rank <= MAX_RANK
        or not 0 <= checkpoint.since <= checkpoint.seq
    ):
        raise InvalidCheckpointError(_refusal(value))
    return checkpoint


def _refusal(value: str) -> str:
    # Untrusted input: quote only the start of it back to the client.
    shown = value if len(value) <= 100 else value[:100] + "..."
    return f"not a checkpoint issued by this server: {shown!r}"
