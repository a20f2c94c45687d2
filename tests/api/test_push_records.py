"""Every push outcome carries the record as a pull would send it (sync contract v2).

Through the HTTP API on the real PostgreSQL: for each outcome the `record` of the result is
compared, as JSON text (key order included), with what the device's next pull returns for
that record; the encoded path and graphql-core's typed path return the same; replays and
refusals show the current record only where the device may see it; changes left untried
come back NOT_TRIED.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from tests.api.queries import (
    ARCHIVE_CUSTOMER,
    DELETE_CUSTOMER,
    UPDATE_CUSTOMER,
    make_customer,
    make_tree,
)
from tests.api.sync_client import Device

CHANGE = "entity recordId customerId op version data"
RESULT = f"""clientMutationId entity recordId outcome version conflictId
  conflicts {{ field serverValue clientValue }} fieldErrors {{ field message }} message replayed
  record {{ {CHANGE} }}"""
PUSH = f"""mutation($d: ID!, $changes: [ChangeInput!]!) {{
  pushChanges(deviceId: $d, changes: $changes) {{ __typename
    ... on PushResult {{ reregisterRequired results {{ {RESULT} }} }}
    ... on UserError {{ code message }} }} }}"""
# `results` under two keys with different selections: graphql-core resolves it, object by
# object, from result_from (the typed path) instead of the encoder.
TYPED_PUSH = f"""mutation($d: ID!, $changes: [ChangeInput!]!) {{
  pushChanges(deviceId: $d, changes: $changes) {{ __typename
    ... on PushResult {{ reregisterRequired results {{ {RESULT} }} other: results {{ outcome }} }}
    ... on UserError {{ code message }} }} }}"""
PULL = f"""query($d: ID!, $since: String) {{ pull(deviceId: $d, since: $since, limit: 1000) {{
  checkpoint hasMore changes {{ {CHANGE} }} }} }}"""


def raw_id(global_id: str) -> str:
    return base64.b64decode(global_id).decode().split(":", 1)[1]


def text(value: Any) -> str:
    """JSON text with the keys in the order the server sent them: byte-for-byte checks."""
    return json.dumps(value, ensure_ascii=False)


async def push(device: Device, changes: list[dict[str, Any]], *, typed: bool = False) -> Any:
    """Push through the encoded path (and, with ``typed``, the typed one)."""
    data = await device.api(TYPED_PUSH if typed else PUSH, {"d": device.id, "changes": changes})
    result = data["pushChanges"]
    assert result["__typename"] == "PushResult", result
    return result


async def pulled(device: Device, since: str | None) -> tuple[dict[tuple[str, str], Any], str]:
    """Every change a pull from ``since`` returns, by (entity, record id), and where it ends
    (the device's own store and checkpoint are left alone)."""
    found: dict[tuple[str, str], Any] = {}
    while True:
        page = (await device.api(PULL, {"d": device.id, "since": since}))["pull"]
        for change in page["changes"]:
            found[(change["entity"], change["recordId"])] = change
        since = page["checkpoint"]
        if not page["hasMore"]:
            return found, since


async def next_pull(device: Device, result: dict[str, Any], since: str | None) -> Any:
    """What the device's next pull from ``since`` returns for the result's record."""
    found, _ = await pulled(device, since)
    return found.get((result["entity"], result["recordId"]))


def assert_record_as_pulled(result: dict[str, Any], pulled_change: Any) -> None:
    """The result's record is, as JSON text, what the pull returned for it; for a fresh
    accepted change its version is the result's."""
    assert pulled_change is not None, "the pull does not return the record"
    assert text(result["record"]) == text(pulled_change)
    if result["outcome"] in ("APPLIED", "MERGED", "CONFLICT") and not result["replayed"]:
        assert result["record"]["version"] == result["version"]


async def technician(tenant: Any, **caps: bool) -> Device:
    return await Device(await tenant.add_user("TECHNICIAN", **caps)).register()


class TestEveryOutcomeCarriesThePulledRecord:
    async def test_applied_create_and_edit_of_every_type(self, tenant):
        """Creates of a customer, contact, facility and asset, and an edit: each record is
        the one the next pull returns, through both paths."""
        device = await technician(tenant)
        await device.sync()
        since = device.checkpoint
        customer, contact, facility, asset = (str(uuid.uuid4()) for _ in range(4))
        changes = [
            device.change(
                "customer",
                customer,
                {"businessName": "Created", "phones": [{"type": "MOBILE", "number": "+1 5"}]},
                base=None,
            ),
            device.change(
                "contact", contact, {"customerId": customer, "firstName": "Ann"}, base=None
            ),
            device.change("facility", facility, {"customerId": customer, "name": "HQ"}, base=None),
            device.change(
                "asset",
                asset,
                {"facilityId": facility, "kind": "Boiler", "installDate": "2024-02-29"},
                base=None,
            ),
        ]
        result = await push(device, changes)
        assert [r["outcome"] for r in result["results"]] == ["APPLIED"] * 4
        found, _ = await pulled(device, since)
        for r in result["results"]:
            assert_record_as_pulled(r, found[(r["entity"], r["recordId"])])
            assert r["record"]["op"] == "UPSERT"
        assert result["results"][3]["record"]["customerId"] == customer
        edit = device.change(
            "customer",
            customer,
            {"lastName": "Lee"},
            base=result["results"][0]["version"],
        )
        typed = await push(device, [edit], typed=True)
        [applied] = typed["results"]
        assert applied["outcome"] == "APPLIED"
        assert_record_as_pulled(applied, await next_pull(device, applied, since))
        assert applied["record"]["data"]["lastName"] == "Lee"

    async def test_merged_and_conflict(self, tenant):
        """MERGED carries the merged record; CONFLICT the server's record after the fields
        not in conflict were written, next to both values of the others."""
        ids = await make_tree(tenant.admin)
        device = await technician(tenant)
        await device.sync()
        since = device.checkpoint
        await tenant.admin(
            UPDATE_CUSTOMER,
            {"id": ids["customer"], "input": {"email": "desk@x.example", "businessName": "Srv"}},
        )
        customer = raw_id(ids["customer"])
        for typed in (False, True):
            merged = device.change("customer", customer, {"lastName": f"Merged {typed}"})
            conflicting = device.change(
                "customer", customer, {"businessName": f"Phone {typed}", "firstName": "Fay"}
            )
            result = await push(device, [merged], typed=typed)
            [m] = result["results"]
            assert m["outcome"] == "MERGED", m
            assert_record_as_pulled(m, await next_pull(device, m, since))
            assert m["record"]["data"]["email"] == "desk@x.example"
            [c] = (await push(device, [conflicting], typed=typed))["results"]
            assert c["outcome"] == "CONFLICT", c
            assert c["conflicts"] == [
                {"field": "businessName", "serverValue": "Srv", "clientValue": f"Phone {typed}"}
            ]
            assert_record_as_pulled(c, await next_pull(device, c, since))
            assert c["record"]["data"]["businessName"] == "Srv"
            assert c["record"]["data"]["firstName"] == "Fay"

    async def test_deleted_carries_the_tombstone(self, tenant):
        """An edit of a record someone deleted: DELETED with the tombstone (op DELETE, no
        data), as the pull returns it."""
        customer = await make_customer(tenant.admin, businessName="Doomed")
        device = await technician(tenant)
        await device.sync()
        since = device.checkpoint
        deleted = await tenant.admin(DELETE_CUSTOMER, {"id": customer["id"]})
        assert deleted["deleteCustomer"]["__typename"] == "DeletedRecord", deleted
        for typed in (False, True):
            edit = device.change("customer", raw_id(customer["id"]), {"lastName": "Late"})
            [late] = (await push(device, [edit], typed=typed))["results"]
            assert late["outcome"] == "DELETED", late
            assert late["record"]["op"] == "DELETE"
            assert late["record"]["data"] is None
            assert_record_as_pulled(late, await next_pull(device, late, since))

    async def test_deleted_without_a_record_on_the_server_is_null(self, tenant):
        """An edit of a record the server never had: DELETED, and no record to show."""
        device = await technician(tenant)
        [result] = (
            await push(device, [device.change("customer", str(uuid.uuid4()), {}, base={"x": 1})])
        )["results"]
        assert result["outcome"] == "DELETED"
        assert result["record"] is None

    async def test_an_applied_delete_carries_its_tombstone(self, tenant):
        """A device's own DELETE: APPLIED with the tombstone it wrote."""
        customer = await make_customer(tenant.admin, businessName="Bye")
        device = await technician(tenant)
        await device.sync()
        since = device.checkpoint
        [result] = (
            await push(
                device, [device.change("customer", raw_id(customer["id"]), None, op="DELETE")]
            )
        )["results"]
        assert result["outcome"] == "APPLIED"
        assert result["record"]["op"] == "DELETE"
        assert_record_as_pulled(result, await next_pull(device, result, since))

    async def test_validation_failed_carries_the_current_record(self, tenant):
        """A refused edit of a record the device syncs: the record as it is (unchanged),
        as a pull returns it; a refused create: null (there is no record)."""
        ids = await make_tree(tenant.admin)
        device = await technician(tenant)
        await device.sync()
        contact = raw_id(ids["contact"])
        changes = [
            device.change("contact", contact, {"email": "not an email"}),
            device.change("customer", str(uuid.uuid4()), {"email": "nope"}, base=None),
        ]
        for typed in (False, True):
            result = await push(device, changes, typed=typed)
            refused, created = result["results"]
            assert refused["outcome"] == created["outcome"] == "VALIDATION_FAILED"
            assert_record_as_pulled(refused, await next_pull(device, refused, None))
            assert refused["record"]["data"]["email"] is None
            assert created["record"] is None
            # The second round replays them: the same answers.
            assert result["results"][0]["replayed"] is typed

    async def test_forbidden_on_an_archived_customer_evicts_the_record(self, tenant):
        """The customer was archived: the device may no longer see it, so FORBIDDEN comes
        with an eviction of the record (no data), which a client applies as a removal."""
        ids = await make_tree(tenant.admin)
        device = await technician(tenant)
        await device.sync()
        await tenant.admin(ARCHIVE_CUSTOMER, {"id": ids["customer"]})
        [result] = (
            await push(device, [device.change("asset", raw_id(ids["asset"]), {"notes": "x"})])
        )["results"]
        assert result["outcome"] == "FORBIDDEN"
        assert_evicted(result)

    async def test_a_refusal_outside_the_selection_evicts_the_record(self, tenant):
        """A device in SELECTED mode is refused an edit of a customer it does not sync:
        an eviction, no data (its next pull would not send the record either)."""
        mine = await make_customer(tenant.admin, businessName="Mine")
        theirs = await make_customer(tenant.admin, businessName="Theirs")
        device = await technician(tenant, syncByCustomer=True)
        await device.select("SELECTED", [raw_id(mine["id"])])
        await device.sync()
        changes = [
            device.change("customer", raw_id(theirs["id"]), {"email": "bad"}, base={}),
            device.change("customer", raw_id(mine["id"]), {"email": "bad"}),
        ]
        result = await push(device, changes)
        outside, inside = result["results"]
        assert outside["outcome"] == inside["outcome"] == "VALIDATION_FAILED"
        assert_evicted(outside)
        assert_record_as_pulled(inside, await next_pull(device, inside, None))


def assert_evicted(result: dict) -> None:
    """The result's record is an eviction: its id, no data, op EVICT."""
    record = result["record"]
    assert record is not None, result
    assert record["op"] == "EVICT", record
    assert record["data"] is None
    assert record["recordId"] == result["recordId"]


class TestReplays:
    async def test_a_replay_returns_the_record_as_it_is_now(self, tenant):
        """The receipt keeps the first outcome and version; the record is read anew: after
        an admin's edit, the replay shows it, as the next pull does."""
        device = await technician(tenant)
        await device.sync()
        since = device.checkpoint
        record = str(uuid.uuid4())
        change = device.change("customer", record, {"businessName": "First"}, base=None)
        [first] = (await push(device, [change]))["results"]
        global_id = base64.b64encode(f"Customer:{record}".encode()).decode()
        await tenant.admin(UPDATE_CUSTOMER, {"id": global_id, "input": {"lastName": "Admin"}})
        for typed in (False, True):
            [again] = (await push(device, [change], typed=typed))["results"]
            assert again["replayed"] is True
            assert again["outcome"] == "APPLIED"
            assert again["version"] == first["version"]
            assert again["record"]["data"]["lastName"] == "Admin"
            assert_record_as_pulled(again, await next_pull(device, again, since))

    async def test_a_replay_after_archiving_evicts_the_record(self, tenant):
        """The device may no longer see the record: the replay carries its eviction."""
        customer = await make_customer(tenant.admin, businessName="Soon archived")
        device = await technician(tenant)
        await device.sync()
        change = device.change("customer", raw_id(customer["id"]), {"lastName": "X"})
        [first] = (await push(device, [change]))["results"]
        assert first["record"] is not None
        await tenant.admin(ARCHIVE_CUSTOMER, {"id": customer["id"]})
        [again] = (await push(device, [change]))["results"]
        assert again["replayed"] is True
        assert_evicted(again)
