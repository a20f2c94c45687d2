"""Grouped catch-up pages (``db/catch_up.py``, ``db.pull.pull_pages``) against single pulls.

A group reads every member's page with one statement planned once for all of them; what
each member gets must be exactly what its own pull gets (``DatabaseSource.pull``): the same
changes in the same order with the same data, the same checkpoint, ``hasMore``, reset and
final selection, and the same bookkeeping on its device. The devices here cover what
changes a page: ALL and SELECTED, first pulls and resumed ones (backfills of customers
selected or re-enabled since, evictions of customers unselected or archived since, a
switch from ALL to SELECTED), per-type feeds, pages of one row, a checkpoint from before
the compaction horizon.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import orjson
import pytest
from sqlalchemy import select, update

from db.catch_up import pull_group
from db.live import DatabaseSource
from db.tables import devices, orgs, users
from sync import checkpoint as checkpoints
from sync.checkpoint import Checkpoint
from sync.hub import PulledPage, Subscriber, SubscriptionError
from tests.api.queries import ARCHIVE_CUSTOMER, CREATE_CONTACT, REENABLE_CUSTOMER, make_tree
from tests.api.sync_client import Device
from tests.api.test_subscriptions import uuid_of

BOOKKEEPING = ("feed_positions", "checkpoint_seq", "head_at_last_pull", "selection_mode")


class Sink:
    group_key = None


def shape(page: PulledPage | SubscriptionError | None) -> Any:
    """What a subscriber gets from a page (data as the JSON it encodes to)."""
    if not isinstance(page, PulledPage):
        return page if page is None else (page.code, str(page))
    changes = [
        (
            c.entity,
            c.record_id,
            c.customer_id,
            c.deleted,
            c.version,
            c.seq,
            None if c.data is None else orjson.loads(orjson.dumps(c.data)),
            c.evict,
        )
        for c in page.changes
    ]
    return changes, page.checkpoint, page.has_more, page.reset, page.selection


async def device_rows(db, org_id: UUID, ids: list[UUID]) -> dict[UUID, dict[str, Any]]:
    async with db.tenant(org_id) as conn:
        result = await conn.execute(
            select(devices).where(devices.c.org_id == org_id, devices.c.id.in_(ids))
        )
        return {r["id"]: dict(r) for r in result.mappings()}


async def restore(db, org_id: UUID, rows: dict[UUID, dict[str, Any]]) -> None:
    async with db.tenant(org_id) as conn:
        for device_id, row in rows.items():
            await conn.execute(
                update(devices)
                .where(devices.c.org_id == org_id, devices.c.id == device_id)
                .values(
                    {
                        k: row[k]
                        for k in (*BOOKKEEPING, "last_synced", "last_pull_at", "mode_since_seq")
                    }
                )
            )


async def single_and_grouped(
    db, org_id: UUID, requests: list[tuple[Subscriber, Checkpoint | None]], limit: int
) -> tuple[list[Any], list[Any]]:
    """Each request pulled alone, then all of them as one group, from the same device
    rows; returns (pages, bookkeeping) of both ways."""
    ids = sorted({sub.device_id for sub, _ in requests})
    before = await device_rows(db, org_id, ids)
    source = DatabaseSource(db)
    single = []
    for sub, since in requests:
        try:
            single.append(shape(await source.pull(sub, since, limit)))
        except SubscriptionError as exc:
            single.append(shape(exc))
    after_single = await device_rows(db, org_id, ids)
    await restore(db, org_id, before)
    grouped = [shape(r) for r in await pull_group(db, requests, limit)]
    after_group = await device_rows(db, org_id, ids)
    await restore(db, org_id, before)

    def books(rows):
        return {
            d: ({k: r[k] for k in BOOKKEEPING}, sorted(r["last_synced"]), r["last_pull_at"] is None)
            for d, r in rows.items()
        }

    return [single, books(after_single)], [grouped, books(after_group)]


@pytest.fixture
async def scene(db, tenant):
    """A tenant whose devices stand in every situation a page depends on."""
    admin = tenant.admin
    trees = [await make_tree(admin, f"T{n}") for n in range(5)]
    customer = [uuid_of(t["customer"]) for t in trees]
    fresh_all = await Device(admin).register()
    fresh_selected = await Device(admin).register()
    await fresh_selected.select("SELECTED", [customer[0], customer[2]])
    synced_all = await Device(admin).register()
    await synced_all.sync()
    synced_selected = await Device(admin).register()
    await synced_selected.select("SELECTED", [customer[0], customer[1], customer[3]])
    await synced_selected.sync()
    switched = await Device(admin).register()
    await switched.sync()
    typed = await Device(admin).register()
    await typed.sync(types=["CUSTOMER", "ASSET"])
    # After those checkpoints: a customer archived, one archived and re-enabled, one
    # unselected and one selected, a switch from ALL to SELECTED, a new contact.
    await admin(ARCHIVE_CUSTOMER, {"id": trees[1]["customer"]})
    await admin(ARCHIVE_CUSTOMER, {"id": trees[3]["customer"]})
    await admin(REENABLE_CUSTOMER, {"id": trees[3]["customer"]})
    await synced_selected.select("SELECTED", [customer[0], customer[4]])
    await switched.select("SELECTED", [customer[2]])
    await admin(CREATE_CONTACT, {"input": {"customerId": trees[0]["customer"], "firstName": "B"}})
    await make_tree(admin, "Late")
    async with db.tenant(tenant.org_id) as conn:
        user = (await conn.execute(select(users).where(users.c.email == tenant.admin_email))).one()

    def sub(device: Device, types: frozenset[str] | None = None) -> Subscriber:
        feed = "all" if types is None else checkpoints.feed_of(sorted(types), [])
        return Subscriber(
            tenant.org_id,
            user.id,
            UUID(uuid_of(device.id)),
            user.token_epoch,
            Sink(),
            since=None,
            types=types,
            feed=feed,
        )

    def since(device: Device, types: list[str] | None = None) -> Checkpoint:
        text = device.checkpoint if types is None else device.feeds[tuple(sorted(types))]
        assert text is not None
        return checkpoints.decode(text)

    typed_feed = frozenset({"customer", "asset"})
    return {
        "org_id": tenant.org_id,
        "requests": [
            (sub(fresh_all), None),
            (sub(fresh_selected), Checkpoint()),
            (sub(synced_all), since(synced_all)),
            (sub(synced_selected), since(synced_selected)),
            (sub(switched), since(switched)),
            (sub(typed, typed_feed), since(typed, ["CUSTOMER", "ASSET"])),
            (sub(Device(admin, id=fresh_all.id), frozenset({"contact"})), None),
        ],
        "user": user,
    }


class TestGroupedPagesMatchSinglePulls:
    @pytest.mark.parametrize("limit", [1, 2, 1000])
    async def test_every_member_gets_its_own_pull(self, db, scene, limit):
        """Pages of one and two rows (mid-pull checkpoints, bookkeeping that records only
        the pull) and whole pages: each member's page, checkpoint, reset and selection,
        and its device's bookkeeping, are its single pull's."""
        org_id, requests = scene["org_id"], scene["requests"]
        # One member per device in a group (a second one is pulled alone: see below).
        firsts = requests[:-1]
        single, grouped = await single_and_grouped(db, org_id, firsts, limit)
        for n, (one, group) in enumerate(zip(single[0], grouped[0], strict=True)):
            assert group == one, n
        assert grouped[1] == single[1]
        pages = [page for page in single[0] if isinstance(page, tuple)]
        assert any(change[7] for page in pages for change in page[0]), "no eviction"

    async def test_a_member_resumes_through_pages_as_a_single_pull_does(self, db, scene):
        """A pull continued from each member's mid-pull checkpoint, page after page, as a
        group and alone: the same pages to the end."""
        org_id, requests = scene["org_id"], scene["requests"][:-1]
        current = list(requests)
        for _ in range(40):
            single, grouped = await single_and_grouped(db, org_id, current, 3)
            assert grouped == single
            current = [
                (sub, page[1])
                for (sub, _), page in zip(current, single[0], strict=True)
                if isinstance(page, tuple) and page[2]
            ]
            if not current:
                return
        pytest.fail("pulls did not end")

    async def test_a_checkpoint_older_than_the_horizon_resets(self, db, scene):
        """A member from before the compaction horizon starts over, marked reset, as alone."""
        org_id, requests = scene["org_id"], scene["requests"]
        horizon = max(since.seq for _, since in requests[2:4] if since is not None) + 1
        async with db.tenant(org_id) as conn:
            await conn.execute(
                update(orgs).where(orgs.c.org_id == org_id).values(compacted_seq=horizon)
            )
        try:
            single, grouped = await single_and_grouped(db, org_id, requests[2:4], 1000)
        finally:
            async with db.tenant(org_id) as conn:
                await conn.execute(
                    update(orgs).where(orgs.c.org_id == org_id).values(compacted_seq=0)
                )
        assert grouped == single
        assert all(page[3] for page in single[0])

    async def test_members_the_group_cannot_serve_are_left_to_pull_alone(self, db, scene):
        """A second member on one device (its bookkeeping merges into the row the first
        leaves) and a device whose owner lost the sync-by-customer capability (its pull
        switches it to ALL under a stronger lock) get None; refusals are their own."""
        org_id, requests = scene["org_id"], scene["requests"]
        user = scene["user"]
        duplicate = requests[-1]
        ahead = (requests[2][0], Checkpoint(10**9))
        stranger = Subscriber(org_id, user.id, UUID(int=7), user.token_epoch, Sink(), None)
        revoked = Subscriber(
            org_id, user.id, requests[1][0].device_id, user.token_epoch + 1, Sink(), None
        )
        results = await pull_group(
            db, [requests[0], duplicate, ahead, (stranger, None), (revoked, None)], 1000
        )
        assert isinstance(results[0], PulledPage)
        assert results[1] is None
        codes = [r.code if isinstance(r, SubscriptionError) else r for r in results[2:]]
        assert codes == ["BAD_USER_INPUT", "NOT_FOUND", "UNAUTHENTICATED"]
        async with db.tenant(org_id) as conn:
            await conn.execute(
                update(users)
                .where(users.c.id == user.id)
                .values(role="TECHNICIAN", can_sync_by_customer=False)
            )
        try:
            selected = requests[1]
            [result] = await pull_group(db, [selected], 1000)
            assert result is None
        finally:
            async with db.tenant(org_id) as conn:
                await conn.execute(
                    update(users)
                    .where(users.c.id == user.id)
                    .values(role=user.role, can_sync_by_customer=user.can_sync_by_customer)
                )
