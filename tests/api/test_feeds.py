"""Per-type feeds (sync contract v2) through HTTP and WebSocket: the `types` filter, a
checkpoint per feed, concurrent feeds of one device, resets, resuming without `since`, and
every bad input answered clearly."""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest

from db.commands import sync as commands
from db.compaction import compact
from db.entities import EntityType
from schema.node import from_global_id
from sync import checkpoint as checkpoints
from tests.api.credential_queries import make_credential
from tests.api.queries import UPDATE_CUSTOMER, make_tree
from tests.api.sync_client import PULL, Device
from tests.api.ws_client import CHANGES, Socket
from tests.conftest import Tenant, new_tenant

TYPES = ["CUSTOMER", "CONTACT", "FACILITY", "ASSET", "CREDENTIAL"]

STATE = """query($d: ID!) { syncState(deviceId: $d) { status checkpoint headCheckpoint lag
  lastSyncedAt { dataType at } } }"""

SELECT = """mutation($d: ID!, $mode: SelectionMode!, $ids: [ID!]) {
  selectCustomers(deviceId: $d, mode: $mode, customerIds: $ids) { __typename } }"""


def uuid_of(global_id: str) -> str:
    return str(from_global_id(global_id)[1])


def seq_of(checkpoint: str) -> int:
    return checkpoints.decode(checkpoint).seq


async def technician(tenant: Tenant, **caps: bool) -> Device:
    return await Device(await tenant.add_user("TECHNICIAN", **caps)).register()


async def everything(tenant: Tenant, n: int, prefix: str = "T") -> list[dict[str, str]]:
    """``n`` customer trees (customer, contact, facility, asset), each with a credential."""
    trees = []
    for i in range(n):
        ids = await make_tree(tenant.admin, name=f"{prefix}{i}")
        await make_credential(tenant.admin, {"customerId": ids["customer"]})
        trees.append(ids)
    return trees


async def pull_errors(device: Device, **variables: Any) -> list[dict[str, Any]]:
    return await device.api.errors(PULL, {"d": device.id, "limit": 100, **variables})


