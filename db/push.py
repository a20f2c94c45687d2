"""Push: apply a device's batch of offline changes, one outcome each.

Changes are decided one after another in memory (each sees the ones before it) and only
the accepted ones are written, in chunks of rows, so one bad change never blocks or
half-applies another and the batch costs a few statements per chunk, not per change. The
chunks are written in a task of their own while the next ones are decided
(``_ChunkWriter``): the decisions are Python, the writes PostgreSQL, and the two overlap.
A change the database itself refuses (a unique index, a value it cannot store) is found by
halving the set in savepoints and fails alone (``_apply_isolated``).
``clientMutationId`` makes a push idempotent: a replay returns the first outcome from
``push_receipts`` and writes nothing; a reused id with a different payload is refused.
The decision itself (applied, merged, conflict, deleted, validation failed) is the pure
``sync.decision.decide``, under the device's conflict resolver (``SERVER``: the tenant's
policy; ``CLIENT``: every conflict back to the device, nothing stored); writes go through
the one write path with the device's replica.

Every outcome carries the record as it stands once the push is written (``record``, read
as a pull reads it: ``db.sync_records``): the new record of an accepted change, the
tombstone of a DELETED one, the current record for a refusal, a replay or a change not
tried; a record the device may not see comes back as an eviction (``op: EVICT``). It is not
kept in the receipt: a replay answers with the record as it is now.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, TypeVar
from uuid import UUID, uuid4

import asyncpg
import orjson
import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from db import raw
from db.commands.records import field_definitions, merge_keyed_fields, server_record
from db.entities import CUSTOMER, ENTITIES, EntitySpec, EntityType
from db.errors import EMAIL_TAKEN, sqlstate
from db.pull import PulledChange
from db.queries import devices as device_queries
from db.queries import records
from db.queries.orgs import conflict_policies
from db.sync_records import changes_from_rows, current_rows
from db.write_path import RecordWrite, Row, lock_rows, next_row, persist_rows
from sync.canonical import canonical_json
from sync.decision import ConflictResolver, IncomingChange, Op, Outcome, decide
from sync.record_shape import link_errors
from sync.validation import shape_errors, validate_record

log = structlog.get_logger("fieldsync.push")

# A device's counter goes up by one per change; a change may skip ahead (edits coalesced or
# dropped from the outbox) but not by more than this. Counters are GraphQL Ints: one push of
# 2,147,483,647 accepted would leave the device no counter above it to push with, ever.
MAX_COUNTER_STEP = 2**20
# SQLSTATE classes of errors a change's own values cause: data exception (22), integrity
# constraint violation (23), program limit exceeded (54: an index row too large).
_REFUSABLE_SQLSTATE_CLASSES = ("22", "23", "54")
# Changes of one push the database may refuse before the rest of it is left untried.
MAX_DATABASE_REFUSALS = 16
# Outcomes of an accepted change: it closes the conflict it names (resolvesConflictId).
ACCEPTED = frozenset({Outcome.APPLIED.value, Outcome.MERGED.value, Outcome.CONFLICT.value})


@dataclass(frozen=True)
class PushChange:
    """One change of a push, in table terms (patch keys are column names)."""

    client_mutation_id: str
    entity: EntityType
    record_id: UUID
    op: Op
    base_version: Mapping[str, int] | None
    patch: Mapping[str, Any]
    links: Mapping[str, UUID]
    counter: int
    # resolvesConflictId as the device sent it (part of the change's identity), and the
    # conflict it names; None when it names none (not given, or not an id at all).
    resolves_conflict_id: str | None = None
    resolves_conflict: UUID | None = None

    @cached_property
    def record_text(self) -> str:
        """``record_id`` as text (a push answers with it and digests it)."""
        return str(self.record_id)

    @cached_property
    def fingerprint(self) -> str:
        """A digest of the change, to tell a replay from a reused id (computed once: a
        push takes it while its lock statement runs, and stores it with the receipt).

        The counter is not part of it: it numbers the attempt, not the change, and a
        client's retry loop may number a resend anew. The same change under the same
        clientMutationId is a replay whatever its counter.
        """
        payload: list[object] = [
            self.entity.value,
            self.record_text,
            self.op.value,
            self.base_version,
            self.patch,
            {k: str(v) for k, v in self.links.items()},
        ]
        if self.resolves_conflict_id is not None:
            # Only when given: receipts stored before the field existed keep their digest.
            payload.append(self.resolves_conflict_id)
        try:
            body = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS, default=str)
        except orjson.JSONEncodeError:
            # An integer beyond 64 bits (a JSON literal written inline) or a value nested
            # past 255 levels: orjson refuses them. The change is refused later, but its
            # receipt needs a digest that a replay of the same payload reproduces; the
            # standard library's text, written without recursion (any depth a JSON parser
            # accepts would otherwise be a RecursionError, an internal error).
            body = canonical_json(payload).encode()
        return hashlib.sha256(body).hexdigest()


@dataclass
class ChangeResult:
    """The outcome of one change, as stored for replays and returned to the client."""

    client_mutation_id: str
    entity: str
    record_id: str
    outcome: str
    version: dict[str, int] | None = None
    conflict_id: str | None = None
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    field_errors: dict[str, str] = field(default_factory=dict)
    message: str = ""
    replayed: bool = False
    # The record as it stands after the push (see the module docstring); never stored.
    record: PulledChange | None = None


# What a receipt keeps of a result: everything but the record (a replay reads it anew).
_RECEIPT_FIELDS = tuple(
    f for f in ChangeResult.__dataclass_fields__ if f not in ("record", "replayed")
)


def _receipt(result: ChangeResult) -> str:
    return orjson.dumps({name: getattr(result, name) for name in _RECEIPT_FIELDS}).decode()


@dataclass(frozen=True)
class PushResult:
    """Every change's outcome, in input order."""

    results: list[ChangeResult]
    reregister_required: bool
    # What the caller's ``answer`` made of the results (see :func:`push`).
    answered: object = None


