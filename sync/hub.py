"""The per-process subscription hub: one read per tenant per poke, fanned out to subscribers.

A poke (``NOTIFY`` relayed by ``db/notify_listener.py``) says only "tenant T has new changes". The
hub keeps, per tenant with subscribers here, the last seq it has read; on a poke it reads
``(last, head]`` once (pokes arriving meanwhile are coalesced into one more read), then
routes the rows:

- each active subscriber gets the rows of the customers it sees, of its feed's record types
  and newer than its own position (:func:`visible_indices`);
- subscribers that share an encoding key, a feed and the same rows form a group, whose
  payload is encoded once; each socket then only adds its own message envelope;
- a subscriber whose device changed selection, or that sees a customer archived or restored
  in the batch (:func:`needs_pull`), leaves the fast path and runs real pull pages from its
  position instead: the pull query owns the visibility rules (backfills, evictions), the hub
  only the common case "a row of a customer you already see changed".

**No gap.** A subscriber is registered before its catch-up starts but stays inactive (the
hub skips it) until catch-up has pulled to a head ``H`` with ``H >= last`` checked and the
subscriber activated in one step without yielding to the event loop. Every later batch
starts at ``last <= H`` and rows at or below a subscriber's position are dropped for it, so
each committed row reaches it exactly once. If the hub read past ``H`` meanwhile, catch-up
simply pulls again from ``H``.

Imports nothing of ours outside ``sync``: the database side comes in as a :class:`Source`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID

from sync.checkpoint import ALL_TYPES, Checkpoint

log = logging.getLogger("fieldsync.hub")


class Routable(Protocol):
    """What routing needs to know about a change (``db.pull.PulledChange`` fits)."""

    @property
    def entity(self) -> str:
        """Its record type (a feed's types are these names)."""

    @property
    def customer_id(self) -> UUID:
        """Customer the record belongs to."""

    @property
    def seq(self) -> int:
        """Its (effective) change seq."""

    @property
    def deleted(self) -> bool:
        """A tombstone."""


class LiveRead(Protocol):
    """A tenant's rows in ``(after, head]`` (``db.live.LiveBatch`` fits)."""

    @property
    def after(self) -> int:
        """Exclusive lower bound."""

    @property
    def head(self) -> int:
        """Inclusive upper bound: every seq up to it is committed."""

    @property
    def changes(self) -> Sequence[Routable]:
        """Rows in seq order."""

    @property
    def archived(self) -> Sequence[bool]:
        """Per row: its customer is archived (the row is visible to nobody)."""

    @property
    def visibility_changed(self) -> frozenset[UUID]:
        """Customers archived or restored in the range."""

    @property
    def reselected_devices(self) -> frozenset[UUID]:
        """Devices whose selection or mode changed in the range."""


@dataclass(frozen=True)
class PulledPage:
    """One pull page as the hub needs it."""

    changes: Sequence[Routable]
    checkpoint: Checkpoint
    has_more: bool
    # The feed started over (a checkpoint older than the compaction horizon).
    reset: bool
    # The device's selection once the pull ended: None = ALL customers.
    selection: frozenset[UUID] | None


@dataclass(frozen=True)
class UserState:
    """Whether a user's subscriptions may go on (``db.live.UserFacts`` fits)."""

    active: bool
    token_epoch: int
    may_select: bool


class SubscriptionError(Exception):
    """A subscription cannot go on; ``code`` is the GraphQL error code sent to its client."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class Source(Protocol):
    """The database side of the hub."""

    async def read(self, org_id: UUID, after: int, devices: Sequence[UUID]) -> LiveRead:
        """The tenant's rows after ``after`` (one read for every subscriber)."""

    async def pull(
        self, subscriber: Subscriber, since: Checkpoint | None, limit: int
    ) -> PulledPage:
        """One pull page of the subscriber's feed (``since`` None: from the device's own
        position for the feed's types); raises SubscriptionError."""

    async def users(self, org_id: UUID, user_ids: Sequence[UUID]) -> dict[UUID, Any]:
        """Current :class:`UserState`-like facts of users (missing = deleted)."""


@dataclass(frozen=True)
class Batch:
    """What a subscriber receives: changes, the checkpoint after them, the reset marker."""

    changes: Sequence[Routable]
    checkpoint: str
    # Drop every local record of the feed's types before applying this batch.
    reset: bool = False


class Sink(Protocol):
    """Where a subscriber's batches go (a socket's subscription, or a queue)."""

    @property
    def group_key(self) -> Hashable | None:
        """Sinks with equal keys encode a batch identically; None = no sharing."""

    def encode(self, batch: Batch) -> Any:
        """The shared encoded form of ``batch`` (computed once per group)."""

    def offer(self, batch: Batch, encoded: Any) -> None:
        """Enqueue without waiting; a sink that cannot keep up closes itself."""

    async def put(self, batch: Batch) -> None:
        """Enqueue, waiting for room (catch-up pages; backpressure)."""

    def fail(self, error: SubscriptionError) -> None:
        """End this subscription with an error."""

    def revoke(self, reason: str) -> None:
        """The user may no longer be connected: end the whole connection."""


@dataclass(eq=False)
class Subscriber:
    """One subscription as the hub tracks it (small: thousands per process)."""

    org_id: UUID
    user_id: UUID
    device_id: UUID
    token_epoch: int
    sink: Sink
    # Where catch-up starts; None: from the device's own position for the feed's types.
    since: Checkpoint | None
    # The feed's record types (None: all) and its name in checkpoints.
    types: frozenset[str] | None = None
    feed: str = ALL_TYPES
    # Every row up to this seq has been delivered (meaningful once active).
    position: int = 0
    selection: frozenset[UUID] | None = None
    active: bool = False
    closed: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)


