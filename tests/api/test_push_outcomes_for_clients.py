"""Push outcomes as an offline-first client meets them (issue #15): a device's own writes
never count against it, and a resent change gets its first answer however the client's
retry loop numbers it."""

from __future__ import annotations

import base64
import uuid

from tests.api.sync_client import Device


async def technician(tenant):
    return await Device(await tenant.add_user("TECHNICIAN")).register()


class TestOwnWrites:
    async def test_an_edit_after_a_lost_response_is_not_a_conflict(self, tenant):
        """The device writes `lastName`, loses the response (keeps its old base), edits the
        same field again: APPLIED, not a CONFLICT against its own earlier write."""
        device = await technician(tenant)
        record = str(uuid.uuid4())
        [created] = (
            await device.push(
                [device.change("customer", record, {"businessName": "Own"}, base=None)]
            )
        )["results"]
        base = created["version"]
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
        record = str(uuid.uuid4())
        [created] = (
            await device.push(
                [device.change("customer", record, {"businessName": "Theirs"}, base=None)]
            )
        )["results"]
        base = created["version"]
        global_id = base64.b64encode(f"Customer:{record}".encode()).decode()
        edited = await tenant.admin(
            'mutation($id: ID!) { updateCustomer(id: $id, input: {lastName: "Admin"}) {'
            " __typename } }",
            {"id": global_id},
        )
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