def _jsonable(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value, default=str))


async def push(
    conn: AsyncConnection,
    *,
    org_id: UUID,
    device: Row,
    user_can_write: bool,
    changes: Sequence[PushChange],
    max_length: int,
    with_records: bool = True,
    answer: Callable[[Sequence[ChangeResult]], object] | None = None,
) -> PushResult:
    """Apply ``changes`` from ``device`` in order, one outcome each, as one set of writes.

    Replays and refusals are settled first; the rest is decided in memory against rows
    locked in one query per entity type (each decision sees the ones before it), then
    written with one statement per table. Invalid changes write nothing, so no savepoint
    per change is needed. If the database still refuses the set (a unique index, a value
    it cannot store, a concurrent writer that took an email after the check), the set is
    split until the change at fault stands alone: it gets ``VALIDATION_FAILED`` and every
    other change is decided and written as if it had been pushed without it.

    ``with_records``: give each result its record (the caller's client selected it).
    ``answer``: what the caller makes of the final results (its response, encoded), made
    while the receipts are stored instead of after; returned as ``answered``.
    """
    device_id = device["id"]
    receipts = await _receipts(conn, org_id, device_id, [c.client_mutation_id for c in changes])
    max_counter = int(device["max_counter"])
    # A counter at or below the highest pushed is fine when no change took it yet (batches
    # sent in parallel arrive in any order); one taken by another change means a second
    # install is pushing under this replica id (an app restored from a backup).
    taken = await _taken_counters(
        conn,
        org_id,
        device_id,
        [
            c.counter
            for c in changes
            if 0 < c.counter <= max_counter and c.client_mutation_id not in receipts
        ],
    )
    reregister = False
    results: list[ChangeResult | None] = [None] * len(changes)
    fresh: list[int] = []
    for index, change in enumerate(changes):
        stored = receipts.get(change.client_mutation_id)
        if stored is not None:
            if stored[0] == change.fingerprint:
                results[index] = ChangeResult(**{**stored[1], "replayed": True})
            else:
                results[index] = _refused(
                    change,
                    Outcome.VALIDATION_FAILED,
                    {"clientMutationId": "was already used for a different change"},
                )
            continue
        # Counter refusals store no receipt (as before): the device may send the same
        # clientMutationId again with a counter that fits.
        if change.counter < 1:
            results[index] = _refused(
                change, Outcome.VALIDATION_FAILED, {"counter": "must be 1 or more"}
            )
            continue
        if change.counter in taken:
            reregister = True
            results[index] = _refused(
                change,
                Outcome.VALIDATION_FAILED,
                {
                    "counter": f"{change.counter} was already used by another change: this"
                    " device's state is older than what it already pushed; register it again"
                },
            )
            continue
        if change.counter - max_counter > MAX_COUNTER_STEP:
            # Not taken as the device's counter: the device stays free to push the next one.
            results[index] = _refused(
                change,
                Outcome.VALIDATION_FAILED,
                {
                    "counter": f"jumps from {max_counter} to {change.counter}: a change's"
                    f" counter may be at most {MAX_COUNTER_STEP} above the last one pushed"
                },
            )
            continue
        fresh.append(index)
        taken.add(change.counter)
        max_counter = max(max_counter, change.counter)
    batch = [changes[i] for i in fresh]
    decided: list[ChangeResult | None]
    if not user_can_write:
        decided = [
            _refused(change, Outcome.FORBIDDEN, {}, "your role may not change records")
            for change in batch
        ]
    else:
        decided = await _apply_isolated(
            conn,
            org_id=org_id,
            device=device,
            changes=batch,
            max_length=max_length,
            isolation=_Isolation(),
            named=await _named_conflicts(
                conn, org_id, {c.resolves_conflict for c in batch if c.resolves_conflict}
            ),
        )
    outcomes = iter(decided)
    answered: list[int] = []
    for index in fresh:
        result = next(outcomes)
        if result is None:
            break
        results[index] = result
        answered.append(index)
    if len(answered) < len(fresh):
        # Changes left untried (see _apply_isolated) are a suffix of the push: no receipt
        # and no counter, so the device pushes them again as they are.
        max_counter = max([int(device["max_counter"]), *(changes[i].counter for i in answered)])
        for index in fresh[len(answered) :]:
            # Neither accepted nor refused: a VALIDATION_FAILED here would read as final.
            results[index] = _refused(
                changes[index],
                Outcome.NOT_TRIED,
                {},
                f"not tried: more than {MAX_DATABASE_REFUSALS} changes of this push were"
                " refused by the database; push this change again as it is",
            )
    answers = [(changes[i], result) for i in answered if (result := results[i]) is not None]
    final = [r for r in results if r is not None]
    made = await _finish(
        conn, org_id, device, answers, max_counter, changes, final, with_records, answer
    )
    return PushResult(results=final, reregister_required=reregister, answered=made)


