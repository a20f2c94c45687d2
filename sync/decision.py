"""The decision for one incoming change: a device push or an online edit.

:func:`decide` is pure. It takes the server's current copy of the record (or None), the
change and the tenant's conflict policy for the entity type, and says what to write and
which outcome to report. The caller writes ``apply`` / ``delete`` through the write path
(which bumps the version and stamps field dots) and stores a ``SyncConflict`` when
``store_conflict`` says so (a ``CONFLICT`` under ``MANUAL`` for a device the server resolves
for).

**Who resolves.** Each device says who settles its conflicts (``ConflictResolver``):
``SERVER`` (the tenant's policy per type, as below; ``MANUAL`` stores a conflict for a
person) or ``CLIENT`` (the device's own code). For a ``CLIENT`` device no policy is applied:
every conflict is decided as under ``MANUAL`` (``CONFLICT``, the fields not in conflict
written, both values of the others reported) and none is stored; the device pushes its
decision against the version it gets back, which covers the server's field dots.

Rules, checked in this order (``base`` is ``change.base_version``; from rule 5 on, for a
device (``sees_own_writes``), it also covers the device's own writes to the record,
:func:`seen_base`: a device has seen what it wrote itself, even a write whose push response
it lost; online editors share one replica and get no such allowance):

1. **Unknown record.** No server copy and a non-empty base: the record never existed here
   or its tombstone was compacted -> ``DELETED``, nothing written. A ``DELETE`` of a record
   the server never had is also ``DELETED`` (nothing left to delete).
2. **Create.** No server copy, ``UPSERT``: the patch is validated on its own ->
   ``APPLIED`` with ``apply = patch``.
3. **Base from the future.** ``base`` not dominated-or-equal by the server version (the
   client claims writes the server never had, e.g. a reused replica id) ->
   ``VALIDATION_FAILED`` with an error on ``baseVersion``, nothing written.
4. **Tombstone.** The server copy is deleted: any change -> ``DELETED``, nothing written;
   the device drops its copy.
5. **Delete.** ``base`` is None, equals the server version, or the server changed no field
   since it -> ``APPLIED`` with ``delete = True``. Otherwise the fields the server changed
   are conflicts (client value None, meaning "deleted"): ``MANUAL`` -> ``CONFLICT``, nothing
   written; ``SERVER_WINS`` -> ``CONFLICT`` resolved for the server, nothing written (the
   record lives on and reaches the device on its next pull); ``CLIENT_WINS`` -> ``APPLIED``
   with ``delete = True`` and the overridden fields reported in ``conflicts``.
6. **Last-writer-wins edit** (online edit without a base): ``APPLIED`` with ``apply = patch``.
7. **Up to date.** ``base`` equals the server version -> ``APPLIED`` with ``apply = patch``.
8. **Server moved on.** A field conflicts when it is in the patch, the server changed it
   since ``base`` (its dot is not covered by ``base``) and the two values differ; both
   sides writing the same value is agreement, not a conflict. A device change without a
   base on an existing record (a create retried after a lost response) counts as base
   ``{}``: it has seen none of the server's writes. No conflicts -> ``MERGED`` with
   ``apply = patch``. With conflicts:

   - ``MANUAL`` -> ``CONFLICT``, ``apply`` = the patch minus the conflicting fields (the
     fields nobody else touched are written now; only the conflicting ones wait for the
     user's decision), ``conflicts`` holds both values of every conflicting field;
   - ``SERVER_WINS`` -> ``MERGED``, ``apply`` = the patch minus the conflicting fields;
   - ``CLIENT_WINS`` -> ``MERGED``, ``apply`` = the whole patch;

   and under both of the latter ``conflicts`` reports the fields the policy decided.

**Validation.** Before ``APPLIED`` or ``MERGED`` with something to write, ``validate`` runs
on the merged view ``{**server.values, **apply}`` (the patch alone for a create); any error
-> ``VALIDATION_FAILED`` with those ``field_errors`` and nothing written. A field made
required after the device took its edit fails here, and the device fixes and pushes again.

Invariants: a ``CONFLICT`` never writes a conflicting field and never deletes; ``apply`` only
holds fields of the patch with the patch's values; ``FORBIDDEN`` and ``NOT_TRIED`` are
never produced here (permissions are checked before; a push leaves changes untried) but
belong to the outcome set callers report; ``store_conflict`` only on a ``CONFLICT`` under
``MANUAL`` for the ``SERVER`` resolver.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from sync.field_dots import Dot, changed_since
from sync.version_vector import Ordering, compare, dominates_or_equal

Validator = Callable[[Mapping[str, object]], Mapping[str, str]]


class Outcome(enum.Enum):
    """What happened to one change, as reported to the client."""

    APPLIED = "APPLIED"
    MERGED = "MERGED"
    CONFLICT = "CONFLICT"
    DELETED = "DELETED"
    VALIDATION_FAILED = "VALIDATION_FAILED"
    FORBIDDEN = "FORBIDDEN"
    # Never decided here, like FORBIDDEN: a push stops trying changes after too many
    # database refusals, and those left over are neither accepted nor refused (no receipt).
    NOT_TRIED = "NOT_TRIED"


class ConflictResolver(enum.Enum):
    """Who settles a field changed on both sides, per device."""

    SERVER = "SERVER"
    CLIENT = "CLIENT"


class ConflictPolicy(enum.Enum):
    """How a tenant settles a field changed on both sides, per entity type."""

    SERVER_WINS = "SERVER_WINS"
    CLIENT_WINS = "CLIENT_WINS"
    MANUAL = "MANUAL"


class Op(enum.Enum):
    """The kind of change."""

    UPSERT = "UPSERT"
    DELETE = "DELETE"


@dataclass(frozen=True)
class ServerRecord:
    """The server's current copy of a record (a tombstone when ``deleted``)."""

    values: Mapping[str, object]
    version: Mapping[str, int]
    dots: Mapping[str, Dot]
    deleted: bool


