"""Hypothesis strategies for the sync core.

Alphabets are tiny on purpose: with four replicas, four fields and a handful of values,
random vectors are often comparable and random edits often collide, so the interesting
cases (equal bases, same-value edits, true conflicts) come up in most runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import settings
from hypothesis import strategies as st

from sync.decision import ConflictPolicy, IncomingChange, Op, ServerRecord
from sync.field_dots import Dot, changed_fields, stamp
from sync.version_vector import VersionVector, increment

REPLICAS = ("a", "b", "c", "d")
FIELDS = ("name", "email", "phone", "notes")

# Shared by every property test: fast enough for the whole folder to stay well under the
# time budget, thorough enough to find ordering and merge bugs in this small space.
PROPERTY = settings(max_examples=200, deadline=None)

replicas = st.sampled_from(REPLICAS)
counters = st.integers(min_value=1, max_value=6)
version_vectors = st.dictionaries(replicas, counters, max_size=len(REPLICAS))
dots = st.tuples(replicas, counters)
field_dots = st.dictionaries(st.sampled_from(FIELDS), dots)
values = st.one_of(st.none(), st.integers(0, 2), st.sampled_from(["x", "y"]))
patches = st.dictionaries(st.sampled_from(FIELDS), values)
full_records = st.fixed_dictionaries(dict.fromkeys(FIELDS, values))
policies = st.sampled_from(ConflictPolicy)


@dataclass(frozen=True)
class History:
    """A record built by replaying writes as the write path does.

    ``versions`` holds every version a client could have seen, oldest first, starting with
    ``{}`` (before the create); ``snapshots`` the values at each of them.
    """

    record: ServerRecord
    versions: tuple[VersionVector, ...]
    snapshots: tuple[dict[str, object], ...]


@st.composite
def histories(draw: st.DrawFn) -> History:
    """A create followed by up to five edits from random replicas, maybe a delete."""
    current: dict[str, object] = {}
    version: VersionVector = {}
    record_dots: dict[str, Dot] = {}
    versions: list[VersionVector] = [{}]
    snapshots: list[dict[str, object]] = [{}]
    writes = [draw(full_records), *draw(st.lists(patches, max_size=5))]
    for patch in writes:
        changed = changed_fields(current, patch, FIELDS)
        # The write path records nothing for a write that changes nothing.
        if not changed:
            continue
        writer = draw(replicas)
        version = increment(version, writer)
        record_dots = stamp(record_dots, changed, (writer, version[writer]))
        current = {**current, **patch}
        versions.append(version)
        snapshots.append(current)
    deleted = draw(st.integers(0, 4)) == 0
    return History(
        ServerRecord(values=current, version=version, dots=record_dots, deleted=deleted),
        tuple(versions),
        tuple(snapshots),
    )


@dataclass(frozen=True)
class Scenario:
    """A server record (or None) and a change pushed against it."""

    server: ServerRecord | None
    change: IncomingChange


@st.composite
def realistic_scenarios(draw: st.DrawFn) -> Scenario:
    """A device edit from a version the server really had, or a create."""
    if draw(st.integers(0, 5)) == 0:
        return Scenario(None, IncomingChange(Op.UPSERT, None, draw(full_records), "d"))
    history = draw(histories())
    index = draw(st.integers(0, len(history.versions) - 1))
    base: VersionVector | None = history.versions[index]
    if index == 0 and draw(st.booleans()):
        base = None
    op = draw(st.sampled_from([Op.UPSERT, Op.UPSERT, Op.UPSERT, Op.DELETE]))
    patch = draw(patches) if op is Op.UPSERT else {}
    return Scenario(history.record, IncomingChange(op, base, patch, draw(replicas)))


@st.composite
def arbitrary_scenarios(draw: st.DrawFn) -> Scenario:
    """Anything type-correct, including bases from the future and inconsistent dots."""
    server = draw(
        st.none()
        | st.builds(
            ServerRecord,
            values=full_records,
            version=version_vectors,
            dots=field_dots,
            deleted=st.booleans(),
        )
    )
    lww = draw(st.booleans())
    change = IncomingChange(
        op=draw(st.sampled_from(Op)),
        base_version=None if lww else draw(st.none() | version_vectors),
        patch=draw(patches),
        replica=draw(replicas),
        last_writer_wins=lww,
    )
    return Scenario(server, change)


scenarios = st.one_of(realistic_scenarios(), arbitrary_scenarios())