async def _finish(
    conn: AsyncConnection,
    org_id: UUID,
    device: Row,
    answers: Sequence[tuple[PushChange, ChangeResult]],
    max_counter: int,
    changes: Sequence[PushChange],
    final: Sequence[ChangeResult],
    with_records: bool,
    answer: Callable[[Sequence[ChangeResult]], object] | None,
) -> object:
    """Store the receipts (:func:`_store_answers`) and, when wanted, give every result its
    record (:func:`_attach_records`); then ``answer`` the results.

    Each statement runs while this process does the Python that does not need it: the
    receipts' JSON while the records are read, the records and the answer while the
    receipts are stored.
    """
    current: list[asyncpg.Record] = []
    if with_records:
        keys = {(c.entity, c.record_id) for c in changes}
        current, receipts = await _alongside(
            current_rows(conn, org_id, device, keys), lambda: _receipt_rows(answers)
        )
    else:
        receipts = _receipt_rows(answers)

    def records_and_answer() -> object:
        if with_records:
            _attach_records(list(zip(changes, final, strict=True)), current)
        return None if answer is None else answer(final)

    _, answered = await _alongside(
        _store_answers(conn, org_id, device, answers, receipts, max_counter), records_and_answer
    )
    return answered


T = TypeVar("T")
U = TypeVar("U")


async def _alongside(statement: Awaitable[T], work: Callable[[], U]) -> tuple[T, U]:
    """``statement``'s result and ``work()``'s, ``work`` (Python that uses no connection)
    done while the statement runs on the database."""
    task = asyncio.ensure_future(statement)
    # Lets the task send its statement before ``work`` holds the event loop.
    await asyncio.sleep(0)
    try:
        done = work()
    except BaseException:
        # The connection is the statement's until it ends; the caller's error is reported.
        await asyncio.wait([task])
        if not task.cancelled():
            task.exception()
        raise
    return await task, done


def _receipt_rows(
    answered: Sequence[tuple[PushChange, ChangeResult]],
) -> tuple[list[str], list[str], list[int], list[str]]:
    """The receipts of the answered changes as the arrays :data:`_STORE_RECEIPTS` takes:
    clientMutationIds, fingerprints, counters, outcomes."""
    return (
        [change.client_mutation_id for change, _ in answered],
        [change.fingerprint for change, _ in answered],
        [change.counter for change, _ in answered],
        [_receipt(result) for _, result in answered],
    )


async def _store_answers(
    conn: AsyncConnection,
    org_id: UUID,
    device: Row,
    answered: Sequence[tuple[PushChange, ChangeResult]],
    receipts: tuple[list[str], list[str], list[int], list[str]],
    max_counter: int,
) -> None:
    """Receipts of the answered changes (if any) and the device's counter and push time,
    in one statement; then the conflicts the accepted ones settled."""
    await raw.execute(
        conn, _STORE_RECEIPTS, org_id, device["id"], *receipts, max_counter, datetime.now(UTC)
    )
    settled = {
        change.resolves_conflict
        for change, result in answered
        if change.resolves_conflict is not None and result.outcome in ACCEPTED
    }
    if settled:
        await _close_conflicts(conn, org_id, device["user_id"], settled)


def _attach_records(
    answers: Sequence[tuple[PushChange, ChangeResult]], current: Sequence[asyncpg.Record]
) -> None:
    """Give each result the record as it now stands (see the module docstring).

    ``current``: the rows of every record of the push, read after all its writes, so a
    record two changes touched shows its final state on both: the one a pull would send
    now. A record the device may not see (its customer archived, or not in its selection:
    it was unselected while the edit waited in the outbox) comes back as an eviction, so a
    client that applies every returned record as it applies a pull drops its copy instead
    of keeping one that no pull will ever update again. A tombstone is sent as it is: gone
    for everyone.
    """
    found = changes_from_rows(current)
    for change, result in answers:
        result.record = found.get((change.entity, change.record_id))


@dataclass
class _Isolation:
    """What a push may still spend on finding changes the database refuses."""

    refusals_left: int = MAX_DATABASE_REFUSALS
    exhausted: bool = False


