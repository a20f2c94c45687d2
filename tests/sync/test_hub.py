"""The hub's routing rules and its no-gap / shared-encoding behaviour, with a fake source."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

from sync.checkpoint import Checkpoint
from sync.hub import (
    Batch,
    Hub,
    PulledPage,
    Subscriber,
    SubscriptionError,
    needs_pull,
    visible_indices,
)

A, B, C = uuid4(), uuid4(), uuid4()


@dataclass(frozen=True)
class Row:
    customer_id: UUID
    seq: int
    deleted: bool = False
    entity: str = "customer"


@dataclass(frozen=True)
class Read:
    after: int
    head: int
    changes: Sequence[Row]
    archived: Sequence[bool]
    visibility_changed: frozenset[UUID] = frozenset()
    reselected_devices: frozenset[UUID] = frozenset()


@dataclass
class FakeSource:
    """A tenant log in memory; `pull` returns everything visible after `since`."""

    rows: list[Row] = field(default_factory=list)
    reads: int = 0
    pulls: int = 0
    on_pull: Any = None
    # The `since` of every pull, and pages to answer with first (then the log's rows).
    asked: list[Checkpoint | None] = field(default_factory=list)
    scripted: list[PulledPage] = field(default_factory=list)
    # Set: each read waits for it (a live read under way).
    read_gate: asyncio.Event | None = None

    @property
    def head(self) -> int:
        return max((r.seq for r in self.rows), default=0)

    async def read(self, org_id, after, devices):
        self.reads += 1
        if self.read_gate is not None:
            await self.read_gate.wait()
        new = [r for r in self.rows if r.seq > after]
        return Read(after, max(after, self.head), new, [False] * len(new))

    async def pull(self, subscriber, since, limit):
        self.pulls += 1
        self.asked.append(since)
        if self.scripted:
            return self.scripted.pop(0)
        head = self.head
        new = [
            r
            for r in self.rows
            if r.seq > (since.seq if since else 0)
            and (subscriber.types is None or r.entity in subscriber.types)
        ]
        if self.on_pull is not None:
            # Whatever the hook commits lands after this page's snapshot.
            await self.on_pull()
        return PulledPage(new, Checkpoint(head, feed=subscriber.feed), False, False, None)

    async def users(self, org_id, user_ids):
        return {}


@dataclass(eq=False)
class FakeSink:
    key: Any = "shared"
    batches: list[Batch] = field(default_factory=list)
    encodes: list[Batch] = field(default_factory=list)
    errors: list[SubscriptionError] = field(default_factory=list)
    # "pace" / "put" / "paced": a catch-up page's steps, in order.
    events: list[str] = field(default_factory=list)

    @property
    def group_key(self):
        return self.key

    def encode(self, batch):
        self.encodes.append(batch)
        return "encoded"

    def offer(self, batch, encoded):
        self.batches.append(batch)

    async def put(self, batch):
        self.batches.append(batch)
        self.events.append("put")

    @contextlib.asynccontextmanager
    async def pace(self):
        self.events.append("pace")
        yield
        self.events.append("paced")

    def fail(self, error):
        self.errors.append(error)

    def revoke(self, reason):
        self.errors.append(SubscriptionError(reason, "REVOKED"))


def subscriber(sink, device=None, org=A) -> Subscriber:
    return Subscriber(
        org_id=org,
        user_id=uuid4(),
        device_id=device or uuid4(),
        token_epoch=0,
        sink=sink,
        since=Checkpoint(),
    )


async def settle() -> None:
    """Let every ready task run (the fake source never blocks)."""
    for _ in range(200):
        await asyncio.sleep(0)


async def until(condition, seconds: float = 2.0) -> None:
    """Wait (bounded) until ``condition()`` holds."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.001)


def seqs(sink: FakeSink) -> list[int]:
    return [c.seq for b in sink.batches for c in b.changes]