def needs_pull(subscriber: Subscriber, batch: LiveRead) -> bool:
    """The batch changes what the subscriber's device may see: run a real pull instead."""
    if subscriber.device_id in batch.reselected_devices:
        return True
    if not batch.visibility_changed:
        return False
    if subscriber.selection is None:
        return True
    return not subscriber.selection.isdisjoint(batch.visibility_changed)


def visible_indices(
    changes: Sequence[Routable],
    archived: Sequence[bool],
    selection: frozenset[UUID] | None,
    position: int,
) -> tuple[int, ...]:
    """Indices of the rows a subscriber at ``position`` seeing ``selection`` gets.

    The same rules as a pull from ``position`` for a device whose selection did not change:
    only newer rows, of non-archived customers it sees; no tombstones for a device that
    starts from nothing (position 0).
    """
    return tuple(
        i
        for i, change in enumerate(changes)
        if change.seq > position
        and not archived[i]
        and (selection is None or change.customer_id in selection)
        and (position > 0 or not change.deleted)
    )


def of_types(
    changes: Sequence[Routable], indices: tuple[int, ...], types: frozenset[str] | None
) -> tuple[int, ...]:
    """The ``indices`` whose rows are of a feed's ``types`` (None: all types)."""
    if types is None:
        return indices
    return tuple(i for i in indices if changes[i].entity in types)


@dataclass(eq=False)
class _Tenant:
    last: int | None = None
    subscribers: set[Subscriber] = field(default_factory=set)
    by_customer: dict[UUID, set[Subscriber]] = field(default_factory=dict)
    all_mode: set[Subscriber] = field(default_factory=set)
    reader: asyncio.Task[None] | None = None
    again: bool = False

    def index(self, subscriber: Subscriber) -> None:
        if subscriber.selection is None:
            self.all_mode.add(subscriber)
            return
        for customer_id in subscriber.selection:
            self.by_customer.setdefault(customer_id, set()).add(subscriber)

    def unindex(self, subscriber: Subscriber) -> None:
        self.all_mode.discard(subscriber)
        for customer_id in subscriber.selection or ():
            subs = self.by_customer.get(customer_id)
            if subs is not None:
                subs.discard(subscriber)
                if not subs:
                    del self.by_customer[customer_id]