async def _apply_isolated(
    conn: AsyncConnection,
    *,
    org_id: UUID,
    device: Row,
    changes: Sequence[PushChange],
    max_length: int,
    isolation: _Isolation,
    named: Mapping[UUID, Row],
) -> list[ChangeResult | None]:
    """:func:`_apply_batch` in a savepoint; a refused set is halved until the fault is found.

    The halves run in order, each in its own savepoint, so each decision still sees the
    writes of the changes before it. A few changes at fault cost a few extra batches each
    (two per halving), not a savepoint per change. Past ``MAX_DATABASE_REFUSALS`` the
    changes not yet written are not tried (None): each refusal costs batch work while
    the tenant's seq row may be locked, and a push of a thousand such changes would hold
    the tenant's writers for seconds.
    """
    if isolation.exhausted:
        return [None] * len(changes)
    try:
        async with conn.begin_nested():
            return list(
                await _apply_batch(
                    conn,
                    org_id=org_id,
                    device=device,
                    changes=changes,
                    max_length=max_length,
                    named=named,
                )
            )
    except (DBAPIError, asyncpg.InterfaceError) as exc:
        errors = refused_by_database(exc)
        if errors is None or not changes:
            raise
        if isolation.refusals_left == 0:
            isolation.exhausted = True
            return [None] * len(changes)
        if len(changes) == 1:
            isolation.refusals_left -= 1
            # Logged without the values (the error may quote them): which change, which rule.
            log.warning(
                "push change refused by the database",
                entity=changes[0].entity.value,
                record_id=str(changes[0].record_id),
                sqlstate=sqlstate(exc) or type(exc).__name__,
            )
            return [_refused(changes[0], Outcome.VALIDATION_FAILED, errors)]
    half = len(changes) // 2
    first = await _apply_isolated(
        conn,
        org_id=org_id,
        device=device,
        changes=changes[:half],
        max_length=max_length,
        isolation=isolation,
        named=named,
    )
    rest = await _apply_isolated(
        conn,
        org_id=org_id,
        device=device,
        changes=changes[half:],
        max_length=max_length,
        isolation=isolation,
        named=named,
    )
    return first + rest