class TestVisibleIndices:
    def test_only_newer_rows_of_seen_non_archived_customers(self):
        """A subscriber gets rows newer than its position, of customers it sees, not archived."""
        rows = [Row(B, 5), Row(C, 6), Row(B, 7), Row(B, 8)]
        assert visible_indices(rows, [False, False, True, False], frozenset({B}), 5) == (3,)

    def test_all_mode_sees_every_customer(self):
        """ALL mode (selection None) takes rows of every customer."""
        assert visible_indices([Row(B, 1), Row(C, 2)], [False, False], None, 0) == (0, 1)

    def test_no_tombstones_for_a_device_starting_from_nothing(self):
        """From position 0 a tombstone is skipped, as a pull from null skips it."""
        rows = [Row(B, 1, deleted=True), Row(B, 2)]
        assert visible_indices(rows, [False, False], None, 0) == (1,)
        assert visible_indices(rows, [False, False], None, 1) == (1,)


class TestNeedsPull:
    def test_reselected_device_and_moved_customers(self):
        """A selection change of the device, or an archive/restore of a customer it sees, needs a pull."""
        device = uuid4()
        sub = subscriber(FakeSink(), device)
        sub.selection = frozenset({B})
        base = Read(0, 1, [], [])
        assert not needs_pull(sub, base)
        assert needs_pull(sub, Read(0, 1, [], [], reselected_devices=frozenset({device})))
        assert needs_pull(sub, Read(0, 1, [], [], visibility_changed=frozenset({B})))
        assert not needs_pull(sub, Read(0, 1, [], [], visibility_changed=frozenset({C})))
        sub.selection = None
        assert needs_pull(sub, Read(0, 1, [], [], visibility_changed=frozenset({C})))


class TestHub:
    async def test_catch_up_then_live_without_gap_or_duplicate(self):
        """A write committed during catch-up arrives once; later writes arrive in order."""
        source = FakeSource(rows=[Row(B, 1), Row(B, 2)])
        hub = Hub(source, encode_checkpoint=lambda c: str(c.seq), recheck_seconds=0)
        sink = FakeSink()

        async def commit_during_first_pull() -> None:
            if source.pulls == 1:
                # Another subscriber's read moved the tenant past this catch-up's head.
                source.rows.append(Row(B, 3))
                other = subscriber(FakeSink())
                hub.add(other)

        source.on_pull = commit_during_first_pull
        hub.add(subscriber(sink))
        await until(lambda: len(seqs(sink)) == 3)
        source.rows.append(Row(C, 4))
        hub.poke(A)
        await until(lambda: len(seqs(sink)) >= 4)
        await settle()
        assert seqs(sink) == [1, 2, 3, 4]
        await hub.close()

    async def test_catch_up_pulls_again_when_the_hub_read_past_it(self):
        """If the hub's position passed the catch-up head, catch-up pulls again instead of activating."""
        source = FakeSource(rows=[Row(B, 1)])
        hub = Hub(source, encode_checkpoint=lambda c: str(c.seq), recheck_seconds=0)
        first = FakeSink()
        hub.add(subscriber(first))
        await settle()
        late = FakeSink()

        async def move_on() -> None:
            if source.pulls == 2:
                source.rows.append(Row(B, 2))
                hub.poke(A)
                await settle()

        source.on_pull = move_on
        hub.add(subscriber(late))
        await until(lambda: source.pulls == 3 and len(seqs(late)) == 2)
        assert seqs(late) == [1, 2]
        assert seqs(first) == [1, 2]
        assert source.pulls == 3
        await hub.close()

    async def test_one_read_and_one_encoding_per_group(self):
        """Subscribers with the same key and rows share one read and one encoding; another key encodes separately."""
        source = FakeSource()
        hub = Hub(source, encode_checkpoint=lambda c: str(c.seq), recheck_seconds=0)
        shared = [FakeSink() for _ in range(5)]
        other = FakeSink(key="other")
        for sink in [*shared, other]:
            hub.add(subscriber(sink))
        await settle()
        reads = source.reads
        source.rows.append(Row(B, 1))
        hub.poke(A)
        hub.poke(A)  # coalesced with the read under way
        await settle()
        assert source.reads - reads <= 2
        assert sum(len(s.encodes) for s in shared) == 1
        assert len(other.encodes) == 1
        assert all(seqs(s) == [1] for s in [*shared, other])
        await hub.close()

    async def test_selected_subscriber_gets_only_its_customers_and_reselection_pulls(self):
        """A SELECTED subscriber is routed its customers' rows; a selection change sends it through a pull."""
        source = FakeSource()
        hub = Hub(source, encode_checkpoint=lambda c: str(c.seq), recheck_seconds=0)
        sink = FakeSink()
        device = uuid4()
        sub = subscriber(sink, device)
        hub.add(sub)
        await settle()
        sub_tenant = hub._tenants[A]
        sub_tenant.unindex(sub)
        sub.selection = frozenset({B})
        sub_tenant.index(sub)
        source.rows += [Row(C, 1), Row(B, 2)]
        hub.poke(A)
        await settle()
        assert seqs(sink) == [2]
        pulls = source.pulls

        source.rows.append(Row(C, 3))  # e.g. the selection change's own seq

        async def reselected(org_id, after, devices):
            return Read(after, source.head, [], [], reselected_devices=frozenset({device}))

        source.read = reselected  # type: ignore[method-assign]
        hub.poke(A)
        await until(lambda: source.pulls == pulls + 1 and sub.active)
        await settle()
        assert source.pulls == pulls + 1
        await hub.close()

    async def test_removed_subscriber_gets_nothing_and_tenant_is_dropped(self):
        """After remove, no batch reaches the subscriber and an empty tenant is forgotten."""
        source = FakeSource()
        hub = Hub(source, encode_checkpoint=lambda c: str(c.seq), recheck_seconds=0)
        sink = FakeSink()
        sub = subscriber(sink)
        hub.add(sub)
        await settle()
        hub.remove(sub)
        source.rows.append(Row(B, 1))
        hub.poke(A)
        await settle()
        assert seqs(sink) == []
        assert hub.subscriber_count == 0
        await hub.close()