class TestPerTypeFeeds:
    async def test_concurrent_per_type_feeds_converge_to_the_all_types_feed(self, tenant):
        """One device running a feed per record type at once (small pages) ends, after
        every round of edits, deletes and new records, holding exactly what a device on
        the all-types feed holds; its sync state then says SYNCED with no lag and a last
        sync per type."""
        trees = await everything(tenant, 3)
        user = await tenant.add_user("TECHNICIAN")
        per_type = await Device(user).register()
        whole = await Device(user).register()
        for round_ in range(3):
            await asyncio.gather(*(per_type.sync(limit=2, types=[t]) for t in TYPES))
            await whole.sync(limit=3)
            assert per_type.store == whole.store, round_
            assert len(whole.store) == 5 * len(trees) - round_  # one asset deleted a round
            # Meanwhile: an edit, a delete, a new tree.
            await tenant.admin(
                UPDATE_CUSTOMER,
                {"id": trees[round_]["customer"], "input": {"businessName": f"R{round_}"}},
            )
            await tenant.admin(
                "mutation($id: ID!) { deleteAsset(id: $id) { __typename } }",
                {"id": trees[round_]["asset"]},
            )
            trees += await everything(tenant, 1, prefix=f"N{round_}")
        await asyncio.gather(*(per_type.sync(limit=2, types=[t]) for t in TYPES))
        await whole.sync()
        assert per_type.store == whole.store
        assert len(whole.store) == 5 * len(trees) - 3
        state = (await per_type.api(STATE, {"d": per_type.id}))["syncState"]
        assert state["status"] == "SYNCED"
        assert state["lag"] == 0
        assert seq_of(state["checkpoint"]) == seq_of(state["headCheckpoint"])
        assert sorted(d["dataType"] for d in state["lastSyncedAt"]) == sorted(TYPES)

    async def test_sync_state_follows_the_slowest_type(self, tenant):
        """A device's checkpoint and lag are its slowest feed's: with the asset feed
        behind, it is BEHIND whatever the customer feed did; types it never pulled do not
        count."""
        ids = await make_tree(tenant.admin)
        device = await technician(tenant)
        await device.sync(types=["CUSTOMER"])
        await device.sync(types=["ASSET"])
        asset_checkpoint = device.feeds[("ASSET",)]
        state = (await device.api(STATE, {"d": device.id}))["syncState"]
        assert state["status"] == "SYNCED"
        assert sorted(d["dataType"] for d in state["lastSyncedAt"]) == ["ASSET", "CUSTOMER"]
        await tenant.admin(UPDATE_CUSTOMER, {"id": ids["customer"], "input": {"lastName": "X"}})
        await device.sync(types=["CUSTOMER"])
        state = (await device.api(STATE, {"d": device.id}))["syncState"]
        assert state["status"] == "BEHIND"
        assert seq_of(state["checkpoint"]) == seq_of(asset_checkpoint)
        assert state["lag"] == seq_of(state["headCheckpoint"]) - seq_of(asset_checkpoint) > 0
        await device.sync(types=["ASSET"])
        state = (await device.api(STATE, {"d": device.id}))["syncState"]
        assert (state["status"], state["lag"]) == ("SYNCED", 0)

    async def test_every_page_advances_even_an_empty_one(self, tenant):
        """A feed with nothing of its types still moves to the head on every page."""
        await make_tree(tenant.admin)
        device = await technician(tenant)
        first = await device.pull_page(types=["CREDENTIAL"])
        assert first["changes"] == []
        assert not first["hasMore"]
        state = (await device.api(STATE, {"d": device.id}))["syncState"]
        assert seq_of(first["checkpoint"]) == seq_of(state["headCheckpoint"]) > 0
        await make_tree(tenant.admin, name="More")
        second = await device.pull_page(types=["CREDENTIAL"])
        assert second["changes"] == []
        assert seq_of(second["checkpoint"]) > seq_of(first["checkpoint"])
        assert checkpoints.decode(second["checkpoint"]).feed == "credential"

    async def test_a_checkpoint_belongs_to_its_feed(self, tenant):
        """A checkpoint resumes its own feed; sending it with other types (or none) is
        refused, saying which feed it belongs to. Listing every type is the all-types
        feed."""
        await make_tree(tenant.admin)
        device = await technician(tenant)
        await device.sync(types=["ASSET", "FACILITY"])
        mine = device.feeds[("ASSET", "FACILITY")]
        assert checkpoints.decode(mine).feed == "asset+facility"
        # The same feed, types in another order: fine.
        again = await device.api(
            PULL, {"d": device.id, "since": mine, "limit": 10, "types": ["FACILITY", "ASSET"]}
        )
        assert again["pull"]["changes"] == []
        for types in (["ASSET"], None, TYPES):
            [error] = await pull_errors(device, since=mine, types=types)
            assert error["extensions"]["code"] == "BAD_USER_INPUT", error
            assert "belongs to the feed of types [ASSET, FACILITY]" in error["message"], error
        await device.sync()
        listed = await device.api(
            PULL, {"d": device.id, "since": device.checkpoint, "limit": 10, "types": TYPES}
        )
        assert listed["pull"]["changes"] == []
        assert checkpoints.decode(listed["pull"]["checkpoint"]).feed == "*"

    async def test_a_v1_checkpoint_is_read_as_the_all_types_feed(self, tenant):
        """Checkpoints of contract v1 (no feed) still resume the all-types feed."""
        ids = await make_tree(tenant.admin)
        device = await technician(tenant)
        await device.sync()
        seq = seq_of(device.checkpoint)
        v1 = base64.urlsafe_b64encode(f"v1.{seq}.-1..{seq}".encode()).decode().rstrip("=")
        await tenant.admin(UPDATE_CUSTOMER, {"id": ids["customer"], "input": {"lastName": "V"}})
        page = (await device.api(PULL, {"d": device.id, "since": v1, "limit": 10}))["pull"]
        assert [c["recordId"] for c in page["changes"]] == [uuid_of(ids["customer"])]
        [error] = await pull_errors(device, since=v1, types=["ASSET"])
        assert error["extensions"]["code"] == "BAD_USER_INPUT"

    async def test_feeds_of_one_device_do_not_wait_for_each_other(self, db, tenant):
        """While one feed of a device builds its page (its device lock held), another feed
        of the same device pulls at once; a selection change waits until that page is
        done, so a page never sees half a selection change."""
        await make_tree(tenant.admin)
        device = await technician(tenant, syncByCustomer=True)
        me = uuid.UUID(uuid_of((await device.api("{ me { id } }"))["me"]["id"]))
        device_id = uuid.UUID(uuid_of(device.id))
        async with db.tenant(tenant.org_id) as conn:
            await commands.lock_for_feed(conn, tenant.org_id, me, device_id)
            page = await asyncio.wait_for(device.pull_page(types=["ASSET"]), 10)
            assert len(page["changes"]) == 1
            selection = asyncio.create_task(device.api(SELECT, {"d": device.id, "mode": "ALL"}))
            await asyncio.sleep(0.5)
            assert not selection.done()
        assert (await asyncio.wait_for(selection, 10))["selectCustomers"]["__typename"] == (
            "Device"
        )

    async def test_concurrent_bookkeeping_keeps_every_types_position(self, db, tenant):
        """Two feeds of one device finishing at the same time each record their own types:
        the later one waits for the earlier one's commit and merges into what it wrote,
        so no type's position or last sync is lost."""
        await make_tree(tenant.admin)
        device = await technician(tenant)
        me = uuid.UUID(uuid_of((await device.api("{ me { id } }"))["me"]["id"]))
        device_id = uuid.UUID(uuid_of(device.id))
        async with db.tenant(tenant.org_id) as conn:
            await commands.pull(
                conn,
                org_id=tenant.org_id,
                user_id=me,
                device_id=device_id,
                may_select=False,
                since=checkpoints.Checkpoint(feed="asset"),
                limit=100,
                types=frozenset({EntityType.ASSET}),
            )
            other = asyncio.create_task(device.pull_page(types=["CUSTOMER"]))
            await asyncio.sleep(0.5)
            assert not other.done()  # its bookkeeping waits for this one's commit
        await asyncio.wait_for(other, 10)
        state = (await device.api(STATE, {"d": device.id}))["syncState"]
        assert sorted(d["dataType"] for d in state["lastSyncedAt"]) == ["ASSET", "CUSTOMER"]
        assert state["status"] == "SYNCED"

    async def test_reset_after_compaction_restarts_only_that_feed(self, db, tenant):
        """A feed whose checkpoint fell behind the compaction horizon gets its first page
        again marked `reset`: the device drops what it holds of the feed's types and ends
        with exactly the live records."""
        trees = await everything(tenant, 2)
        device = await technician(tenant)
        await device.sync(types=["ASSET"])
        await device.sync(types=["CUSTOMER"])
        stale = device.feeds[("ASSET",)]
        await tenant.admin(
            "mutation($id: ID!) { deleteAsset(id: $id) { __typename } }", {"id": trees[0]["asset"]}
        )
        async with db.tenant(tenant.org_id) as conn:
            await compact(conn, tenant.org_id, device_ttl=timedelta(seconds=0))
        device.store[("asset", str(uuid.uuid4()))] = {"data": {}, "version": {}, "customerId": ""}
        page = await device.pull_page(types=["ASSET"])
        assert page["reset"] is True
        assert [c["recordId"] for c in page["changes"]] == [uuid_of(trees[1]["asset"])]
        assert checkpoints.decode(page["checkpoint"]).feed == "asset"
        assert sorted(k[0] for k in device.store) == ["asset", "customer", "customer"]
        assert seq_of(stale) < seq_of(page["checkpoint"])
        assert (await device.pull_page(types=["ASSET"]))["reset"] is False


