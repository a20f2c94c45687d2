"""Push outcomes as an offline-first client meets them (issue #15): a device's own writes
never count against it, a resent change gets its first answer however the client's retry
loop numbers it, and a conflict holds only the fields changed on both sides."""

from __future__ import annotations

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


class TestFieldLevelConflicts:
    async def test_the_fields_not_in_conflict_are_written_at_once(self, tenant):
        """One change edits `businessName` (also changed by an admin) and `lastName` (only
        by the phone): CONFLICT names `businessName`; `lastName` is stored now, and stays
        whichever way the conflict is settled (here KEEP_SERVER, RxDB's default)."""
        device = await technician(tenant)
        record, base, global_id = await customer_created_by(device, "Start")
        await tenant.admin(UPDATE, {"id": global_id, "i": {"businessName": "Admin"}})
        change = device.change(
            "customer",
            record,
            {"businessName": "Phone", "lastName": "Typed offline"},
            base=base,
        )
        [pushed] = (await device.push([change]))["results"]
        assert pushed["outcome"] == "CONFLICT"
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
        device = await technician(tenant)
        record, base, global_id = await customer_created_by(device, "Start")
        await tenant.admin(UPDATE, {"id": global_id, "i": {"businessName": "Admin"}})
        change = device.change(
            "customer",
            record,
            {"businessName": "Phone", "lastName": "Lee"},
            base=base,
        )
        [pushed] = (await device.push([change]))["results"]
        assert pushed["outcome"] == "CONFLICT"
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