class TestRecheck:
    async def test_a_subscriber_joining_during_a_recheck_is_not_revoked(self):
        """The re-check judges only the subscribers it asked the database about: one that
        joins while the query runs (checked at connection_init) keeps its subscription."""
        source = FakeSource()
        release = asyncio.Event()
        asked: list[list[UUID]] = []

        @dataclass(frozen=True)
        class Facts:
            active: bool = True
            token_epoch: int = 0
            may_select: bool = True

        async def users(org_id, user_ids):
            asked.append(list(user_ids))
            await release.wait()
            return {user_id: Facts() for user_id in user_ids}

        source.users = users  # type: ignore[method-assign]
        hub = Hub(source, encode_checkpoint=lambda c: str(c.seq), recheck_seconds=0)
        first, late = FakeSink(), FakeSink()
        hub.add(subscriber(first))
        await settle()
        recheck = asyncio.create_task(hub.recheck(A))
        await until(lambda: len(asked) == 1)
        hub.add(subscriber(late))
        await settle()
        release.set()
        await recheck
        assert first.errors == []
        assert late.errors == []
        await hub.close()

    async def test_a_deactivated_user_is_revoked(self):
        """A subscriber whose user is no longer active is closed by the re-check."""
        source = FakeSource()

        @dataclass(frozen=True)
        class Facts:
            active: bool = False
            token_epoch: int = 0
            may_select: bool = True

        async def users(org_id, user_ids):
            return {user_id: Facts() for user_id in user_ids}

        source.users = users  # type: ignore[method-assign]
        hub = Hub(source, encode_checkpoint=lambda c: str(c.seq), recheck_seconds=0)
        sink = FakeSink()
        hub.add(subscriber(sink))
        await settle()
        await hub.recheck(A)
        assert [e.code for e in sink.errors] == ["REVOKED"]
        await hub.close()


