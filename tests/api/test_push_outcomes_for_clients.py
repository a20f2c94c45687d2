"""Push outcomes as an offline-first client meets them (issue #15): a device's own writes
never count against it, a resent change gets its first answer however the client's retry
loop numbers it, a conflict holds only the fields changed on both sides, and batches may
arrive in any order."""

from __future__ import annotations

import asyncio
import base64
import uuid

from tests.api.sync_client import Device

UPDATE = (
    "mutation($id: ID!, $i: UpdateCustomerInput!) { updateCustomer(id: $id, input: $i) {"
    " __typename } }"
)
READ = "query($id: ID!) { customer(id: $id) { businessName lastName } }"


async def technician(tenant):
    return await Device(await tenant.add_user("TECHNICIAN")).register()


async def customer_created_by(device: Device, name: str) -> tuple[str, dict[str, int], str]:
    """A customer the device creates: its record id, the version it got back, global id."""
    record = str(uuid.uuid4())
    [created] = (
        await device.push([device.change("customer", record, {"businessName": name}, base=None)])
    )["results"]
    global_id = base64.b64encode(f"Customer:{record}".encode()).decode()
    return record, created["version"], global_id


class TestOwnWrites:
    async def test_an_edit_after_a_lost_response_is_not_a_conflict(self, tenant):
        """The device writes `lastName`, loses the response (keeps its old base), edits the
        same field again: APPLIED, not a CONFLICT against its own earlier write."""
        device = await technician(tenant)
        record, base, _ = await customer_created_by(device, "Own")
        [first] = (
            await device.push([device.change("customer", record, {"lastName": "One"}, base=base)])
        )["results"]
        assert first["outcome"] == "APPLIED"
        # The response of `first` never arrived: the device still edits from `base`.
        [second] = (
            await device.push([device.change("customer", record, {"lastName": "Two"}, base=base)])
        )["results"]
        assert second["outcome"] in ("APPLIED", "MERGED"), second
        assert second["conflicts"] == []
        data = await tenant.admin(
            "query($f: CustomerFilter) { customers(first: 5, filter: $f) {"
            " edges { node { lastName } } } }",
            {"f": {"search": "Own"}},
        )
        assert [e["node"]["lastName"] for e in data["customers"]["edges"]] == ["Two"]

    async def test_someone_elses_write_of_the_field_still_conflicts(self, tenant):
        """The same sequence with an admin's edit in between is a conflict (MANUAL)."""
        device = await technician(tenant)
        record, base, global_id = await customer_created_by(device, "Theirs")
        edited = await tenant.admin(UPDATE, {"id": global_id, "i": {"lastName": "Admin"}})
        assert edited["updateCustomer"]["__typename"] == "Customer"
        [pushed] = (
            await device.push([device.change("customer", record, {"lastName": "Phone"}, base=base)])
        )["results"]
        assert pushed["outcome"] == "CONFLICT"
        assert [c["field"] for c in pushed["conflicts"]] == ["lastName"]


class TestResends:
    async def test_a_refusal_resent_with_new_counters_keeps_its_first_answer(self, tenant):
        """A VALIDATION_FAILED change resent three times by a retry loop that numbers each
        attempt anew comes back the same each time, never as "already used"."""
        device = await technician(tenant)
        change = device.change("customer", str(uuid.uuid4()), {"email": "not an email"}, base=None)
        [first] = (await device.push([change]))["results"]
        assert first["outcome"] == "VALIDATION_FAILED"
        for _ in range(3):
            device.counter += 1
            resent = {**change, "counter": device.counter}
            [again] = (await device.push([resent]))["results"]
            assert again["outcome"] == "VALIDATION_FAILED", again
            assert again["replayed"] is True
            by_field = sorted(again["fieldErrors"], key=lambda e: e["field"])
            assert by_field == sorted(first["fieldErrors"], key=lambda e: e["field"])

    async def test_an_applied_change_resent_with_a_new_counter_writes_nothing(self, tenant):
        """A resend of an applied change under a new counter is a replay: no second version."""
        device = await technician(tenant)
        change = device.change("customer", str(uuid.uuid4()), {"businessName": "Once"}, base=None)
        [first] = (await device.push([change]))["results"]
        device.counter += 1
        [again] = (await device.push([{**change, "counter": device.counter}]))["results"]
        assert again["replayed"] is True
        assert again["version"] == first["version"]

    async def test_the_same_id_with_another_change_is_still_refused(self, tenant):
        """A different patch under a used clientMutationId is refused, whatever the counter."""
        device = await technician(tenant)
        change = device.change("customer", str(uuid.uuid4()), {"businessName": "One"}, base=None)
        await device.push([change])
        device.counter += 1
        forged = {**change, "counter": device.counter, "patch": {"customer": {"businessName": "2"}}}
        [outcome] = (await device.push([forged]))["results"]
        assert outcome["outcome"] == "VALIDATION_FAILED"
        assert outcome["fieldErrors"][0]["field"] == "clientMutationId"


