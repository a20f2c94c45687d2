"""A push large enough to be written in several chunks behaves as one batch.

db/push.py decides a push in order and writes each chunk of decisions while it decides the
next (``_ChunkWriter``). Through the HTTP API on the real PostgreSQL, with pushes of a few
hundred changes (several chunks): a record written in the first chunk and again in the
last carries its final state on both results, as the next pull returns it; a customer
edited early and deleted late carries its tombstone on both results; a change the database
refuses in a later chunk fails alone while the chunks before and after it are stored, and
a replay answers the same.
"""

from __future__ import annotations

from typing import Any

from db.push import _CHUNK_CHANGES
from tests.api.queries import make_customer, make_tree
from tests.api.sync_client import Device
from tests.api.test_push_hostile import (
    create,
    names,
    outcomes,
    poisoned_name,
    without_replayed,
)
from tests.api.test_push_records import assert_record_as_pulled, pulled, push, raw_id

# Enough changes for at least three chunks.
SIZE = 3 * _CHUNK_CHANGES + 17


class TestChunkedPush:
    async def test_a_record_written_in_the_first_and_last_chunk_shows_its_final_state(self, tenant):
        """The first and the last change of the push edit one customer; the others create
        customers. Both results carry the record as the next pull returns it, at the
        version of the last write; every created record is the pulled one too."""
        customer = await make_customer(tenant.admin, businessName="Twice")
        customer_id = raw_id(customer["id"])
        device = await Device(tenant.admin).register()
        await device.sync()
        since = device.checkpoint
        first = device.change("customer", customer_id, {"lastName": "One"})
        mine = {**device.store[("customer", customer_id)]["version"], device.replica: 1}
        middle = [create(device, f"New {i:03}") for i in range(SIZE - 2)]
        last = device.change("customer", customer_id, {"firstName": "Two"}, base=mine)
        result = await push(device, [first, *middle, last])
        assert [r["outcome"] for r in result["results"]] == ["APPLIED"] * SIZE
        found, _ = await pulled(device, since)
        head, tail = result["results"][0], result["results"][-1]
        assert head["record"] == tail["record"]
        assert tail["record"]["data"]["lastName"] == "One"
        assert tail["record"]["data"]["firstName"] == "Two"
        assert tail["record"]["version"] == tail["version"]
        assert head["version"] != tail["version"]
        for r in result["results"][1:]:
            assert_record_as_pulled(r, found[(r["entity"], r["recordId"])])

    async def test_a_record_edited_early_and_deleted_late_shows_its_tombstone(self, tenant):
        """A contact is edited in the first chunk and deleted in the last: both results
        carry the tombstone the next pull returns."""
        tree = await make_tree(tenant.admin)
        device = await Device(tenant.admin).register()
        await device.sync()
        since = device.checkpoint
        contact_id = raw_id(tree["contact"])
        edit = device.change("contact", contact_id, {"firstName": "Early"})
        mine = {**device.store[("contact", contact_id)]["version"], device.replica: 1}
        middle = [create(device, f"New {i:03}") for i in range(SIZE - 2)]
        delete = device.change("contact", contact_id, None, op="DELETE", base=mine)
        result = await push(device, [edit, *middle, delete])
        assert [r["outcome"] for r in result["results"]] == ["APPLIED"] * SIZE
        found, _ = await pulled(device, since)
        tombstone = found[(result["results"][0]["entity"], contact_id)]
        assert tombstone["op"] == "DELETE"
        for r in (result["results"][0], result["results"][-1]):
            assert r["record"] == tombstone

    async def test_a_refusal_in_a_later_chunk_fails_alone(self, tenant, database_url):
        """Changes a check constraint refuses, in the first, a middle and the last chunk,
        get VALIDATION_FAILED; every other change of the push is stored, and a replay
        answers the same and writes nothing."""
        async with poisoned_name(database_url) as poison:
            device = await Device(tenant.admin).register()
            changes = [create(device, f"Good {i:03}") for i in range(SIZE)]
            refused = (2, _CHUNK_CHANGES + 40, SIZE - 1)
            for index in refused:
                changes[index] = create(device, poison)
            for index, change in enumerate(changes):
                change["counter"] = index + 1
            first = await device.push(changes)
            expected = ["VALIDATION_FAILED" if i in refused else "APPLIED" for i in range(SIZE)]
            assert outcomes(first) == expected
            for index in refused:
                assert first["results"][index]["fieldErrors"][0]["field"] == "patch"
            replay = await device.push(changes)
            assert without_replayed(replay) == without_replayed(first)
            assert await count_customers(tenant) == SIZE - len(refused)
        assert "Good 000" in await names(tenant)


async def count_customers(tenant: Any) -> int:
    data = await tenant.admin("{ customers(first: 1) { totalCount } }")
    return int(data["customers"]["totalCount"])