class TestFeeds:
    async def test_a_typed_subscriber_gets_its_types_under_its_feeds_checkpoints(self):
        """A subscriber of the asset feed gets only asset rows, live too, with checkpoints
        naming its feed; an all-types subscriber with the same encoding key gets every row
        in a group of its own (the checkpoint differs)."""
        source = FakeSource(rows=[Row(B, 1), Row(B, 2, entity="asset")])
        hub = Hub(source, encode_checkpoint=lambda c: f"{c.feed}@{c.seq}", recheck_seconds=0)
        typed, whole = FakeSink(), FakeSink()
        sub = subscriber(typed)
        sub.types, sub.feed = frozenset({"asset"}), "asset"
        hub.add(sub)
        hub.add(subscriber(whole))
        await until(lambda: typed.batches and whole.batches)
        assert seqs(typed) == [2]
        assert typed.batches[0].checkpoint == "asset@2"
        source.rows += [Row(C, 3), Row(C, 4, entity="asset")]
        hub.poke(A)
        await until(lambda: len(typed.batches) == 2 and len(whole.batches) == 2)
        await settle()
        assert [c.seq for c in typed.batches[1].changes] == [4]
        assert typed.batches[1].checkpoint == "asset@4"
        assert [c.seq for c in whole.batches[1].changes] == [3, 4]
        assert whole.batches[1].checkpoint == "*@4"
        assert len(typed.encodes) == len(whole.encodes) == 1
        await hub.close()

    async def test_a_reset_page_goes_out_marked_and_the_feed_goes_on(self):
        """A catch-up page marked reset reaches the sink marked (it is not an error any
        more), and the subscriber then follows the live stream."""
        source = FakeSource(rows=[Row(B, 1)])
        source.scripted = [PulledPage([Row(B, 1)], Checkpoint(1), False, True, None)]
        hub = Hub(source, encode_checkpoint=lambda c: str(c.seq), recheck_seconds=0)
        sink = FakeSink()
        hub.add(subscriber(sink))
        await until(lambda: len(sink.batches) == 1)
        assert sink.batches[0].reset is True
        assert sink.errors == []
        source.rows.append(Row(B, 2))
        hub.poke(A)
        await until(lambda: len(sink.batches) == 2)
        assert sink.batches[1].reset is False
        await hub.close()

    async def test_without_since_the_source_resumes_and_later_pulls_carry_the_feed(self):
        """A subscriber without `since` asks the source to resume (None); a re-filtering
        pull later starts from its live position in its own feed."""
        source = FakeSource(rows=[Row(B, 1, entity="asset")])
        hub = Hub(source, encode_checkpoint=lambda c: str(c.seq), recheck_seconds=0)
        device = uuid4()
        sub = subscriber(FakeSink(), device)
        sub.since, sub.types, sub.feed = None, frozenset({"asset"}), "asset"
        hub.add(sub)
        await until(lambda: sub.active)
        assert source.asked == [None]
        source.rows.append(Row(C, 2))

        async def reselected(org_id, after, devices):
            return Read(after, source.head, [], [], reselected_devices=frozenset({device}))

        source.read = reselected  # type: ignore[method-assign]
        hub.poke(A)
        await until(lambda: len(source.asked) == 2 and sub.active)
        assert source.asked[1] == Checkpoint(1, feed="asset")
        await hub.close()


@dataclass
class GroupingSource(FakeSource):
    """A FakeSource that also serves grouped first pages, recording each group's size."""

    groups: list[int] = field(default_factory=list)
    limits: list[int] = field(default_factory=list)
    fail_groups: bool = False

    async def pull_group(self, requests, limit):
        self.groups.append(len(requests))
        self.limits.append(limit)
        await asyncio.sleep(0.01)  # a transaction's worth of waiting: others queue meanwhile
        if self.fail_groups:
            raise RuntimeError("deadlock detected")
        results = []
        for sub, since in requests:
            if sub.device_id == REFUSED:
                results.append(SubscriptionError("no such device", "NOT_FOUND"))
            elif sub.device_id == ALONE:
                results.append(None)
            else:
                results.append(await FakeSource.pull(self, sub, since, limit))
        return results


REFUSED = uuid4()
ALONE = uuid4()


