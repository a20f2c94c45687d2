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
  in the batch (:func:`needs_pull`, found through the hub's indexes), leaves the fast path
  and runs real pull pages from its position instead: the pull query owns the visibility
  rules (backfills, evictions), the hub only the common case "a row of a customer you
  already see changed".

**No gap.** A subscriber is registered before its catch-up starts but stays inactive (the
hub skips it) until catch-up has pulled to a head ``H`` with ``H >= last`` checked and the
subscriber activated in one step without yielding to the event loop. Every later batch
starts at ``last <= H`` and rows at or below a subscriber's position are dropped for it, so
each committed row reaches it exactly once. If the hub read past ``H`` meanwhile, catch-up
simply pulls again from ``H``.

**No stall.** Routing a batch touches only the subscribers its rows concern (indexes by
customer, device and ALL mode), and hands them out ``fanout_chunk`` sockets per event-loop
iteration; the periodic user re-check is applied in chunks the same way. No step of the
hub does work proportional to every subscription of the process in one iteration, and a
group's first pages hold ``catch_up_group_rows`` rows together.

**Live first.** While a tenant's live read or hand-out is under way, catch-up steps (and
the handshakes that ask, :meth:`Hub.after_live`) wait for it, up to ``live_first``
seconds. Each catch-up page is pulled inside its sink's ``pace``: a socket that has not
taken the previous page gets no other, so one that does not read costs a page, not a page
per subscription and page.

Imports nothing of ours outside ``sync``: the database side comes in as a :class:`Source`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Hashable, Sequence
from contextlib import AbstractAsyncContextManager
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
    """Whether a user's subscriptions may go on (``db.user_facts.UserFacts`` fits)."""

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


class GroupSource(Source, Protocol):
    """A source that also serves the pull pages of many subscribers in one go."""

    async def pull_group(
        self, requests: Sequence[tuple[Subscriber, Checkpoint | None]], limit: int
    ) -> list[PulledPage | SubscriptionError | None]:
        """The next page of each ``(subscriber, since)`` of one tenant, in request order;
        a member's own refusal is its result, None leaves it to pull alone; raises if the
        whole group failed."""


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

    def pace(self) -> AbstractAsyncContextManager[None]:
        """Held around each catch-up page, its pull and its put: entered once the sink can
        take another page (a socket that has not taken the previous one holds the next
        back, and closes itself if it stays stuck), one page of the sink's connection at a
        time."""

    def fail(self, error: SubscriptionError) -> None:
        """End this subscription with an error."""

    def revoke(self, reason: str) -> None:
        """The user may no longer be connected: end the whole connection."""


@dataclass(eq=False, slots=True)
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
    # Where it joined the live stream (set at activation); every batch routed after that
    # reached it too, so while active its position is ``Hub._position`` (kept implicit:
    # routing a batch must not touch every subscriber to move a counter).
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
class _Joining:
    """A subscriber waiting for its first page in a group."""

    subscriber: Subscriber
    since: Checkpoint | None
    future: asyncio.Future[PulledPage | None]