@dataclass(frozen=True)
class IncomingChange:
    """One change as the client sent it.

    ``base_version`` is the version the client edited from; None for a create, or for an
    online edit without a base (then ``last_writer_wins`` is True). ``patch`` holds only
    the fields the client changed.
    """

    op: Op
    base_version: Mapping[str, int] | None
    patch: Mapping[str, object]
    replica: str
    last_writer_wins: bool = False
    # True for a device, whose replica is its own and whose writes it has always seen;
    # False for online edits, which share the server's replica among every editor.
    sees_own_writes: bool = False


@dataclass(frozen=True)
class FieldConflict:
    """A field changed on both sides; ``client_value`` None in a delete means "deleted"."""

    field: str
    server_value: object
    client_value: object


@dataclass(frozen=True)
class Decision:
    """What to write for one change and what to report."""

    outcome: Outcome
    apply: Mapping[str, object] = field(default_factory=dict)
    delete: bool = False
    conflicts: tuple[FieldConflict, ...] = ()
    field_errors: Mapping[str, str] = field(default_factory=dict)
    message: str = ""
    # A person settles this conflict later (resolveConflict): the caller stores it.
    store_conflict: bool = False


def _is_empty(vv: Mapping[str, int] | None) -> bool:
    return vv is None or all(counter <= 0 for counter in vv.values())


def _validated(
    outcome: Outcome,
    current: Mapping[str, object],
    apply: Mapping[str, object],
    validate: Validator | None,
    *,
    conflicts: tuple[FieldConflict, ...] = (),
    message: str,
    creates: bool = False,
) -> Decision:
    # A change that writes nothing cannot make the record invalid, and rejecting it would
    # leave the device stuck on a problem its change did not cause. A create always writes.
    if validate is not None and (apply or creates):
        errors = dict(validate({**current, **apply}))
        if errors:
            return Decision(
                Outcome.VALIDATION_FAILED,
                field_errors=errors,
                message="the record would not be valid after this change; fix and retry",
            )
    return Decision(outcome, apply=dict(apply), conflicts=conflicts, message=message)


def _decide_delete(
    server: ServerRecord, base: Mapping[str, int] | None, policy: ConflictPolicy
) -> Decision:
    if base is None or compare(base, server.version) is Ordering.EQUAL:
        return Decision(Outcome.APPLIED, delete=True, message="deleted")
    changed = changed_since(server.dots, base)
    if not changed:
        return Decision(Outcome.APPLIED, delete=True, message="deleted")
    conflicts = tuple(
        FieldConflict(name, server.values.get(name), None) for name in sorted(changed)
    )
    if policy is ConflictPolicy.CLIENT_WINS:
        return Decision(
            Outcome.APPLIED,
            delete=True,
            conflicts=conflicts,
            message="deleted: the server's later edits were discarded by the CLIENT_WINS policy",
        )
    if policy is ConflictPolicy.SERVER_WINS:
        return Decision(
            Outcome.CONFLICT,
            conflicts=conflicts,
            message="not deleted: the server edited the record since; kept by the SERVER_WINS "
            "policy",
        )
    return Decision(
        Outcome.CONFLICT,
        conflicts=conflicts,
        message="the server edited the record since the device's base version; "
        "resolve the conflict to delete it or keep it",
    )