class TestSpreadAndGrouped:
    async def test_a_batch_for_many_is_handed_out_over_several_iterations_in_order(self):
        """With a fan-out chunk of 3 (a batch spread over several loop iterations) 20
        subscribers still get every batch once, in order, while pokes keep coming."""
        source = FakeSource(rows=[Row(B, 1)])
        hub = Hub(
            source,
            encode_checkpoint=lambda c: str(c.seq),
            recheck_seconds=0,
            fanout_chunk=3,
            catch_up_group=1,
        )
        sinks = [FakeSink() for _ in range(20)]
        for sink in sinks:
            hub.add(subscriber(sink))
        await until(lambda: all(seqs(s) == [1] for s in sinks))
        for seq in range(2, 7):
            source.rows.append(Row(B, seq))
            hub.poke(A)
            await asyncio.sleep(0)
        await until(lambda: all(len(seqs(s)) == 6 for s in sinks))
        await settle()
        for sink in sinks:
            assert seqs(sink) == [1, 2, 3, 4, 5, 6]
        await hub.close()

    async def test_subscribers_joining_together_share_grouped_first_pages(self):
        """Twelve joining at once with one pull slot: a few groups, each gets its page once;
        a refused member fails alone; a failed group falls back to single pulls."""
        source = GroupingSource(rows=[Row(B, 1), Row(C, 2)])
        hub = Hub(
            source,
            encode_checkpoint=lambda c: str(c.seq),
            recheck_seconds=0,
            concurrent_pulls=1,
            catch_up_group=5,
        )
        sinks = [FakeSink() for _ in range(12)]
        for sink in sinks:
            hub.add(subscriber(sink))
        refused = FakeSink()
        hub.add(subscriber(refused, device=REFUSED))
        await until(lambda: all(seqs(s) == [1, 2] for s in sinks) and refused.errors)
        assert max(source.groups) > 1, source.groups
        assert sum(source.groups) == 13, source.groups
        assert source.pulls == 12  # one page each, inside the groups
        assert [e.code for e in refused.errors] == ["NOT_FOUND"]
        # Live after the grouped catch-up: exactly once.
        source.rows.append(Row(B, 3))
        hub.poke(A)
        await until(lambda: all(seqs(s) == [1, 2, 3] for s in sinks))
        source.fail_groups = True
        late = FakeSink()
        hub.add(subscriber(late))
        await until(lambda: seqs(late) == [1, 2, 3])
        await hub.close()

    async def test_joins_one_after_another_gather_and_a_lone_join_goes_at_once(self):
        """A subscriber joining alone is pulled at once; others joining a few ms apart (a
        storm paced by its handshakes) gather for ``catch_up_linger`` into groups; one the
        group leaves alone (None) pulls alone; each gets its page once."""
        source = GroupingSource(rows=[Row(B, 1), Row(C, 2)])
        hub = Hub(
            source,
            encode_checkpoint=lambda c: str(c.seq),
            recheck_seconds=0,
            catch_up_group=64,
            catch_up_linger=0.1,
        )
        first = FakeSink()
        started = asyncio.get_running_loop().time()
        hub.add(subscriber(first))
        await until(lambda: seqs(first) == [1, 2])
        assert asyncio.get_running_loop().time() - started < 0.1
        assert source.groups == [1]
        sinks = [FakeSink() for _ in range(10)]
        for sink in sinks:
            hub.add(subscriber(sink))
            await asyncio.sleep(0.005)
        alone = FakeSink()
        hub.add(subscriber(alone, device=ALONE))
        await until(lambda: all(seqs(s) == [1, 2] for s in [*sinks, alone]))
        assert len(source.groups) <= 3, source.groups
        assert sum(source.groups) == 12, source.groups
        # Eleven pages inside groups, one alone for ALONE.
        assert source.pulls == 12
        await settle()
        assert all(seqs(s) == [1, 2] for s in [first, *sinks, alone])
        await hub.close()