class TestBadInput:
    async def test_filters_that_name_no_type_or_an_unknown_one(self, tenant):
        """An empty filter and an unknown type are BAD_USER_INPUT, inline or as variables."""
        device = await technician(tenant)
        [error] = await pull_errors(device, types=[])
        assert error["extensions"]["code"] == "BAD_USER_INPUT", error
        assert "at least one record type" in error["message"]
        errors = await pull_errors(device, types=["ASSET", "INVOICE"])
        assert [e["extensions"]["code"] for e in errors] == ["BAD_USER_INPUT"], errors
        errors = await device.api.errors(
            "query($d: ID!) { pull(deviceId: $d, types: [INVOICE]) { checkpoint } }",
            {"d": device.id},
        )
        assert [e["extensions"]["code"] for e in errors] == ["BAD_USER_INPUT"], errors

    async def test_checkpoints_never_issued(self, tenant):
        """Garbage, a position ahead of the server, a feed of unknown types and a feed name
        out of order are refused as not issued by this server."""
        device = await technician(tenant)

        def forged(raw: str) -> str:
            return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

        for bad in (
            "garbage",
            forged("v2.99999.1.-1..99999.*"),
            forged("v2.0.1.-1..0.invoice"),
            forged("v2.0.1.-1..0.customer+asset"),
            forged("v2.0.7.-1..0.*"),
        ):
            [error] = await pull_errors(device, since=bad)
            assert error["extensions"]["code"] == "BAD_USER_INPUT", (bad, error)

    async def test_another_users_device(self, tenant):
        """A feed of someone else's device is NOT_FOUND, whatever the filter."""
        mine = await technician(tenant)
        other = Device(await tenant.add_user("TECHNICIAN"), id=mine.id)
        for types in (None, ["ASSET"]):
            [error] = await pull_errors(other, types=types)
            assert error["extensions"]["code"] == "NOT_FOUND", error