@dataclass(eq=False)
class _Tenant:
    last: int | None = None
    subscribers: set[Subscriber] = field(default_factory=set)
    # Active subscribers only, indexed so that routing a batch touches the subscribers it
    # concerns, never all of them.
    by_customer: dict[UUID, set[Subscriber]] = field(default_factory=dict)
    all_mode: set[Subscriber] = field(default_factory=set)
    by_device: dict[UUID, set[Subscriber]] = field(default_factory=dict)
    reader: asyncio.Task[None] | None = None
    again: bool = False
    # Set while no batch is being handed out: an active subscriber has then received
    # everything up to ``last`` (see ``Hub._position``).
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()

    def index(self, subscriber: Subscriber) -> None:
        self.by_device.setdefault(subscriber.device_id, set()).add(subscriber)
        if subscriber.selection is None:
            self.all_mode.add(subscriber)
            return
        for customer_id in subscriber.selection:
            self.by_customer.setdefault(customer_id, set()).add(subscriber)

    def unindex(self, subscriber: Subscriber) -> None:
        same_device = self.by_device.get(subscriber.device_id)
        if same_device is not None:
            same_device.discard(subscriber)
            if not same_device:
                del self.by_device[subscriber.device_id]
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
        fanout_chunk: int = 256,
        catch_up_group: int = 64,
        catch_up_linger: float = 0.05,
        catch_up_group_rows: int = 2048,
        live_first: float = 0.1,
    ) -> None:
        self.source = source
        self.encode_checkpoint = encode_checkpoint
        self.page_size = page_size
        self.recheck_seconds = recheck_seconds
        # Sockets offered a batch (or subscribers re-checked) per event-loop iteration: a
        # batch for thousands of subscribers is handed out over several iterations, so the
        # other sockets and requests of the worker are not held up meanwhile.
        self.fanout_chunk = max(1, fanout_chunk)
        # Subscribers that join together (a reconnect storm) share their first pull: up to
        # this many of a tenant in one transaction, when the source can (GroupSource).
        self.catch_up_group = catch_up_group
        # Subscribers of a tenant that join one after another (a storm arrives at the pace
        # of its handshakes) gather for up to this long after the tenant's previous group
        # before the next one is pulled; one joining alone is pulled at once. A group of one
        # cost the database ~1 ms (its transaction, the device lock's commit, the executor
        # set-up of the page statement) against ~0.15 ms a member in a group of 64.
        self.catch_up_linger = catch_up_linger
        # Rows a group's first pages hold together: each member's page is cut to its share
        # (32 rows each in a full group: reconnecting phones with a few changes each fit;
        # one with more goes on alone). A group's rows are decoded in one step of the loop
        # (~15 ms per 1,000 customers here): 64 joining ALL-mode devices with a full page
        # each held every other socket of the worker up for a second.
        self.catch_up_group_rows = catch_up_group_rows
        self._joining: dict[UUID, list[_Joining]] = {}
        self._dispatchers: dict[UUID, asyncio.Task[None]] = {}
        self.retry_seconds = retry_seconds
        # Catch-up pulls hold a pooled connection each; bound them so a reconnect storm
        # queues here instead of exhausting the pool the HTTP API needs too.
        self._pulls = asyncio.Semaphore(concurrent_pulls)
        self._tenants: dict[UUID, _Tenant] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._recheck: asyncio.Task[None] | None = None
        # Live batches go first: while a tenant's read or hand-out is under way, catch-up
        # (and the handshakes that ask, :meth:`after_live`) waits up to this long before
        # its next step. Asyncio has no priorities, and every await of a live read and of
        # its hand-out waits for a turn of the loop behind whatever became ready meanwhile:
        # a reconnect storm's first pages (a page of 1,000 customers is decoded and
        # encoded in one go) made the other sockets' batches wait for hundreds of ms.
        self.live_first = live_first
        self._live = 0
        self._live_idle = asyncio.Event()
        self._live_idle.set()
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
        tasks = [
            t for t in (self._recheck, *self._tasks, *self._dispatchers.values()) if t is not None
        ]
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
        self._live += 1
        self._live_idle.clear()
        tenant.reader = asyncio.create_task(self._read(org_id, tenant))
        # A callback, not the task's own `finally`: a task cancelled before its first step
        # never runs that.
        tenant.reader.add_done_callback(self._live_done)

    def poke_all(self) -> None:
        """Read every tenant with subscribers (after the listener reconnected)."""
        for org_id in list(self._tenants):
            self.poke(org_id)

    async def _read(self, org_id: UUID, tenant: _Tenant) -> None:
        try:
            while True:
                tenant.again = False
                assert tenant.last is not None
                # Active subscribers' devices, from the index (not a pass over everyone).
                devices = list(tenant.by_device)
                started = time.perf_counter()
                try:
                    batch = await self.source.read(org_id, tenant.last, devices)
                except Exception:
                    log.exception("live read failed; retrying", extra={"org_id": str(org_id)})
                    await asyncio.sleep(self.retry_seconds)
                    tenant.again = True
                    continue
                self.reads += 1
                await self._route(tenant, batch)
                if batch.changes:
                    self.observe_fanout(time.perf_counter() - started)
                if not tenant.again:
                    return
        finally:
            tenant.reader = None

    def _live_done(self, _task: asyncio.Task[None]) -> None:
        self._live -= 1
        if not self._live:
            self._live_idle.set()

    async def after_live(self) -> None:
        """Wait (up to ``live_first`` seconds) until no live read or hand-out is under way:
        for work that may come second (catch-up, handshakes)."""
        if not self._live or self.live_first <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.live_first):
                await self._live_idle.wait()

    async def _route(self, tenant: _Tenant, batch: LiveRead) -> None:
        """Deliver ``batch`` to the tenant's active subscribers it concerns.

        Every decision (who re-pulls, who gets which rows, the groups) is taken in one step
        without yielding (:meth:`_plan`), touching only the subscribers the rows or
        visibility facts name (indexes), never every subscriber. Handing the groups out
        then yields to the event loop every ``fanout_chunk`` sockets; meanwhile
        ``tenant.idle`` is clear, so nothing re-pulls a subscriber from a position it has
        not been sent yet.
        """
        if tenant.last is None or batch.head <= tenant.last:
            return
        groups = self._plan(tenant, batch)
        if not groups:
            return
        # A checkpoint names its feed: one per feed among the groups.
        checkpoints: dict[str, str] = {}
        changes = batch.changes
        tenant.idle.clear()
        try:
            budget = self.fanout_chunk
            for (_, feed, indices), subs in groups.items():
                checkpoint = checkpoints.get(feed)
                if checkpoint is None:
                    checkpoint = checkpoints[feed] = self.encode_checkpoint(
                        Checkpoint(batch.head, feed=feed)
                    )
                out = Batch([changes[i] for i in indices], checkpoint)
                encoded = subs[0].sink.encode(out)
                for sub in subs:
                    # Offered even if it closed meanwhile (a no-op) or started a re-pull
                    # (which starts from ``batch.head``: see ``_position``).
                    sub.sink.offer(out, encoded)
                    budget -= 1
                    if budget <= 0:
                        budget = self.fanout_chunk
                        await asyncio.sleep(0)
        finally:
            tenant.idle.set()

    def _plan(
        self, tenant: _Tenant, batch: LiveRead
    ) -> dict[tuple[Hashable, str, tuple[int, ...]], list[Subscriber]]:
        """Move the tenant to ``batch.head``, start the re-pulls it calls for and group
        the other subscribers it concerns by (encoding key, feed, rows)."""
        assert tenant.last is not None
        # Every active subscriber has received everything up to here (``after`` is the
        # previous head: reads of a tenant run one at a time from ``last``).
        after = tenant.last
        tenant.last = batch.head
        changes = batch.changes
        # The batch changes what these devices may see: they run a real pull instead.
        repull: set[Subscriber] = set()
        for device_id in batch.reselected_devices:
            repull.update(tenant.by_device.get(device_id, ()))
        if batch.visibility_changed:
            repull.update(tenant.all_mode)
            for customer_id in batch.visibility_changed:
                repull.update(tenant.by_customer.get(customer_id, ()))
        for sub in repull:
            self._start_pull(sub, Checkpoint(max(sub.position, after), feed=sub.feed))
        groups: dict[tuple[Hashable, str, tuple[int, ...]], list[Subscriber]] = {}
        if not changes:
            return groups
        for sub, candidate in _candidates(tenant, batch, after).items():
            indices = candidate
            if sub.position > after or max(sub.position, after) == 0:
                # Caught up past the batch start (or from nothing): its own filter.
                indices = tuple(
                    i
                    for i in candidate
                    if changes[i].seq > sub.position
                    and (sub.position > 0 or not changes[i].deleted)
                )
            if not indices:
                continue
            key = sub.sink.group_key
            groups.setdefault((key if key is not None else sub, sub.feed, indices), []).append(sub)
        return groups

    def _position(self, tenant: _Tenant, subscriber: Subscriber) -> int:
        """Every row up to this seq has been handed to ``subscriber`` (call while
        ``tenant.idle`` is set: an active subscriber has then received every batch up to
        ``tenant.last``)."""
        if subscriber.active and tenant.last is not None:
            return max(subscriber.position, tenant.last)
        return subscriber.position

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
                # A page is pulled only when the sink can take it: a socket that does not
                # read holds one page or two, not one per subscription and page.
                async with subscriber.sink.pace():
                    if subscriber.closed:
                        return
                    await self.after_live()
                    page = None
                    # The first page of a joining subscriber in a group: subscribers joining
                    # together share it. Later pages, and re-pulls, go alone: a lone
                    # subscriber catching up page after page would wait
                    # ``catch_up_linger`` for each.
                    if first and self.catch_up_group > 1 and hasattr(self.source, "pull_group"):
                        page = await self._join_group(subscriber, since)
                    if page is None:
                        page = await self._pull_alone(subscriber, since)
                    if subscriber.closed:
                        return
                    position = since = page.checkpoint
                    # The first page always goes out (the client learns it is caught up),
                    # and a reset (the client must drop what it holds first); later ones
                    # only when they carry something.
                    if first or page.changes or page.reset:
                        # Encoding a page is one step of the loop: not while a live batch
                        # waits.
                        await self.after_live()
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

    async def _pull_alone(self, subscriber: Subscriber, since: Checkpoint | None) -> PulledPage:
        """One page of the subscriber's own, in a task that a subscriber leaving meanwhile
        does not cancel (its page is dropped instead).

        A statement cancelled half-way costs its pooled connection: it is terminated, and
        its replacement is a new backend whose statements are prepared (and the group's
        page statement planned) all over again. A reconnect storm's clients leave while
        their catch-up pages are being read.
        """
        task = asyncio.create_task(self._pull_slot(subscriber, since))
        self._tasks.add(task)
        task.add_done_callback(self._pull_done)
        return await asyncio.shield(task)

    def _pull_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        # Nobody may be waiting for it any more: retrieved here, asyncio does not log an
        # exception that was never retrieved.
        if not task.cancelled():
            task.exception()

    async def _pull_slot(self, subscriber: Subscriber, since: Checkpoint | None) -> PulledPage:
        async with self._pulls:
            return await self.source.pull(subscriber, since, self.page_size)

    # -- grouped first pages -------------------------------------------------------------

    async def _join_group(
        self, subscriber: Subscriber, since: Checkpoint | None
    ) -> PulledPage | None:
        """The subscriber's first page, pulled together with the others of its tenant that
        are waiting for theirs; None: pull it alone (the group failed, or could not serve
        this member)."""
        future: asyncio.Future[PulledPage | None] = asyncio.get_running_loop().create_future()
        queue = self._joining.setdefault(subscriber.org_id, [])
        queue.append(_Joining(subscriber, since, future))
        if subscriber.org_id not in self._dispatchers:
            task = asyncio.create_task(self._dispatch(subscriber.org_id))
            self._dispatchers[subscriber.org_id] = task
        return await future

    async def _dispatch(self, org_id: UUID) -> None:
        """Take groups off the tenant's queue as pull slots free up: whoever joined while
        the slots were busy, or within ``catch_up_linger`` of the previous group, goes in
        the next group (the busier, the larger the groups)."""
        loop = asyncio.get_running_loop()
        last = -self.catch_up_linger
        try:
            while True:
                waiting = len(self._joining.get(org_id, ()))
                wait = last + self.catch_up_linger - loop.time()
                if not waiting and wait <= 0:
                    return
                if wait > 0 and waiting < self.catch_up_group:
                    await asyncio.sleep(wait)
                    continue
                await self.after_live()
                await self._pulls.acquire()
                last = loop.time()
                queue = self._joining.get(org_id, [])
                group = [j for j in queue[: self.catch_up_group] if not j.future.done()]
                del queue[: self.catch_up_group]
                if not queue:
                    self._joining.pop(org_id, None)
                if not group:
                    self._pulls.release()
                    continue
                task = asyncio.create_task(self._pull_group(group))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            self._dispatchers.pop(org_id, None)

    async def _pull_group(self, group: list[_Joining]) -> None:
        """One grouped pull (holding a slot of ``_pulls``, released here)."""
        source: Any = self.source
        results: list[PulledPage | SubscriptionError | None] | None = None
        limit = min(self.page_size, max(1, self.catch_up_group_rows // len(group)))
        try:
            results = await source.pull_group([(j.subscriber, j.since) for j in group], limit)
        except Exception:
            log.exception("grouped catch-up failed; pulling one by one")
        finally:
            self._pulls.release()
        for n, joining in enumerate(group):
            if joining.future.done():
                continue
            result = results[n] if results is not None else None
            if isinstance(result, SubscriptionError):
                joining.future.set_exception(result)
            else:
                joining.future.set_result(result)

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
        """Apply deactivation, revocation and capability changes of a tenant's users.

        The answer is applied ``fanout_chunk`` subscribers per event-loop iteration: a
        re-check of thousands of subscribers does not hold the worker up in one go.
        """
        tenant = self._tenants.get(org_id)
        if tenant is None:
            return
        # Judge only the subscribers the query was asked about: one that joins while it runs
        # has just been checked at connection_init (and is not in the answer).
        subscribers = list(tenant.subscribers)
        users = await self.source.users(org_id, list({s.user_id for s in subscribers}))
        for n, sub in enumerate(subscribers):
            if n and n % self.fanout_chunk == 0:
                await asyncio.sleep(0)
            if sub.closed:
                continue
            facts = users.get(sub.user_id)
            if facts is None or not facts.active or facts.token_epoch != sub.token_epoch:
                sub.sink.revoke("the user was deactivated or the token revoked")
            elif sub.active and sub.selection is not None and not facts.may_select:
                # The capability was withdrawn: the pull switches the device to ALL. From
                # the position it has been sent, so wait for a batch being handed out.
                await tenant.idle.wait()
                if sub.active and not sub.closed:
                    position = self._position(tenant, sub)
                    self._start_pull(sub, Checkpoint(position, feed=sub.feed))


def _candidates(tenant: _Tenant, batch: LiveRead, after: int) -> dict[Subscriber, tuple[int, ...]]:
    """The active subscribers with rows in ``batch`` (re-pulling ones excluded: they are
    inactive by now, so out of the indexes) and the indices of those rows."""
    changes, archived = batch.changes, batch.archived
    candidates: dict[Subscriber, tuple[int, ...]] = {}
    if tenant.all_mode:
        shared = visible_indices(changes, archived, None, after)
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
    return candidates


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None