class TestLiveFirst:
    async def test_catch_up_waits_while_a_live_read_is_under_way(self):
        """A subscriber joining while the tenant's live read runs is pulled once that read
        (and its hand-out) is done, not meanwhile."""
        source = FakeSource(rows=[Row(B, 1)])
        hub = Hub(source, encode_checkpoint=lambda c: str(c.seq), recheck_seconds=0, live_first=5.0)
        first = FakeSink()
        hub.add(subscriber(first))
        await until(lambda: seqs(first) == [1])
        source.read_gate = asyncio.Event()
        source.rows.append(Row(B, 2))
        hub.poke(A)
        await settle()
        late = FakeSink()
        hub.add(subscriber(late))
        await settle()
        assert source.pulls == 1, "pulled while the live read was under way"
        source.read_gate.set()
        await until(lambda: seqs(first) == [1, 2] and seqs(late) == [1, 2])
        assert source.pulls == 2
        await hub.close()

    async def test_catch_up_waits_no_longer_than_live_first(self):
        """Reads that never end hold catch-up back for ``live_first`` at most."""
        source = FakeSource(rows=[Row(B, 1)])
        hub = Hub(
            source, encode_checkpoint=lambda c: str(c.seq), recheck_seconds=0, live_first=0.05
        )
        first = FakeSink()
        hub.add(subscriber(first))
        await until(lambda: seqs(first) == [1])
        source.read_gate = asyncio.Event()
        hub.poke(A)
        await settle()
        late = FakeSink()
        hub.add(subscriber(late))
        await until(lambda: seqs(late) == [1], seconds=1.0)
        source.read_gate.set()
        await hub.close()

    async def test_each_catch_up_page_is_pulled_and_put_inside_the_sinks_pace(self):
        """The sink's pace is entered before a page is pulled and left once it is queued,
        page after page."""
        source = FakeSource(rows=[Row(B, 1), Row(B, 2)])
        source.scripted = [
            PulledPage([Row(B, 1)], Checkpoint(1), True, False, None),
            PulledPage([Row(B, 2)], Checkpoint(2), False, False, None),
        ]
        hub = Hub(source, encode_checkpoint=lambda c: str(c.seq), recheck_seconds=0)
        sink = FakeSink()
        hub.add(subscriber(sink))
        await until(lambda: seqs(sink) == [1, 2])
        assert sink.events == ["pace", "put", "paced", "pace", "put", "paced"]
        await hub.close()

    async def test_a_subscriber_leaving_mid_pull_does_not_cancel_the_pull(self):
        """The pull runs to its end (its connection is not cut off half-way); the page goes
        nowhere."""
        source = FakeSource(rows=[Row(B, 1)])
        release = asyncio.Event()
        ended: list[str] = []

        async def slow() -> None:
            try:
                await release.wait()
                ended.append("finished")
            except asyncio.CancelledError:
                ended.append("cancelled")
                raise

        source.on_pull = slow
        hub = Hub(
            source, encode_checkpoint=lambda c: str(c.seq), recheck_seconds=0, catch_up_group=1
        )
        sink = FakeSink()
        sub = subscriber(sink)
        hub.add(sub)
        await until(lambda: source.pulls == 1)
        hub.remove(sub)
        await settle()
        assert ended == []
        release.set()
        await until(lambda: ended == ["finished"])
        await settle()
        assert sink.batches == []
        await hub.close()

    async def test_grouped_first_pages_share_a_row_budget(self):
        """Ten joining together: each member's first page is cut to its share of
        ``catch_up_group_rows``; one joining alone gets all of them (within a page)."""
        source = GroupingSource(rows=[Row(B, 1)])
        hub = Hub(
            source,
            encode_checkpoint=lambda c: str(c.seq),
            recheck_seconds=0,
            page_size=500,
            concurrent_pulls=1,
            catch_up_group=64,
            catch_up_group_rows=100,
        )
        first = FakeSink()
        hub.add(subscriber(first))
        await until(lambda: seqs(first) == [1])
        sinks = [FakeSink() for _ in range(10)]
        for sink in sinks:
            hub.add(subscriber(sink))
        await until(lambda: all(seqs(s) == [1] for s in sinks))
        assert source.groups == [1, 10], source.groups
        assert source.limits == [100, 10]
        await hub.close()