async def conflict_on_the_business_name(tenant, last_name: str) -> tuple[Device, str, dict]:
    """A device's customer renamed by an admin while the phone renames it too and sets
    `lastName`: the push's one result (a CONFLICT), with the device and the global id."""
    device = await technician(tenant)
    record, base, global_id = await customer_created_by(device, "Start")
    await tenant.admin(UPDATE, {"id": global_id, "i": {"businessName": "Admin"}})
    change = device.change(
        "customer", record, {"businessName": "Phone", "lastName": last_name}, base=base
    )
    [pushed] = (await device.push([change]))["results"]
    assert pushed["outcome"] == "CONFLICT"
    return device, global_id, pushed


class TestFieldLevelConflicts:
    async def test_the_fields_not_in_conflict_are_written_at_once(self, tenant):
        """One change edits `businessName` (also changed by an admin) and `lastName` (only
        by the phone): CONFLICT names `businessName`; `lastName` is stored now, and stays
        whichever way the conflict is settled (here KEEP_SERVER, RxDB's default)."""
        device, global_id, pushed = await conflict_on_the_business_name(tenant, "Typed offline")
        assert [c["field"] for c in pushed["conflicts"]] == ["businessName"]
        assert (await tenant.admin(READ, {"id": global_id}))["customer"] == {
            "businessName": "Admin",
            "lastName": "Typed offline",
        }
        settled = await device.api(
            "mutation($id: ID!) { resolveConflict(id: $id, resolution: KEEP_SERVER) {"
            " __typename } }",
            {"id": pushed["conflictId"]},
        )
        assert settled["resolveConflict"]["__typename"] == "SyncConflict"
        assert (await tenant.admin(READ, {"id": global_id}))["customer"] == {
            "businessName": "Admin",
            "lastName": "Typed offline",
        }

    async def test_keep_client_settles_only_the_held_field(self, tenant):
        """KEEP_CLIENT writes the device's value of the held field and leaves a later admin
        edit of a field that was not in conflict alone."""
        device, global_id, pushed = await conflict_on_the_business_name(tenant, "Lee")
        await tenant.admin(UPDATE, {"id": global_id, "i": {"lastName": "Corrected"}})
        await device.api(
            "mutation($id: ID!) { resolveConflict(id: $id, resolution: KEEP_CLIENT) {"
            " __typename } }",
            {"id": pushed["conflictId"]},
        )
        assert (await tenant.admin(READ, {"id": global_id}))["customer"] == {
            "businessName": "Phone",
            "lastName": "Corrected",
        }


class TestOrderFreeBatches:
    async def test_batches_arriving_out_of_order_are_all_stored(self, tenant):
        """Counters 6-10 arrive before 1-5 (batches sent in parallel): every change is
        stored and nobody is asked to register again."""
        device = await technician(tenant)
        first = [
            device.change("customer", str(uuid.uuid4()), {"businessName": f"A{i}"}, base=None)
            for i in range(5)
        ]
        second = [
            device.change("customer", str(uuid.uuid4()), {"businessName": f"B{i}"}, base=None)
            for i in range(5)
        ]
        late = await device.push(second)
        early = await device.push(first)
        for result in (late, early):
            assert result["reregisterRequired"] is False, result
            assert {r["outcome"] for r in result["results"]} == {"APPLIED"}, result
        total = await tenant.admin("{ customers(first: 20) { totalCount } }")
        assert total["customers"]["totalCount"] == 10

    async def test_concurrent_batches_are_all_stored(self, tenant):
        """Three batches of one device sent at once (one per record type, as RxDB does):
        every change is stored, whichever the server takes first."""
        device = await technician(tenant)
        batches = [
            [
                device.change("customer", str(uuid.uuid4()), {"businessName": f"{n}{i}"}, base=None)
                for i in range(4)
            ]
            for n in "XYZ"
        ]
        results = await asyncio.gather(*(device.push(b) for b in reversed(batches)))
        assert all(r["reregisterRequired"] is False for r in results), results
        assert all(x["outcome"] == "APPLIED" for r in results for x in r["results"]), results

    async def test_a_restored_app_reusing_a_counter_is_refused(self, tenant):
        """An install restored from a backup pushes a new change under a counter another
        change already used: refused, with reregisterRequired."""
        device = await technician(tenant)
        await device.push(
            [
                device.change("customer", str(uuid.uuid4()), {"businessName": f"C{i}"}, base=None)
                for i in range(3)
            ]
        )
        device.counter = 1  # the backup's counter
        result = await device.push(
            [device.change("customer", str(uuid.uuid4()), {"businessName": "Twin"}, base=None)]
        )
        assert result["reregisterRequired"] is True
        [refused] = result["results"]
        assert refused["outcome"] == "VALIDATION_FAILED"
        assert refused["fieldErrors"][0]["field"] == "counter"

    async def test_one_counter_twice_in_a_batch_is_refused_the_second_time(self, tenant):
        """Two changes of one batch with the same counter: the second is refused."""
        device = await technician(tenant)
        a = device.change("customer", str(uuid.uuid4()), {"businessName": "One"}, base=None)
        b = device.change("customer", str(uuid.uuid4()), {"businessName": "Two"}, base=None)
        result = await device.push([a, {**b, "counter": a["counter"]}])
        assert [r["outcome"] for r in result["results"]] == ["APPLIED", "VALIDATION_FAILED"]
        assert result["reregisterRequired"] is True