def _decide_moved_on(
    server: ServerRecord,
    change: IncomingChange,
    base: Mapping[str, int],
    policy: ConflictPolicy,
    validate: Validator | None,
) -> Decision:
    server_changed = changed_since(server.dots, base)
    conflicts = tuple(
        FieldConflict(name, server.values.get(name), change.patch[name])
        for name in sorted(server_changed & change.patch.keys())
        if server.values.get(name) != change.patch[name]
    )
    if not conflicts:
        return _validated(
            Outcome.MERGED,
            server.values,
            change.patch,
            validate,
            message="merged with the server's changes to other fields",
        )
    if policy is ConflictPolicy.MANUAL:
        held = {c.field for c in conflicts}
        # Only the fields changed on both sides wait for a decision: the rest of the edit is
        # written now, so nothing typed on a phone hangs on a question it is not part of.
        rest = {name: value for name, value in change.patch.items() if name not in held}
        return _validated(
            Outcome.CONFLICT,
            server.values,
            rest,
            validate,
            conflicts=conflicts,
            message=f"{len(conflicts)} field(s) changed on both sides wait for a decision;"
            " the others were applied",
        )
    if policy is ConflictPolicy.SERVER_WINS:
        lost = {c.field for c in conflicts}
        apply = {name: value for name, value in change.patch.items() if name not in lost}
        message = "merged; conflicting fields kept the server's values (SERVER_WINS)"
    else:
        apply = dict(change.patch)
        message = "merged; conflicting fields took the device's values (CLIENT_WINS)"
    return _validated(
        Outcome.MERGED, server.values, apply, validate, conflicts=conflicts, message=message
    )


def seen_base(base: Mapping[str, int], server: ServerRecord, replica: str) -> dict[str, int]:
    """``base`` plus the change's own replica's writes to this record.

    A device has seen every write it made, even one whose push response it lost (it then
    edits again from an older base): its own dots never count as "the server moved on".
    """
    seen = dict(base)
    own = server.version.get(replica, 0)
    if own > seen.get(replica, 0):
        seen[replica] = own
    return seen


def decide(
    server: ServerRecord | None,
    change: IncomingChange,
    policy: ConflictPolicy,
    validate: Validator | None = None,
    resolver: ConflictResolver = ConflictResolver.SERVER,
) -> Decision:
    """Decide what one incoming change writes and which outcome it reports.

    ``validate`` takes a record's values and returns ``{field: message}`` (empty when
    valid). The rules are in this module's docstring; ``resolver`` is the device's (online
    edits are the server's).
    """
    if resolver is ConflictResolver.CLIENT:
        # The device decides: no tenant policy settles anything for it, and nothing waits
        # on the server for a person.
        decision = _decide(server, change, ConflictPolicy.MANUAL, validate)
        if decision.outcome is Outcome.CONFLICT:
            return replace(
                decision,
                message=f"{len(decision.conflicts)} field(s) changed on both sides: push your"
                " decision for them against the returned version; the others were applied"
                if change.op is Op.UPSERT
                else "the server edited the record since the device's base version: push the"
                " delete again against the returned version to delete it anyway",
            )
        return decision
    decision = _decide(server, change, policy, validate)
    if decision.outcome is Outcome.CONFLICT and policy is ConflictPolicy.MANUAL:
        return replace(decision, store_conflict=True)
    return decision


def _decide(
    server: ServerRecord | None,
    change: IncomingChange,
    policy: ConflictPolicy,
    validate: Validator | None,
) -> Decision:
    base = change.base_version
    if server is None:
        if not _is_empty(base):
            return Decision(
                Outcome.DELETED,
                message="the record does not exist on the server (deleted and compacted, "
                "or never synced); drop the local copy",
            )
        if change.op is Op.DELETE:
            return Decision(Outcome.DELETED, message="the record does not exist on the server")
        return _validated(
            Outcome.APPLIED, {}, change.patch, validate, message="created", creates=True
        )

    if base is not None and not dominates_or_equal(server.version, base):
        return Decision(
            Outcome.VALIDATION_FAILED,
            field_errors={
                "baseVersion": "the base version includes writes this server never had; "
                "pull and edit again"
            },
            message="invalid base version",
        )
    if server.deleted:
        return Decision(Outcome.DELETED, message="the record was deleted; drop the local copy")
    if change.last_writer_wins:
        base = None
    elif change.sees_own_writes and (base is not None or change.op is Op.UPSERT):
        # A device's UPSERT without a base on an existing record (a create retried after a
        # lost response) has seen none of the server's writes but its own.
        base = seen_base(base or {}, server, change.replica)
    elif base is None and change.op is Op.UPSERT:
        base = {}
    if change.op is Op.DELETE:
        return _decide_delete(server, base, policy)
    up_to_date = base is not None and compare(base, server.version) is Ordering.EQUAL
    if base is None or up_to_date:
        return _validated(Outcome.APPLIED, server.values, change.patch, validate, message="updated")
    return _decide_moved_on(server, change, base, policy, validate)
