"""Evictions as records (sync contract v2): a customer leaving a device's view arrives as
EVICT changes for the customer and every live record under it, of the feed's types, paged
like other changes; a client applying them ends holding exactly the server's view."""

from __future__ import annotations

from typing import Any

from db.seed import seed_records
from schema.node import from_global_id
from sync import checkpoint as checkpoints
from tests.api.credential_queries import make_credential
from tests.api.queries import ARCHIVE_CUSTOMER, REENABLE_CUSTOMER, make_tree
from tests.api.sync_client import Device
from tests.conftest import Api, Tenant

DELETE_ASSET = "mutation($id: ID!) { deleteAsset(id: $id) { __typename } }"


def uuid_of(global_id: str) -> str:
    return str(from_global_id(global_id)[1])


async def tree(tenant: Tenant, name: str) -> dict[str, str]:
    """A customer with a contact, a facility, an asset and a credential (raw uuids)."""
    ids = await make_tree(tenant.admin, name=name)
    credential = await make_credential(tenant.admin, {"customerId": ids["customer"]})
    return {k: uuid_of(v) for k, v in {**ids, "credential": credential["id"]}.items()}


def ops(page: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(entity, record id, op) of a page's changes, in order."""
    return [(c["entity"], c["recordId"], c["op"]) for c in page["changes"]]


def evictions_of(ids: dict[str, str], *types: str) -> set[tuple[str, str, str]]:
    """The EVICTs of every record of a tree (of ``types``, default all)."""
    wanted = types or ("customer", "contact", "facility", "asset", "credential")
    return {(t.upper(), ids[t], "EVICT") for t in wanted}


async def server_view(api: Api, mode: str = "ALL", customers: list[str] | None = None) -> dict:
    """What a new device with this selection holds after a full sync: the server's view."""
    fresh = await Device(api).register()
    if mode == "SELECTED":
        assert (await fresh.select("SELECTED", customers))["__typename"] == "Device"
    await fresh.sync()
    return fresh.store


async def select(device: Device, customers: list[str]) -> None:
    assert (await device.select("SELECTED", customers))["__typename"] == "Device"


class TestEvictions:
    async def test_unselecting_evicts_every_record_of_the_customer(self, tenant):
        """Unselecting a customer sends an EVICT for it and each record under it, on the
        all-types feed and on each per-type feed (only that type's records); the device
        ends equal to the server's view for its new selection."""
        a, b = await tree(tenant, "A"), await tree(tenant, "B")
        user = await tenant.add_user("TECHNICIAN", syncByCustomer=True)
        device = await Device(user).register()
        await select(device, [a["customer"], b["customer"]])
        await device.sync()
        await device.sync(types=["ASSET"])
        await device.sync(types=["CUSTOMER", "CONTACT"])
        await select(device, [b["customer"]])
        page = await device.pull_page()
        assert set(ops(page)) == evictions_of(a)
        assert len(page["changes"]) == 5
        assert all(c["data"] is None and c["customerId"] == a["customer"] for c in page["changes"])
        assert ops(await device.pull_page(types=["ASSET"])) == [("ASSET", a["asset"], "EVICT")]
        pair = await device.pull_page(types=["CUSTOMER", "CONTACT"])
        assert set(ops(pair)) == evictions_of(a, "customer", "contact")
        assert device.store == await server_view(user, "SELECTED", [b["customer"]])

    async def test_archiving_evicts_and_re_enabling_sends_it_whole(self, tenant):
        """An archived customer leaves every device as EVICTs; re-enabled, it is evicted
        first (the device may not have pulled the archive) and then sent whole."""
        a, b = await tree(tenant, "A"), await tree(tenant, "B")
        device = await Device(tenant.admin).register()
        await device.sync()
        await tenant.admin(ARCHIVE_CUSTOMER, {"id": _gid("Customer", a["customer"])})
        page = await device.pull_page()
        assert set(ops(page)) == evictions_of(a)
        assert device.store == await server_view(tenant.admin)
        assert {v["customerId"] for v in device.store.values()} == {b["customer"]}
        await tenant.admin(REENABLE_CUSTOMER, {"id": _gid("Customer", a["customer"])})
        page = await device.pull_page()
        assert [op for _, _, op in ops(page)] == ["EVICT"] * 5 + ["UPSERT"] * 5
        assert device.store == await server_view(tenant.admin)
        assert len(device.store) == 10

    async def test_switching_from_all_to_selected_evicts_the_others(self, tenant):
        """A device that synced everything and then selects one customer gets every other
        customer's records as EVICTs, and nothing of the one it kept."""
        a = await tree(tenant, "A")
        b = await tree(tenant, "B")
        c = await tree(tenant, "C")
        user = await tenant.add_user("TECHNICIAN", syncByCustomer=True)
        device = await Device(user).register()
        await device.sync()
        await select(device, [a["customer"]])
        page = await device.pull_page()
        evicted = {x for x in ops(page) if x[2] == "EVICT"}
        assert evicted == evictions_of(b) | evictions_of(c)
        assert device.store == await server_view(user, "SELECTED", [a["customer"]])

    async def test_withdrawn_capability_sends_everything_and_evicts_nothing(self, tenant):
        """Withdrawing 'sync by customer' switches the device to ALL: every customer
        arrives, none is evicted."""
        a, b = await tree(tenant, "A"), await tree(tenant, "B")
        user = await tenant.add_user("TECHNICIAN", syncByCustomer=True)
        device = await Device(user).register()
        await select(device, [a["customer"]])
        await device.sync()
        me = await user("{ me { id } }")
        await tenant.admin(
            """mutation($id: ID!) { setUserPermissions(userId: $id,
               capabilities: {syncByCustomer: false}) { __typename } }""",
            {"id": me["me"]["id"]},
        )
        page = await device.pull_page()
        assert "EVICT" not in {op for _, _, op in ops(page)}
        assert device.store == await server_view(user)
        assert {v["customerId"] for v in device.store.values()} == {a["customer"], b["customer"]}

    async def test_a_customer_that_left_and_came_back_is_evicted_first(self, tenant):
        """Unselected and selected again since the checkpoint: EVICTs of its records
        first, then the whole customer again, in one seq-ordered feed."""
        a, b = await tree(tenant, "A"), await tree(tenant, "B")
        user = await tenant.add_user("TECHNICIAN", syncByCustomer=True)
        device = await Device(user).register()
        await select(device, [a["customer"], b["customer"]])
        await device.sync()
        await select(device, [b["customer"]])
        await select(device, [a["customer"], b["customer"]])
        page = await device.pull_page()
        assert [op for _, _, op in ops(page)] == ["EVICT"] * 5 + ["UPSERT"] * 5
        assert {x[1] for x in ops(page)} == set(a.values())
        assert device.store == await server_view(user, "SELECTED", [a["customer"], b["customer"]])

    async def test_back_to_all_after_a_switch_to_selected(self, tenant):
        """ALL -> SELECTED -> ALL since the checkpoint: the customers not chosen left and
        came back, so they are evicted first, then sent whole."""
        a, b = await tree(tenant, "A"), await tree(tenant, "B")
        user = await tenant.add_user("TECHNICIAN", syncByCustomer=True)
        device = await Device(user).register()
        await device.sync()
        await select(device, [a["customer"]])
        assert (await device.select("ALL"))["__typename"] == "Device"
        page = await device.pull_page()
        evicts = [x for x in ops(page) if x[2] == "EVICT"]
        assert set(evicts) == evictions_of(b)
        assert page["changes"][: len(evicts)] == [c for c in page["changes"] if c["op"] == "EVICT"]
        assert device.store == await server_view(user)

    async def test_records_deleted_while_away_are_dropped_too(self, tenant):
        """A record deleted after the checkpoint, once its customer was unselected, comes
        as a DELETE among the evictions: the device holds it and must drop it."""
        a, b = await tree(tenant, "A"), await tree(tenant, "B")
        user = await tenant.add_user("TECHNICIAN", syncByCustomer=True)
        device = await Device(user).register()
        await select(device, [a["customer"], b["customer"]])
        await device.sync()
        await select(device, [b["customer"]])
        await tenant.admin(DELETE_ASSET, {"id": _gid("Asset", a["asset"])})
        page = await device.pull_page()
        assert ("ASSET", a["asset"], "DELETE") in ops(page)
        assert set(ops(page)) - {("ASSET", a["asset"], "DELETE")} == evictions_of(a) - {
            ("ASSET", a["asset"], "EVICT")
        }
        assert device.store == await server_view(user, "SELECTED", [b["customer"]])

    async def test_a_customer_with_2000_assets_leaves_in_pages(self, db, tenant):
        """Unselecting a customer with 2,000 assets: its evictions page like any changes
        (each record once, pages full but the last, the checkpoint moving forward), on the
        all-types feed and on the asset feed."""
        small = await tree(tenant, "Small")
        await seed_records(
            db,
            tenant.org_id,
            customers_count=1,
            contacts_per_customer=0,
            facilities_per_customer=1,
            assets_per_customer=2000,
        )
        user = await tenant.add_user("TECHNICIAN", syncByCustomer=True)
        device = await Device(user).register()
        view = await server_view(user)
        big = next(v["customerId"] for v in view.values() if v["customerId"] != small["customer"])
        await select(device, [small["customer"], big])
        await device.sync(limit=1000)
        await device.sync(limit=1000, types=["ASSET"])
        assert len(device.store) == 2002 + 5
        await select(device, [small["customer"]])
        for types, expected in ((None, 2002), (["ASSET"], 2000)):
            seen: list[str] = []
            sizes: list[int] = []
            positions: list[checkpoints.Checkpoint] = []
            while True:
                page = await device.pull_page(limit=500, types=types)
                sizes.append(len(page["changes"]))
                positions.append(checkpoints.decode(page["checkpoint"]))
                assert {c["op"] for c in page["changes"]} <= {"EVICT"}
                seen += [c["recordId"] for c in page["changes"]]
                if not page["hasMore"]:
                    break
            assert len(seen) == len(set(seen)) == expected
            assert all(size == 500 for size in sizes[:-1])
            assert [(p.seq, p.kind, p.rank, str(p.record_id)) for p in positions] == sorted(
                (p.seq, p.kind, p.rank, str(p.record_id)) for p in positions
            )
        assert device.store == await server_view(user, "SELECTED", [small["customer"]])

    async def test_a_first_pull_evicts_nothing(self, tenant):
        """A new device holds nothing: its first pull evicts nothing, whatever its
        selection history."""
        a, _ = await tree(tenant, "A"), await tree(tenant, "B")
        user = await tenant.add_user("TECHNICIAN", syncByCustomer=True)
        device = await Device(user).register()
        await select(device, [a["customer"]])
        await select(device, [])
        await select(device, [a["customer"]])
        page = await device.pull_page()
        assert {op for _, _, op in ops(page)} == {"UPSERT"}
        assert len(page["changes"]) == 5


def _gid(type_name: str, raw: str) -> str:
    from uuid import UUID

    from schema.node import to_global_id

    return str(to_global_id(type_name, UUID(raw)))