class Hub:
    """Routes each tenant's new changes to this process's subscribers."""

    def __init__(
        self,
        source: Source,
        *,
        encode_checkpoint: Callable[[Checkpoint], str],
        page_size: int = 1000,
        concurrent_pulls: int = 4,
        recheck_seconds: float = 5.0,
        retry_seconds: float = 1.0,
    ) -> None:
        self.source = source
        self.encode_checkpoint = encode_checkpoint
        self.page_size = page_size
        self.recheck_seconds = recheck_seconds
        self.retry_seconds = retry_seconds
        # Catch-up pulls hold a pooled connection each; bound them so a reconnect storm
        # queues here instead of exhausting the pool the HTTP API needs too.
        self._pulls = asyncio.Semaphore(concurrent_pulls)
        self._tenants: dict[UUID, _Tenant] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._recheck: asyncio.Task[None] | None = None
        self.reads = 0
        # Seconds from the start of a read to the rows being queued on every socket; the
        # server points this at its fan-out lag histogram.
        self.observe_fanout: Callable[[float], None] = lambda _seconds: None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start the periodic user re-check."""
        if self._recheck is None and self.recheck_seconds > 0:
            self._recheck = asyncio.create_task(self._recheck_loop())

    async def close(self) -> None:
        """Stop every task of the hub (subscribers' sinks are closed by their owners)."""
        tasks = [t for t in (self._recheck, *self._tasks) if t is not None]
        for tenant in self._tenants.values():
            if tenant.reader is not None:
                tasks.append(tenant.reader)
            for sub in tenant.subscribers:
                if sub.task is not None:
                    tasks.append(sub.task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tenants.clear()

    @property
    def subscriber_count(self) -> int:
        """Subscriptions served by this process."""
        return sum(len(t.subscribers) for t in self._tenants.values())

    # -- subscribers -----------------------------------------------------------------

    def add(self, subscriber: Subscriber) -> None:
        """Register (inactive, so nothing is missed while catching up) and start catch-up."""
        tenant = self._tenants.setdefault(subscriber.org_id, _Tenant())
        tenant.subscribers.add(subscriber)
        self._start_pull(subscriber, subscriber.since, initial=True)

    def remove(self, subscriber: Subscriber) -> None:
        """Forget a subscriber (socket closed, `complete`, or error)."""
        subscriber.closed = True
        if subscriber.task is not None and subscriber.task is not _current_task():
            subscriber.task.cancel()
        tenant = self._tenants.get(subscriber.org_id)
        if tenant is None or subscriber not in tenant.subscribers:
            return
        tenant.subscribers.discard(subscriber)
        if subscriber.active:
            tenant.unindex(subscriber)
        if not tenant.subscribers:
            if tenant.reader is not None:
                tenant.reader.cancel()
            del self._tenants[subscriber.org_id]

    # -- pokes and reads -------------------------------------------------------------

    def poke(self, org_id: UUID) -> None:
        """The tenant has committed changes: read them (coalesced with a read under way)."""
        tenant = self._tenants.get(org_id)
        if tenant is None or tenant.last is None:
            # Nobody here is past catch-up: catching-up subscribers re-check the head.
            return
        if tenant.reader is not None:
            tenant.again = True
            return
        tenant.reader = asyncio.create_task(self._read(org_id, tenant))

    def poke_all(self) -> None:
        """Read every tenant with subscribers (after the listener reconnected)."""
        for org_id in list(self._tenants):
            self.poke(org_id)

    async def _read(self, org_id: UUID, tenant: _Tenant) -> None:
        try:
            while True:
                tenant.again = False
                assert tenant.last is not None
                devices = list({s.device_id for s in tenant.subscribers if s.active})
                started = time.perf_counter()
                try:
                    batch = await self.source.read(org_id, tenant.last, devices)
                except Exception:
                    log.exception("live read failed; retrying", extra={"org_id": str(org_id)})
                    await asyncio.sleep(self.retry_seconds)
                    tenant.again = True
                    continue
                self.reads += 1
                self._route(tenant, batch)
                if batch.changes:
                    self.observe_fanout(time.perf_counter() - started)
                if not tenant.again:
                    return
        finally:
            tenant.reader = None

    def _route(self, tenant: _Tenant, batch: LiveRead) -> None:
        """Deliver ``batch`` to the tenant's active subscribers (no awaits: atomic)."""
        if tenant.last is None or batch.head <= tenant.last:
            return
        tenant.last = batch.head
        changes, archived = batch.changes, batch.archived
        candidates: dict[Subscriber, tuple[int, ...]] = {}
        if changes:
            if tenant.all_mode:
                shared = visible_indices(changes, archived, None, batch.after)
                # Feeds of the same types share their rows too.
                by_types: dict[frozenset[str] | None, tuple[int, ...]] = {None: shared}
                for sub in tenant.all_mode:
                    rows = by_types.get(sub.types)
                    if rows is None:
                        rows = by_types[sub.types] = of_types(changes, shared, sub.types)
                    candidates[sub] = rows
            picked: dict[Subscriber, list[int]] = {}
            for i, change in enumerate(changes):
                if archived[i]:
                    continue
                for sub in tenant.by_customer.get(change.customer_id, ()):
                    if sub.types is None or change.entity in sub.types:
                        picked.setdefault(sub, []).append(i)
            for sub, picked_rows in picked.items():
                candidates[sub] = tuple(picked_rows)
        # A checkpoint names its feed: one per feed among the groups.
        checkpoints: dict[str, str] = {}
        groups: dict[tuple[Hashable, str, tuple[int, ...]], list[Subscriber]] = {}
        for sub in list(tenant.subscribers):
            if not sub.active:
                continue
            if needs_pull(sub, batch):
                self._start_pull(sub, Checkpoint(sub.position, feed=sub.feed))
                continue
            indices = candidates.get(sub, ())
            if indices and (sub.position > batch.after or sub.position == 0):
                # Caught up past the batch start (or from nothing): its own filter.
                indices = tuple(
                    i
                    for i in indices
                    if changes[i].seq > sub.position
                    and (sub.position > 0 or not changes[i].deleted)
                )
            sub.position = max(sub.position, batch.head)
            if not indices:
                continue
            key = sub.sink.group_key
            groups.setdefault((key if key is not None else sub, sub.feed, indices), []).append(sub)
        for (_, feed, indices), subs in groups.items():
            checkpoint = checkpoints.get(feed)
            if checkpoint is None:
                checkpoint = checkpoints[feed] = self.encode_checkpoint(
                    Checkpoint(batch.head, feed=feed)
                )
            out = Batch([changes[i] for i in indices], checkpoint)
            encoded = subs[0].sink.encode(out)
            for sub in subs:
                sub.sink.offer(out, encoded)

    # -- pulls (catch-up and re-filtering) -------------------------------------------

    def _start_pull(
        self, subscriber: Subscriber, since: Checkpoint | None, *, initial: bool = False
    ) -> None:
        tenant = self._tenants.get(subscriber.org_id)
        if subscriber.active and tenant is not None:
            tenant.unindex(subscriber)
        subscriber.active = False
        subscriber.task = asyncio.create_task(self._pull(subscriber, since, initial=initial))

    async def _pull(
        self, subscriber: Subscriber, since: Checkpoint | None, *, initial: bool
    ) -> None:
        first = initial
        try:
            while True:
                async with self._pulls:
                    page = await self.source.pull(subscriber, since, self.page_size)
                if subscriber.closed:
                    return
                position = since = page.checkpoint
                # The first page always goes out (the client learns it is caught up), and
                # a reset (the client must drop what it holds first); later ones only when
                # they carry something.
                if first or page.changes or page.reset:
                    await subscriber.sink.put(
                        Batch(page.changes, self.encode_checkpoint(position), page.reset)
                    )
                first = False
                if page.has_more or subscriber.closed:
                    continue
                if self._activate(subscriber, position.seq, page.selection):
                    return
        except SubscriptionError as exc:
            if not subscriber.closed:
                subscriber.sink.fail(exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("subscription pull failed")
            if not subscriber.closed:
                subscriber.sink.fail(
                    SubscriptionError("Internal server error", "INTERNAL_SERVER_ERROR")
                )

    def _activate(
        self, subscriber: Subscriber, head: int, selection: frozenset[UUID] | None
    ) -> bool:
        """Join the live stream at ``head`` unless the hub already read past it."""
        tenant = self._tenants.get(subscriber.org_id)
        if tenant is None or subscriber.closed:
            return True
        if tenant.last is not None and tenant.last > head:
            return False
        started = tenant.last is None
        if started:
            tenant.last = head
        subscriber.position = head
        subscriber.selection = selection
        subscriber.active = True
        subscriber.task = None
        tenant.index(subscriber)
        if started:
            # A commit whose poke arrived before the tenant had a reading position here.
            self.poke(subscriber.org_id)
        return True

    # -- periodic re-check of users -----------------------------------------------------

    async def _recheck_loop(self) -> None:
        while True:
            await asyncio.sleep(self.recheck_seconds)
            for org_id in list(self._tenants):
                try:
                    await self.recheck(org_id)
                except Exception:
                    log.exception("user re-check failed")
                # A safety net for lost notices (the LISTEN connection down or stuck after
                # a database restart): a read finds nothing new at the cost of one query.
                self.poke(org_id)

    async def recheck(self, org_id: UUID) -> None:
        """Apply deactivation, revocation and capability changes of a tenant's users."""
        tenant = self._tenants.get(org_id)
        if tenant is None:
            return
        # Judge only the subscribers the query was asked about: one that joins while it runs
        # has just been checked at connection_init (and is not in the answer).
        subscribers = list(tenant.subscribers)
        users = await self.source.users(org_id, list({s.user_id for s in subscribers}))
        for sub in subscribers:
            if sub.closed:
                continue
            facts = users.get(sub.user_id)
            if facts is None or not facts.active or facts.token_epoch != sub.token_epoch:
                sub.sink.revoke("the user was deactivated or the token revoked")
            elif sub.active and sub.selection is not None and not facts.may_select:
                # The capability was withdrawn: the pull switches the device to ALL.
                self._start_pull(sub, Checkpoint(sub.position, feed=sub.feed))


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None
