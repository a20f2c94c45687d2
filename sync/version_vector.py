"""Version vectors: ``{replicaId: counter}``, one counter per replica that wrote a record.

A missing replica means counter 0, so zeros are never stored and two vectors that differ
only in zero entries are equal. Every function returns a new dict and never mutates its
arguments; callers keep stored versions as they were read.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

VersionVector = dict[str, int]

MAX_ENTRIES = 1000
MAX_REPLICA_ID_LENGTH = 64
# Counters are stored in PostgreSQL bigint columns and JSONB; anything above this cannot be a
# counter the server handed out.
MAX_COUNTER = 2**63 - 1


class Ordering(enum.Enum):
    """How two version vectors relate under the pointwise (causal) order."""

    EQUAL = "EQUAL"
    BEFORE = "BEFORE"  # a is dominated by b: b has seen everything a has, and more
    AFTER = "AFTER"  # a dominates b
    CONCURRENT = "CONCURRENT"  # each has seen a write the other has not


def compare(a: Mapping[str, int], b: Mapping[str, int]) -> Ordering:
    """The causal order of ``a`` relative to ``b`` (missing replicas count as 0)."""
    a_ahead = b_ahead = False
    for replica in a.keys() | b.keys():
        left, right = a.get(replica, 0), b.get(replica, 0)
        if left > right:
            a_ahead = True
        elif right > left:
            b_ahead = True
        if a_ahead and b_ahead:
            return Ordering.CONCURRENT
    if a_ahead:
        return Ordering.AFTER
    if b_ahead:
        return Ordering.BEFORE
    return Ordering.EQUAL


def merge(a: Mapping[str, int], b: Mapping[str, int]) -> VersionVector:
    """The least vector that dominates both: the pointwise maximum, zero entries dropped."""
    merged: VersionVector = {}
    for replica in sorted(a.keys() | b.keys()):
        counter = max(a.get(replica, 0), b.get(replica, 0))
        if counter > 0:
            merged[replica] = counter
    return merged


def increment(vv: Mapping[str, int], replica: str) -> VersionVector:
    """A copy of ``vv`` with ``replica``'s counter one higher: the version after its write."""
    if not isinstance(replica, str) or not replica:
        raise ValueError("replica id must be a non-empty string")
    bumped = {r: c for r, c in vv.items() if c > 0}
    bumped[replica] = bumped.get(replica, 0) + 1
    return bumped


def dominates_or_equal(a: Mapping[str, int], b: Mapping[str, int]) -> bool:
    """True when ``a`` has seen every write ``b`` has (``a >= b`` pointwise)."""
    return all(a.get(replica, 0) >= counter for replica, counter in b.items())


def covers(vv: Mapping[str, int], dot: tuple[str, int]) -> bool:
    """True when the write identified by ``dot`` (replica, counter) is included in ``vv``."""
    replica, counter = dot
    return vv.get(replica, 0) >= counter


def _describe(replica: str) -> str:
    # Input is untrusted: never echo an arbitrarily long id back into an error message.
    if len(replica) > MAX_REPLICA_ID_LENGTH:
        replica = replica[:MAX_REPLICA_ID_LENGTH] + "..."
    return repr(replica)


def _check_entry(replica: object, counter: object) -> None:
    if not isinstance(replica, str):
        raise ValueError(f"replica ids must be strings, got {type(replica).__name__}")
    if not replica:
        raise ValueError("replica ids must not be empty")
    # bool is an int subclass, but `true` is not a counter.
    if isinstance(counter, bool) or not isinstance(counter, int):
        raise ValueError(
            f"counter of replica {_describe(replica)} must be an integer, "
            f"got {type(counter).__name__}"
        )
    if counter < 0:
        raise ValueError(
            f"counter of replica {_describe(replica)} must not be negative, got {counter}"
        )


def normalize(vv: Mapping[str, int]) -> VersionVector:
    """A checked copy of ``vv`` with zero entries dropped.

    Raises ValueError on an empty or non-string replica id and on a counter that is not a
    non-negative integer.
    """
    normalized: VersionVector = {}
    for replica, counter in vv.items():
        _check_entry(replica, counter)
        if counter > 0:
            normalized[replica] = counter
    return normalized


def parse(value: object) -> VersionVector:
    """A version vector from untrusted JSON, normalized.

    Accepts an object of at most 1000 entries mapping non-empty replica ids (at most 64
    characters) to integer counters ``>= 0``; raises ValueError with a message fit for the
    client otherwise.
    """
    if not isinstance(value, Mapping):
        raise ValueError(
            "a version vector must be a JSON object {replicaId: counter}, "
            f"got {type(value).__name__}"
        )
    if len(value) > MAX_ENTRIES:
        raise ValueError(f"a version vector has at most {MAX_ENTRIES} entries, got {len(value)}")
    for replica, counter in value.items():
        _check_entry(replica, counter)
        if len(replica) > MAX_REPLICA_ID_LENGTH:
            raise ValueError(
                f"replica id {_describe(replica)} is longer than {MAX_REPLICA_ID_LENGTH} characters"
            )
        if counter > MAX_COUNTER:
            raise ValueError(
                f"counter of replica {_describe(replica)} is larger than {MAX_COUNTER}"
            )
    return normalize(value)