def _constraint(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    for candidate in (orig, getattr(orig, "__cause__", None)):
        name = getattr(candidate, "constraint_name", None)
        if isinstance(name, str):
            return name
    return None


def refused_by_database(exc: BaseException) -> dict[str, str] | None:
    """Field errors for a database error that a change's own values caused, else None.

    None (an outage, a deadlock, a bug) means the error is not the change's fault and must
    not be reported as its outcome.
    """
    if isinstance(exc, asyncpg.InterfaceError):
        # asyncpg's DataError, raised before sending, is both: a parameter its codec could
        # not encode. Other interface errors are the server's own.
        return (
            {"patch": "holds a value the database cannot store"}
            if isinstance(exc, ValueError)
            else None
        )
    state = sqlstate(exc)
    if state is None or not state.startswith(_REFUSABLE_SQLSTATE_CLASSES):
        return None
    if _constraint(exc) == "uq_customers_org_email":
        return {"email": EMAIL_TAKEN}
    if state.startswith("23"):
        return {"patch": f"breaks a database rule (SQLSTATE {state})"}
    return {"patch": f"holds a value the database cannot store (SQLSTATE {state})"}


def _refused(
    change: PushChange, outcome: Outcome, errors: Mapping[str, str], message: str = ""
) -> ChangeResult:
    return ChangeResult(
        client_mutation_id=change.client_mutation_id,
        entity=change.entity.value,
        record_id=change.record_text,
        outcome=outcome.value,
        field_errors=dict(errors),
        message=message or "; ".join(f"{k} {v}" for k, v in errors.items()),
    )


Key = tuple[EntityType, UUID]


async def _apply_batch(  # noqa: PLR0915 - one loop decides a change in the order it reads
    conn: AsyncConnection,
    *,
    org_id: UUID,
    device: Row,
    changes: Sequence[PushChange],
    max_length: int,
    named: Mapping[UUID, Row],
) -> list[ChangeResult]:
    replica = device["replica_id"]
    resolver = ConflictResolver(device["conflict_resolver"])
    policies = await conflict_policies(conn, org_id)
    definitions = {t: await field_definitions(conn, org_id, t) for t in {c.entity for c in changes}}
    # The fingerprints (stored with the receipts) are taken while the rows are locked.
    original, _ = await _alongside(
        _lock_all(conn, org_id, changes), lambda: [c.fingerprint for c in changes]
    )
    rows = dict(original)
    facility_ids = [c.links["facility_id"] for c in changes if "facility_id" in c.links]
    if facility_ids:
        facilities = await records.by_ids(conn, ENTITIES[EntityType.FACILITY], org_id, facility_ids)
        for facility in facilities:
            rows.setdefault((EntityType.FACILITY, facility["id"]), facility)
    wanted = {r["customer_id"] for r in rows.values()} | {
        c.links["customer_id"] for c in changes if "customer_id" in c.links
    }
    customers_now = {
        # Customers this push locked are read from their rows, the others are looked up.
        **{
            rid: (row["archived"], row["deleted"])
            for (t, rid), row in original.items()
            if t is EntityType.CUSTOMER and rid in wanted
        },
    }
    customers_now.update(await _customer_states(conn, org_id, wanted - customers_now.keys()))
    emails, email_keys = await _email_owners(conn, org_id, changes, original)
    # Decided in order; from _FIRST_WRITE_AT of the push on, what is decided is queued in
    # chunks for a writer task: the decisions are Python and the writes PostgreSQL, so the
    # two overlap on two cores instead of taking turns (see _ChunkWriter).
    chunk = _Chunk()
    writer = _ChunkWriter(conn, org_id, device, original)
    results: list[ChangeResult] = []
    now = datetime.now(UTC)
    first_write = max(1, int(len(changes) * _FIRST_WRITE_AT))
    try:
        for index, change in enumerate(changes):
            if index >= first_write and index % _TURN_EVERY == 0:
                size = chunk.size()
                # Chunks shrink toward the end (the last one's writes overlap nothing), not
                # below a size worth its statements.
                if size >= _CHUNK_CHANGES or _MIN_CHUNK <= size >= len(changes) - index:
                    await writer.submit(chunk, now)
                    chunk = _Chunk()
                else:
                    await writer.turn()
            spec = ENTITIES[change.entity]
            key = (change.entity, change.record_id)
            row = rows.get(key)
            # A bad reference to a conflict refuses the change before anything is decided:
            # what the device meant to settle is unknown, so nothing of it is written.
            unsettled = _conflict_errors(change, device, named)
            if unsettled:
                results.append(_refused(change, Outcome.VALIDATION_FAILED, unsettled))
                continue
            links: dict[str, UUID] = {}
            if row is None and change.op is Op.UPSERT and not change.base_version:
                found = _parents(rows, customers_now, spec, change)
                if isinstance(found, str):
                    results.append(
                        _refused(
                            change,
                            Outcome.VALIDATION_FAILED,
                            {found: "is required and must be live"},
                        )
                    )
                    continue
                links = found
            customer_id = (
                row["customer_id"]
                if row is not None
                else links.get("customer_id", change.record_id)
            )
            customer = rows.get((EntityType.CUSTOMER, customer_id))
            archived = (
                customer["archived"]
                if customer is not None
                else customers_now.get(customer_id, (False, False))[0]
            )
            if archived and not (spec is CUSTOMER and row is None):
                results.append(
                    _refused(
                        change,
                        Outcome.FORBIDDEN,
                        {},
                        "the customer is archived or not visible to you",
                    )
                )
                continue
            # A value of the wrong shape is refused before any decision: a conflict must not
            # store it for a later resolution either.
            misshapen = shape_errors(change.entity.value, change.patch)
            if misshapen:
                results.append(_refused(change, Outcome.VALIDATION_FAILED, misshapen))
                continue
            # A device sends back the parents it pulled; they must be the record's (a deleted
            # record answers DELETED below, whatever they are).
            if row is not None and not row["deleted"]:
                moved = link_errors(change.links, row, new=False)
            else:
                moved = link_errors(change.links, links, new=True)
            if moved:
                results.append(_refused(change, Outcome.VALIDATION_FAILED, moved))
                continue
            server = server_record(spec, row)
            # Fields only (the server record's values are those of the row): a new row's
            # defaults also hold bookkeeping columns (restored_seq).
            base_values: Mapping[str, Any]
            if server is not None:
                base_values = server.values
            else:
                defaults = spec.new_row_defaults()
                base_values = {f: defaults[f] for f in spec.fields}
            patch = merge_keyed_fields(change.patch, base_values)

            def validate(
                values: Mapping[str, object],
                base: Mapping[str, Any] = base_values,
                s: EntitySpec = spec,
                shaped: Mapping[str, Any] = change.patch,
                complete: bool = server is not None,
            ) -> Mapping[str, str]:
                return validate_record(
                    s.type.value,
                    # An update's values already hold every field (the server's merged
                    # with the change's: sync/decision.py); a create's only the patch.
                    values if complete else {**base, **values},
                    definitions[s.type],
                    max_length=max_length,
                    stored=base,
                    shaped=shaped,
                )

            policy = policies[change.entity]
            decision = decide(
                server,
                IncomingChange(
                    op=change.op,
                    base_version=change.base_version,
                    patch=patch,
                    replica=replica,
                    sees_own_writes=True,
                ),
                policy,
                validate,
                resolver,
            )
            result = ChangeResult(
                client_mutation_id=change.client_mutation_id,
                entity=change.entity.value,
                record_id=change.record_text,
                outcome=decision.outcome.value,
                version=dict(row["version"]) if row is not None else None,
                conflicts=[
                    _jsonable(
                        {
                            "field": c.field,
                            "serverValue": c.server_value,
                            "clientValue": c.client_value,
                        }
                    )
                    for c in decision.conflicts
                ],
                field_errors=dict(decision.field_errors),
                message=decision.message,
            )
            results.append(result)
            # A CONFLICT writes the fields not in conflict (sync/decision.py) like a MERGED.
            if decision.outcome in (Outcome.APPLIED, Outcome.MERGED, Outcome.CONFLICT) and (
                decision.apply or decision.delete
            ):
                email = decision.apply.get("email")
                if spec is CUSTOMER and isinstance(email, str):
                    owner = emails.get(_email_key(email_keys, email))
                    if owner is not None and owner != change.record_id:
                        results[-1] = _refused(
                            change, Outcome.VALIDATION_FAILED, {"email": EMAIL_TAKEN}
                        )
                        continue
                write = RecordWrite(change.record_id, decision.apply, decision.delete, links)
                new_row = next_row(
                    spec,
                    org_id,
                    row,
                    write,
                    replica,
                    now,
                    # Decoded once per row: server_record already read the stored dots.
                    current_dots=server.dots if server is not None else None,
                    # Every decision that writes values was validated with them
                    # (sync/decision.py: _validated, under the validator given above).
                    validated=True,
                )
                if new_row is not None:
                    if spec is CUSTOMER:
                        _move_email(emails, email_keys, row, new_row)
                    rows[key] = new_row
                    chunk.writes[change.entity].append((index, new_row))
                    chunk.patched[change.entity].update(write.patch)
                    result.version = dict(new_row["version"])
            if decision.store_conflict and row is not None:
                conflict_id = uuid4()
                result.conflict_id = str(conflict_id)
                chunk.conflicts.append(
                    {
                        "id": conflict_id,
                        "entity": change.entity.value,
                        "record_id": change.record_id,
                        "customer_id": row["customer_id"],
                        "op": change.op.value,
                        "base_version": dict(change.base_version or {}),
                        "server_version": row["version"],
                        "client_patch": dict(patch),
                        "fields": result.conflicts,
                    }
                )
        await writer.submit(chunk, now)
        await writer.finish()
    except BaseException:
        await writer.abandon()
        raise
    return results


# The decision loop lets the chunk being written send its next statement this often: the
# chunk's writes are a few statements in a row, each waiting for the loop to answer.
_TURN_EVERY = 16
# Rows written per chunk: small enough that the first chunk's decisions and the last one's
# writes (the parts that overlap nothing) are short, large enough that the statements per
# chunk stay few against the rows they carry.
_CHUNK_CHANGES = 128
# The smallest chunk written before the decisions end: each costs three or four
# statements, and a push of a few dozen changes is written in one.
_MIN_CHUNK = 32
# How far into a push (a share of its changes) the first chunk is written. The first write
# locks the tenant's seq row (db/write_path.py: allocate_seqs) until commit, and every
# other writer of the tenant waits behind it: writing starts as late as still lets the
# queued writes keep up with the decisions. For a push of 1,000, in-process, alternating
# (bench-style rounds): from the start, the push took 201 ms and held the row 138 ms; from
# 35% 193 / 121 ms; from 50% 194 / 116 ms.
_FIRST_WRITE_AT = 0.4


@dataclass
class _Chunk:
    """Rows and conflicts decided and not yet written, in decision order."""

    writes: dict[EntityType, list[tuple[int, Row]]] = field(
        default_factory=lambda: {t: [] for t in EntityType}
    )
    # The fields the written changes set, per type: the write path updates only those.
    patched: dict[EntityType, set[str]] = field(
        default_factory=lambda: {t: set() for t in EntityType}
    )
    conflicts: list[dict[str, Any]] = field(default_factory=list)

    def size(self) -> int:
        return sum(map(len, self.writes.values()))

    def absorb(self, later: _Chunk) -> None:
        """Take in the chunk decided after this one: written together, as one batch."""
        for entity, rows in later.writes.items():
            self.writes[entity].extend(rows)
        for entity, names in later.patched.items():
            self.patched[entity] |= names
        self.conflicts.extend(later.conflicts)


class _ChunkWriter:
    """Writes a push's chunks in order on its connection, in a task of its own.

    Chunks are queued and written while the caller decides the next ones (pure Python that
    touches no connection), so PostgreSQL's work and the decisions overlap. A database
    error stops the writing: it is raised at the next :meth:`submit` or at :meth:`finish`,
    before the caller's savepoint ends, and no later chunk is written. The caller uses the
    connection only after :meth:`finish` or :meth:`abandon`.
    """

    def __init__(
        self,
        conn: AsyncConnection,
        org_id: UUID,
        device: Row,
        original: Mapping[Key, Row],
    ):
        self._conn = conn
        self._org_id = org_id
        self._device = device
        self._original = original
        self._queued: deque[tuple[_Chunk, datetime]] = deque()
        self._task: asyncio.Task[None] | None = None

    async def submit(self, chunk: _Chunk, now: datetime) -> None:
        """Queue ``chunk`` to be written after the ones before it (an error of theirs is
        raised here)."""
        if not chunk.size() and not chunk.conflicts:
            return
        task = self._task
        if task is not None and task.done():
            self._task = None
            task.result()
        self._queued.append((chunk, now))
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        # Lets the task send its next statement before the caller's decisions go on.
        await asyncio.sleep(0)

    async def turn(self) -> None:
        """Let the chunk in flight send its next statement."""
        if self._task is not None and not self._task.done():
            await asyncio.sleep(0)

    async def finish(self) -> None:
        """Wait until every queued chunk is written; raise the error that stopped them."""
        task, self._task = self._task, None
        if task is not None:
            await task

    async def abandon(self) -> None:
        """Stop after the chunk in flight, without raising (the caller is failing already):
        the connection is then free for the savepoint's rollback."""
        self._queued.clear()
        task, self._task = self._task, None
        if task is not None:
            await asyncio.wait([task])
            if not task.cancelled():
                task.exception()  # retrieved: the caller's error is the one reported

    async def _drain(self) -> None:
        while self._queued:
            chunk, now = self._queued.popleft()
            # Chunks queued while the one before was written go out together: fewer
            # statements when the writes fall behind (toward the end of a push).
            while self._queued:
                chunk.absorb(self._queued.popleft()[0])
            await self._write(chunk, now)

    async def _write(self, chunk: _Chunk, now: datetime) -> None:
        conn, org_id, device = self._conn, self._org_id, self._device
        await _write_batch(conn, org_id, device, chunk.writes, chunk.patched, self._original, now)
        if chunk.conflicts:
            await _insert_conflicts(conn, org_id, device, chunk.conflicts)


async def _write_batch(
    conn: AsyncConnection,
    org_id: UUID,
    device: Row,
    writes: Mapping[EntityType, list[tuple[int, Row]]],
    patched: Mapping[EntityType, set[str]],
    original: Mapping[Key, Row],
    now: datetime,
) -> None:
    """The rows decided in memory, through the write path: one persist per entity type."""
    replica = device["replica_id"]
    # Parents before children (a contact may belong to a customer created in this push).
    for entity in EntityType:
        if not writes[entity]:
            continue
        spec = ENTITIES[entity]
        written = [row for _, row in writes[entity]]
        await persist_rows(
            conn,
            org_id=org_id,
            spec=spec,
            rows=written,
            existing={rid for (t, rid) in original if t is entity},
            replica=replica,
            device_id=device["id"],
            now=now,
            fields=patched[entity],
        )
        if spec is not CUSTOMER or device["selection_mode"] != "SELECTED":
            continue
        for row in written:
            if (entity, row["id"]) not in original:
                await device_queries.add_to_selection(
                    conn,
                    org_id=org_id,
                    device_id=device["id"],
                    customer_id=row["id"],
                    seq=row["seq"],
                )


def _conflict_errors(change: PushChange, device: Row, named: Mapping[UUID, Row]) -> dict[str, str]:
    """Why the conflict a change names is not one it may settle (empty when it may)."""
    if change.resolves_conflict_id is None:
        return {}
    if change.resolves_conflict is None:
        return {"resolvesConflictId": "is not a conflict id (a SyncConflict id or its uuid)"}
    conflict = named.get(change.resolves_conflict)
    # Another tenant's conflict is not found at all (org filter and row-level security):
    # the same answer as for one that does not exist, so ids reveal nothing.
    if (
        conflict is None
        or conflict["device_id"] != device["id"]
        or conflict["entity"] != change.entity.value
        or conflict["record_id"] != change.record_id
    ):
        return {"resolvesConflictId": "is not a conflict of this device about this record"}
    return {}


def _parents(
    rows: Mapping[Key, Row],
    customers_now: Mapping[UUID, tuple[bool, bool]],
    spec: EntitySpec,
    change: PushChange,
) -> dict[str, UUID] | str:
    """Links of a record created by this change, or the name of the missing parent."""
    if spec is CUSTOMER:
        return {}
    if spec.type is EntityType.ASSET:
        facility = rows.get((EntityType.FACILITY, change.links.get("facility_id", UUID(int=0))))
        if facility is None or facility["deleted"]:
            return "facilityId"
        return {"facility_id": facility["id"], "customer_id": facility["customer_id"]}
    customer_id = change.links.get("customer_id")
    created = rows.get((EntityType.CUSTOMER, customer_id)) if customer_id else None
    live = created is not None and not created["deleted"]
    stored = customers_now.get(customer_id) if customer_id else None
    if not live and (stored is None or stored[1]):
        return "customerId"
    assert customer_id is not None
    return {"customer_id": customer_id}


async def _lock_all(
    conn: AsyncConnection, org_id: UUID, changes: Sequence[PushChange]
) -> dict[Key, Row]:
    """The current rows of every record the push touches, locked: one query per type."""
    rows: dict[Key, Row] = {}
    for entity in {c.entity for c in changes}:
        ids = [c.record_id for c in changes if c.entity is entity]
        locked = await lock_rows(conn, ENTITIES[entity], org_id, ids)
        rows.update({(entity, rid): row for rid, row in locked.items()})
    return rows


async def _customer_states(
    conn: AsyncConnection, org_id: UUID, ids: set[UUID]
) -> dict[UUID, tuple[bool, bool]]:
    """(archived, deleted) of each customer."""
    if not ids:
        return {}
    found = await raw.fetch(
        conn,
        "SELECT id, archived, deleted FROM customers WHERE org_id = $1 AND id = ANY($2::uuid[])",
        org_id,
        list(ids),
    )
    return {r["id"]: (r["archived"], r["deleted"]) for r in found}


async def _email_owners(
    conn: AsyncConnection,
    org_id: UUID,
    changes: Sequence[PushChange],
    locked: Mapping[Key, Row],
) -> tuple[dict[str, UUID], dict[str, str]]:
    """Live customers owning the primary emails this push touches, and each email's key.

    The key is the unique index's own, PostgreSQL's ``lower(email)`` (Python's ``lower``
    differs for some letters, and the index does not trim), computed in the same statement
    that finds the owners through that index. When the push sets any email, those of the
    locked customers are included, so that a customer changing or deleting its email frees
    the old one for the rest of the batch.
    """
    wanted = {
        c.patch["email"]
        for c in changes
        if c.entity is EntityType.CUSTOMER and isinstance(c.patch.get("email"), str)
    }
    if not wanted:
        # No change sets an email: no write of this push can take one.
        return {}, {}
    wanted.update(
        row["email"]
        for (entity, _), row in locked.items()
        if entity is EntityType.CUSTOMER and isinstance(row.get("email"), str)
    )
    # PostgreSQL text cannot hold NUL: such an email fails validation, never reaches a key.
    wanted = {e for e in wanted if "\x00" not in e}
    if not wanted:
        return {}, {}
    found = await raw.fetch(
        conn,
        "SELECT u.email, lower(u.email) AS key, c.id FROM unnest($2::text[]) AS u(email)"
        # The unique index's predicate, spelled as it is, so the join probes that index.
        " LEFT JOIN customers c ON c.org_id = $1 AND NOT c.deleted"
        " AND c.email IS NOT NULL AND lower(c.email) = lower(u.email)",
        org_id,
        sorted(wanted),
    )
    keys = {str(r["email"]): str(r["key"]) for r in found}
    return {str(r["key"]): r["id"] for r in found if r["id"] is not None}, keys


def _email_key(keys: Mapping[str, str], email: str) -> str:
    # Every email of the batch has its key; the fallback only keeps this total.
    return keys.get(email, email.lower())


def _move_email(
    emails: dict[str, UUID], keys: Mapping[str, str], old: Row | None, new: Row
) -> None:
    """Keep the in-push email index in step with a customer write."""
    if old is not None and isinstance(old.get("email"), str):
        key = _email_key(keys, old["email"])
        if emails.get(key) == old["id"]:
            del emails[key]
    if isinstance(new.get("email"), str) and not new["deleted"]:
        emails[_email_key(keys, new["email"])] = new["id"]


async def _receipts(
    conn: AsyncConnection, org_id: UUID, device_id: UUID, ids: Sequence[str]
) -> dict[str, tuple[str, dict[str, Any]]]:
    found = await raw.fetch(
        conn,
        "SELECT client_mutation_id, request_hash, outcome FROM push_receipts"
        " WHERE org_id = $1 AND device_id = $2 AND client_mutation_id = ANY($3::text[])",
        org_id,
        device_id,
        list(ids),
    )
    return {r[0]: (r[1], r[2]) for r in found}


# The receipts and the device's update, one round trip: a push answers a thousand changes
# with a few statements, each a wait on the database.
_STORE_RECEIPTS = (
    "WITH receipts AS (INSERT INTO push_receipts"
    " (org_id, device_id, client_mutation_id, request_hash, counter, outcome)"
    " SELECT $1::uuid, $2::uuid, u.id, u.hash, u.counter, u.outcome::jsonb"
    " FROM unnest($3::text[], $4::text[], $5::bigint[], $6::text[])"
    " AS u(id, hash, counter, outcome))"
    " UPDATE devices SET max_counter = $7::bigint, last_push_at = $8::timestamptz"
    " WHERE org_id = $1::uuid AND id = $2::uuid"
)


async def _taken_counters(
    conn: AsyncConnection, org_id: UUID, device_id: UUID, counters: Sequence[int]
) -> set[int]:
    """Which of ``counters`` a stored change of the device already carries."""
    if not counters:
        return set()
    found = await raw.fetch(
        conn,
        "SELECT counter FROM push_receipts"
        " WHERE org_id = $1 AND device_id = $2 AND counter = ANY($3::bigint[])",
        org_id,
        device_id,
        sorted(set(counters)),
    )
    return {int(r[0]) for r in found}


async def _named_conflicts(conn: AsyncConnection, org_id: UUID, ids: set[UUID]) -> dict[UUID, Row]:
    """The stored conflicts a push names (resolvesConflictId), by id."""
    if not ids:
        return {}
    found = await raw.fetch(
        conn,
        "SELECT id, device_id, entity, record_id, status FROM sync_conflicts"
        " WHERE org_id = $1 AND id = ANY($2::uuid[])",
        org_id,
        sorted(ids),
    )
    return {r["id"]: dict(r) for r in found}


async def _close_conflicts(
    conn: AsyncConnection, org_id: UUID, user_id: UUID, ids: set[UUID]
) -> None:
    """Close the open conflicts that accepted changes settled (by merging, on the device).

    One already resolved (by a person meanwhile, or by an earlier push) keeps how it was.
    """
    await raw.execute(
        conn,
        "UPDATE sync_conflicts SET status = 'RESOLVED', resolution = 'MERGE',"
        " resolved_by = $2, resolved_at = now()"
        " WHERE org_id = $1 AND id = ANY($3::uuid[]) AND status = 'OPEN'",
        org_id,
        user_id,
        sorted(ids),
    )


async def _insert_conflicts(
    conn: AsyncConnection, org_id: UUID, device: Row, conflicts: Sequence[Mapping[str, Any]]
) -> None:
    """Store the MANUAL conflicts of the push (JSON values encoded as SQLAlchemy's JSONB did,
    anything orjson cannot encode natively as its string)."""

    def encoded(name: str) -> list[str]:
        return [orjson.dumps(c[name], default=str).decode() for c in conflicts]

    await raw.execute(
        conn,
        "INSERT INTO sync_conflicts (org_id, id, device_id, user_id, entity, record_id,"
        " customer_id, op, base_version, server_version, client_patch, fields)"
        " SELECT $1::uuid, u.id, $2::uuid, $3::uuid, u.entity, u.record_id, u.customer_id,"
        " u.op, u.base_version::jsonb, u.server_version::jsonb, u.client_patch::jsonb,"
        " u.fields::jsonb"
        " FROM unnest($4::uuid[], $5::text[], $6::uuid[], $7::uuid[], $8::text[], $9::text[],"
        " $10::text[], $11::text[], $12::text[])"
        " AS u(id, entity, record_id, customer_id, op, base_version, server_version,"
        " client_patch, fields)",
        org_id,
        device["id"],
        device["user_id"],
        [c["id"] for c in conflicts],
        [c["entity"] for c in conflicts],
        [c["record_id"] for c in conflicts],
        [c["customer_id"] for c in conflicts],
        [c["op"] for c in conflicts],
        encoded("base_version"),
        encoded("server_version"),
        encoded("client_patch"),
        encoded("fields"),
    )