@pytest.fixture
async def live(db, server_pair) -> Tenant:
    """A fresh tenant whose admin talks to instance A (subscriptions need real commits)."""
    async with httpx.AsyncClient(base_url=server_pair[0].url, timeout=60) as client:
        yield await new_tenant(db, client)


def changes_of(batches: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(c["entity"], c["op"]) for b in batches for c in b["changes"]]


class TestSubscriptionFeeds:
    async def test_a_typed_subscription_and_resuming_without_since(self, server_pair, live):
        """A subscription with `types` gets only those types, at catch-up and live, with
        checkpoints of its feed. Without `since` it resumes where the server last saw the
        device's feed of those types; `since: null` starts from the beginning."""
        await make_tree(live.admin, name="A")
        device = await technician(live)
        socket = await Socket.open(server_pair[0].ws_url, device.api.token)
        await socket.subscribe("1", device.id, None, types=["ASSET"])
        [catch_up] = await socket.collect("1", lambda bs: len(bs) >= 1)
        assert changes_of([catch_up]) == [("ASSET", "UPSERT")]
        assert checkpoints.decode(catch_up["checkpoint"]).feed == "asset"
        assert catch_up["reset"] is False
        await make_tree(live.admin, name="B")
        [batch] = await socket.collect("1", lambda bs: len(bs) >= 1)
        assert changes_of([batch]) == [("ASSET", "UPSERT")]
        assert checkpoints.decode(batch["checkpoint"]).feed == "asset"
        await socket.send({"id": "1", "type": "complete"})
        # Offline: another tree. Resuming from the server's position (the catch-up's end)
        # sends what followed it, and only assets.
        third = await make_tree(live.admin, name="C")
        await socket.subscribe("2", device.id, types=["ASSET"], resume=True)
        [resumed] = await socket.collect("2", lambda bs: len(bs) >= 1)
        assert resumed["reset"] is False
        ids = [c["recordId"] for c in resumed["changes"]]
        assert uuid_of(third["asset"]) in ids
        assert len(ids) == 2
        # Explicit null: the whole feed again.
        await socket.subscribe("3", device.id, None, types=["ASSET"])
        [whole] = await socket.collect("3", lambda bs: len(bs) >= 1)
        assert changes_of([whole]) == [("ASSET", "UPSERT")] * 3
        # A feed whose types the device never pulled starts from the beginning.
        await socket.subscribe("4", device.id, types=["FACILITY"], resume=True)
        [facilities] = await socket.collect("4", lambda bs: len(bs) >= 1)
        assert (changes_of([facilities]), facilities["reset"]) == (
            [("FACILITY", "UPSERT")] * 3,
            False,
        )
        await socket.close()

    async def test_resuming_a_feed_partly_pulled_restarts_it_marked_reset(self, server_pair, live):
        """Resuming a feed of types the device pulled only some of starts it from the
        beginning, marked reset (a start from the beginning sends no deletes)."""
        await make_tree(live.admin)
        device = await technician(live)
        await device.sync(types=["ASSET"])
        socket = await Socket.open(server_pair[0].ws_url, device.api.token)
        await socket.subscribe("1", device.id, types=["ASSET", "FACILITY"], resume=True)
        [first] = await socket.collect("1", lambda bs: len(bs) >= 1)
        assert first["reset"] is True
        assert sorted(changes_of([first])) == [("ASSET", "UPSERT"), ("FACILITY", "UPSERT")]
        await socket.close()

    async def test_a_subscription_from_behind_the_horizon_starts_with_a_reset(
        self, server_pair, live, db
    ):
        """The subscription's first batch carries `reset` when its checkpoint is older
        than the compaction horizon, then the feed goes on live."""
        trees = [await make_tree(live.admin, name=f"R{i}") for i in range(2)]
        device = await technician(live)
        await device.sync()
        stale = device.checkpoint
        await live.admin(
            "mutation($id: ID!) { deleteAsset(id: $id) { __typename } }", {"id": trees[0]["asset"]}
        )
        async with db.tenant(live.org_id) as conn:
            await compact(conn, live.org_id, device_ttl=timedelta(seconds=0))
        socket = await Socket.open(server_pair[0].ws_url, device.api.token)
        await socket.subscribe("1", device.id, stale)
        [first] = await socket.collect("1", lambda bs: len(bs) >= 1)
        assert first["reset"] is True
        assert len(first["changes"]) == 7
        assert {c["op"] for c in first["changes"]} == {"UPSERT"}
        await make_tree(live.admin, name="Later")
        batches = await socket.collect("1", lambda bs: sum(len(b["changes"]) for b in bs) >= 4)
        assert all(b["reset"] is False for b in batches)
        await socket.close()

    async def test_bad_feeds_are_errors_of_their_subscription(self, server_pair, live):
        """An empty filter, an unknown type, another feed's checkpoint, a forged one and
        another user's device each end only their own subscription, with a clear code."""
        await make_tree(live.admin)
        device = await technician(live)
        await device.sync(types=["ASSET"])
        someone_elses = await technician(live)
        socket = await Socket.open(server_pair[0].ws_url, device.api.token)
        cases = {
            "empty": ({"d": device.id, "types": []}, "BAD_USER_INPUT"),
            "unknown": ({"d": device.id, "types": ["INVOICE"]}, "BAD_USER_INPUT"),
            "other-feed": (
                {"d": device.id, "since": device.feeds[("ASSET",)], "types": ["CUSTOMER"]},
                "BAD_USER_INPUT",
            ),
            "forged": ({"d": device.id, "since": "Zm9yZ2Vk"}, "BAD_USER_INPUT"),
            "not-mine": ({"d": someone_elses.id, "types": ["ASSET"]}, "NOT_FOUND"),
        }
        messages = {}
        for op_id, (variables, code) in cases.items():
            await socket.send(
                {
                    "id": op_id,
                    "type": "subscribe",
                    "payload": {"query": CHANGES, "variables": variables},
                }
            )
            message = await socket.recv()
            assert (message["id"], message["type"]) == (op_id, "error"), message
            assert message["payload"][0]["extensions"]["code"] == code, message
            messages[op_id] = message["payload"][0]["message"]
        assert "belongs to the feed of types [ASSET]" in messages["other-feed"]
        assert "not a checkpoint issued by this server" in messages["forged"]
        await socket.subscribe("ok", device.id, types=["ASSET"], resume=True)
        [batch] = await socket.collect("ok", lambda bs: len(bs) >= 1)
        assert batch["changes"] == []
        await socket.close()
