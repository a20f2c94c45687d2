"""Who resolves conflicts, per device, and changes that name the conflict they settle.

Through the HTTP API on the real PostgreSQL: a CLIENT device gets every conflict back with
the record and settles it by pushing against the returned version (no SyncConflict, no
tenant policy); a SERVER device under MANUAL closes a stored conflict by naming it in
`resolvesConflictId`; a bad conflict id refuses its change alone and writes nothing; the
sync state counts only conflicts someone can still resolve; oversized batches are refused
cleanly.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import pytest

from tests.api.queries import DELETE_CUSTOMER, UPDATE_CUSTOMER, make_customer
from tests.api.sync_client import Device

REGISTER = """mutation($input: RegisterDeviceInput!) { registerDevice(input: $input) {
  __typename ... on Device { id replicaId resolvesConflicts } ... on UserError { message } } }"""
REPORT = """mutation($d: ID!, $input: ReportDeviceInput!) { reportDevice(deviceId: $d, input: $input) {
  __typename ... on Device { resolvesConflicts } ... on UserError { message } } }"""
DEVICES = "{ devices { id resolvesConflicts } }"
PUSH = """mutation($d: ID!, $changes: [ChangeInput!]!) { pushChanges(deviceId: $d, changes: $changes) {
  __typename
  ... on PushResult { reregisterRequired results { clientMutationId outcome version conflictId
      conflicts { field serverValue clientValue } fieldErrors { field message } message replayed
      record { entity recordId customerId op version data } } }
  ... on UserError { code message } } }"""
CONFLICTS = """query { conflicts(openOnly: false) { id recordId deviceId status resolution
  resolvedAt } }"""
READ = "query($id: ID!) { customer(id: $id) { businessName lastName version } }"
POLICY = """mutation($p: ConflictPolicy!) { setConflictPolicy(entity: CUSTOMER, policy: $p) {
  __typename } }"""


def global_customer_id(record_id: str) -> str:
    return base64.b64encode(f"Customer:{record_id}".encode()).decode()


def raw_id(global_id: str) -> str:
    return base64.b64decode(global_id).decode().split(":", 1)[1]


async def device_of(api: Any, resolver: str | None = None) -> Device:
    """A registered device of ``api``'s user, resolving as ``resolver`` (default: unset)."""
    device = Device(api)
    given = {"name": "phone", "platform": "test"}
    if resolver is not None:
        given["resolvesConflicts"] = resolver
    data = (await api(REGISTER, {"input": given}))["registerDevice"]
    assert data["__typename"] == "Device", data
    device.id, device.replica = data["id"], data["replicaId"]
    assert data["resolvesConflicts"] == (resolver or "SERVER")
    return device


async def push(device: Device, changes: list[dict[str, Any]]) -> dict[str, Any]:
    result = (await device.api(PUSH, {"d": device.id, "changes": changes}))["pushChanges"]
    assert result["__typename"] == "PushResult", result
    return result


async def one(device: Device, change: dict[str, Any]) -> dict[str, Any]:
    [result] = (await push(device, [change]))["results"]
    return result


async def conflicts_by_id(api: Any) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in (await api(CONFLICTS))["conflicts"]}


async def stored_conflict(tenant: Any, device: Device, name: str = "Start") -> tuple[str, dict]:
    """A customer the device synced, renamed by an admin and then by the device: the push's
    CONFLICT result (MANUAL, stored) and the customer's record id."""
    customer = await make_customer(tenant.admin, businessName=name)
    await device.sync()
    await tenant.admin(UPDATE_CUSTOMER, {"id": customer["id"], "input": {"businessName": "Adm"}})
    record = raw_id(customer["id"])
    result = await one(device, device.change("customer", record, {"businessName": "Phone"}))
    assert result["outcome"] == "CONFLICT", result
    assert result["conflictId"], result
    return record, result


class TestTheResolverSetting:
    async def test_registered_reported_and_listed(self, tenant):
        """SERVER by default; CLIENT at registration; changeable by reportDevice; shown on
        Device (devices list too)."""
        server = await device_of(tenant.admin)
        client = await device_of(tenant.admin, "CLIENT")
        listed = {d["id"]: d["resolvesConflicts"] for d in (await tenant.admin(DEVICES))["devices"]}
        assert listed == {server.id: "SERVER", client.id: "CLIENT"}
        changed = await tenant.admin(
            REPORT, {"d": server.id, "input": {"resolvesConflicts": "CLIENT"}}
        )
        assert changed["reportDevice"] == {"__typename": "Device", "resolvesConflicts": "CLIENT"}
        kept = await tenant.admin(REPORT, {"d": server.id, "input": {"pendingChanges": 0}})
        assert kept["reportDevice"]["resolvesConflicts"] == "CLIENT"

    async def test_an_unknown_resolver_is_a_graphql_error(self, tenant):
        """An enum value outside SERVER/CLIENT never reaches the database."""
        errors = await tenant.admin.errors(REGISTER, {"input": {"resolvesConflicts": "BOTH"}})
        assert "ConflictResolver" in errors[0]["message"]


class TestClientResolves:
    @pytest.mark.parametrize("policy", ["MANUAL", "SERVER_WINS", "CLIENT_WINS"])
    async def test_the_round_trip_converges_without_a_stored_conflict(self, tenant, policy):
        """Whatever the tenant's policy: the CLIENT device's edit of a field another device
        changed is a CONFLICT (the other field written, both values listed, the record
        returned, nothing stored); its decision pushed against the returned version is
        APPLIED; both devices converge and the device is SYNCED."""
        assert (await tenant.admin(POLICY, {"p": policy}))["setConflictPolicy"]
        customer = await make_customer(tenant.admin, businessName="Start")
        record = raw_id(customer["id"])
        phone = await device_of(await tenant.add_user("TECHNICIAN"), "CLIENT")
        other = await device_of(await tenant.add_user("TECHNICIAN"))
        await phone.sync()
        await other.sync()
        renamed = await one(other, other.change("customer", record, {"businessName": "Other"}))
        assert renamed["outcome"] == "APPLIED"
        edit = phone.change("customer", record, {"businessName": "Mine", "lastName": "Lee"})
        conflict = await one(phone, edit)
        assert conflict["outcome"] == "CONFLICT", conflict
        assert conflict["conflictId"] is None
        assert conflict["conflicts"] == [
            {"field": "businessName", "serverValue": "Other", "clientValue": "Mine"}
        ]
        assert conflict["record"]["data"]["businessName"] == "Other"
        assert conflict["record"]["data"]["lastName"] == "Lee"
        assert conflict["record"]["version"] == conflict["version"]
        decision = phone.change(
            "customer",
            record,
            {"businessName": "Mine, decided"},
            base=conflict["record"]["version"],
        )
        settled = await one(phone, decision)
        assert settled["outcome"] == "APPLIED", settled
        assert settled["record"]["data"]["businessName"] == "Mine, decided"
        await phone.sync()
        await other.sync()
        key = ("customer", record)
        assert phone.store[key] == other.store[key]
        assert phone.store[key]["data"] == settled["record"]["data"]
        assert phone.store[key]["version"] == settled["record"]["version"]
        assert (await tenant.admin(CONFLICTS))["conflicts"] == []
        state = await phone.state()
        assert (state["status"], state["openConflicts"]) == ("SYNCED", 0)

    async def test_a_delete_over_server_edits_waits_for_the_device(self, tenant):
        """A CLIENT device's delete of a record edited since: CONFLICT, nothing deleted or
        stored; the delete pushed again against the returned version deletes it."""
        customer = await make_customer(tenant.admin, businessName="Keep?")
        record = raw_id(customer["id"])
        phone = await device_of(tenant.admin, "CLIENT")
        await phone.sync()
        await tenant.admin(UPDATE_CUSTOMER, {"id": customer["id"], "input": {"lastName": "New"}})
        first = await one(phone, phone.change("customer", record, None, op="DELETE"))
        assert first["outcome"] == "CONFLICT"
        assert first["record"]["op"] == "UPSERT"
        assert (await tenant.admin(CONFLICTS))["conflicts"] == []
        again = phone.change("customer", record, None, op="DELETE", base=first["record"]["version"])
        deleted = await one(phone, again)
        assert deleted["outcome"] == "APPLIED"
        assert deleted["record"]["op"] == "DELETE"

    async def test_switching_to_client_leaves_stored_conflicts_open(self, tenant):
        """Conflicts stored while the device was SERVER stay open after it switches (a
        person, or a change naming them, still settles them); new ones are not stored."""
        device = await device_of(tenant.admin)
        _, stored = await stored_conflict(tenant, device)
        await tenant.admin(REPORT, {"d": device.id, "input": {"resolvesConflicts": "CLIENT"}})
        await stored_conflict_for_client(tenant, device)
        conflicts = await conflicts_by_id(tenant.admin)
        assert list(conflicts) == [stored["conflictId"]]
        assert conflicts[stored["conflictId"]]["status"] == "OPEN"


async def stored_conflict_for_client(tenant: Any, device: Device) -> tuple[str, dict]:
    """As stored_conflict, for a CLIENT device: the CONFLICT comes back without an id."""
    customer = await make_customer(tenant.admin, businessName="Second")
    await device.sync()
    await tenant.admin(UPDATE_CUSTOMER, {"id": customer["id"], "input": {"businessName": "Adm"}})
    record = raw_id(customer["id"])
    result = await one(device, device.change("customer", record, {"businessName": "Phone"}))
    assert result["outcome"] == "CONFLICT"
    assert result["conflictId"] is None
    return record, result


class TestNamingTheConflict:
    @pytest.mark.parametrize("form", ["global id", "uuid"])
    async def test_an_accepted_change_closes_it(self, tenant, form):
        """SERVER resolver, MANUAL policy: the device's decision, pushed against the
        returned version and naming the conflict, is APPLIED; the conflict is RESOLVED
        (MERGE) and the device leaves CONFLICTS."""
        device = await device_of(await tenant.add_user("TECHNICIAN"))
        record, conflict = await stored_conflict(tenant, device)
        await device.sync()
        assert (await device.state())["status"] == "CONFLICTS"
        named = conflict["conflictId"] if form == "global id" else raw_id(conflict["conflictId"])
        decision = {
            **device.change("customer", record, {"businessName": "Decided"}),
            "baseVersion": conflict["record"]["version"],
            "resolvesConflictId": named,
        }
        settled = await one(device, decision)
        assert settled["outcome"] == "APPLIED", settled
        closed = (await conflicts_by_id(device.api))[conflict["conflictId"]]
        assert (closed["status"], closed["resolution"]) == ("RESOLVED", "MERGE")
        assert closed["resolvedAt"]
        await device.sync()
        state = await device.state()
        assert (state["status"], state["openConflicts"]) == ("SYNCED", 0)

    async def test_a_change_that_conflicts_again_still_closes_it(self, tenant):
        """Accepted as CONFLICT (someone renamed the record meanwhile): the named conflict
        is closed, and the new one is stored in its place."""
        device = await device_of(tenant.admin)
        record, conflict = await stored_conflict(tenant, device)
        await tenant.admin(
            UPDATE_CUSTOMER,
            {"id": global_customer_id(record), "input": {"businessName": "Adm again"}},
        )
        again = await one(
            device,
            {
                **device.change("customer", record, {"businessName": "Decided"}),
                "baseVersion": conflict["record"]["version"],
                "resolvesConflictId": conflict["conflictId"],
            },
        )
        assert again["outcome"] == "CONFLICT"
        conflicts = await conflicts_by_id(tenant.admin)
        assert conflicts[conflict["conflictId"]]["status"] == "RESOLVED"
        assert conflicts[again["conflictId"]]["status"] == "OPEN"

    async def test_a_refused_change_leaves_it_open(self, tenant):
        """A change naming the conflict that fails validation settles nothing."""
        device = await device_of(tenant.admin)
        record, conflict = await stored_conflict(tenant, device)
        refused = await one(
            device,
            {
                **device.change("customer", record, {"email": "not an email"}),
                "baseVersion": conflict["record"]["version"],
                "resolvesConflictId": conflict["conflictId"],
            },
        )
        assert refused["outcome"] == "VALIDATION_FAILED"
        assert (await conflicts_by_id(tenant.admin))[conflict["conflictId"]]["status"] == "OPEN"

    async def test_an_already_resolved_conflict_is_not_an_error(self, tenant):
        """Resolved by a person meanwhile: the change is decided as usual and the
        conflict keeps the person's resolution."""
        device = await device_of(tenant.admin)
        record, conflict = await stored_conflict(tenant, device)
        resolved = await tenant.admin(
            "mutation($id: ID!) { resolveConflict(id: $id, resolution: KEEP_SERVER) {"
            " __typename } }",
            {"id": conflict["conflictId"]},
        )
        assert resolved["resolveConflict"]["__typename"] == "SyncConflict"
        result = await one(
            device,
            {
                **device.change("customer", record, {"lastName": "Later"}),
                "baseVersion": conflict["record"]["version"],
                "resolvesConflictId": conflict["conflictId"],
            },
        )
        assert result["outcome"] in ("APPLIED", "MERGED"), result
        kept = (await conflicts_by_id(tenant.admin))[conflict["conflictId"]]
        assert (kept["status"], kept["resolution"]) == ("RESOLVED", "KEEP_SERVER")

    async def test_a_conflict_on_a_deleted_record_stops_counting(self, tenant):
        """No one can resolve a conflict whose record was deleted (resolveConflict refuses
        it): the device's sync state does not count it."""
        device = await device_of(tenant.admin)
        record, _ = await stored_conflict(tenant, device)
        await device.sync()
        assert (await device.state())["openConflicts"] == 1
        deleted = await tenant.admin(DELETE_CUSTOMER, {"id": global_customer_id(record)})
        assert deleted["deleteCustomer"]["__typename"] == "DeletedRecord", deleted
        await device.sync()
        state = await device.state()
        assert (state["status"], state["openConflicts"]) == ("SYNCED", 0)


class TestBadConflictIds:
    """Each a VALIDATION_FAILED on `resolvesConflictId` for that change alone: nothing of
    it is written, the conflict stays open, the rest of the push is stored."""

    async def refused(
        self, tenant: Any, device: Device, record: str, named: str, conflict_id: str | None
    ) -> None:
        before = (await tenant.admin(READ, {"id": global_customer_id(record)}))["customer"]
        bystander = device.change(
            "customer", str(uuid.uuid4()), {"businessName": "Bystander"}, base=None
        )
        result = await push(
            device,
            [
                {
                    **device.change("customer", record, {"lastName": "Never"}),
                    "resolvesConflictId": named,
                },
                bystander,
            ],
        )
        refused, stored = result["results"]
        assert refused["outcome"] == "VALIDATION_FAILED", refused
        assert [e["field"] for e in refused["fieldErrors"]] == ["resolvesConflictId"]
        assert stored["outcome"] == "APPLIED"
        after = (await tenant.admin(READ, {"id": global_customer_id(record)}))["customer"]
        assert after == before
        if conflict_id is not None:
            conflicts = await conflicts_by_id(tenant.admin)
            assert conflicts[conflict_id]["status"] == "OPEN"

    async def test_another_devices_conflict(self, tenant):
        owner = await device_of(await tenant.add_user("TECHNICIAN"))
        record, conflict = await stored_conflict(tenant, owner)
        thief = await device_of(await tenant.add_user("TECHNICIAN"))
        await thief.sync()
        await self.refused(tenant, thief, record, conflict["conflictId"], conflict["conflictId"])

    async def test_the_same_users_other_device(self, tenant):
        owner = await device_of(tenant.admin)
        record, conflict = await stored_conflict(tenant, owner)
        second = await device_of(tenant.admin)
        await second.sync()
        await self.refused(tenant, second, record, conflict["conflictId"], conflict["conflictId"])

    async def test_another_tenants_conflict(self, tenant, other_tenant):
        elsewhere = await device_of(other_tenant.admin)
        _, foreign = await stored_conflict(other_tenant, elsewhere)
        device = await device_of(tenant.admin)
        customer = await make_customer(tenant.admin, businessName="Here")
        await device.sync()
        record = raw_id(customer["id"])
        await self.refused(tenant, device, record, foreign["conflictId"], None)
        assert (await conflicts_by_id(other_tenant.admin))[foreign["conflictId"]][
            "status"
        ] == "OPEN"

    async def test_another_records_conflict(self, tenant):
        device = await device_of(tenant.admin)
        _, conflict = await stored_conflict(tenant, device, "First")
        customer = await make_customer(tenant.admin, businessName="Unrelated")
        await device.sync()
        await self.refused(
            tenant, device, raw_id(customer["id"]), conflict["conflictId"], conflict["conflictId"]
        )

    @pytest.mark.parametrize(
        "named",
        [
            "not an id",
            "",
            base64.b64encode(f"Customer:{uuid.uuid4()}".encode()).decode(),
            str(uuid.uuid4()),
            "x" * 10_000,
        ],
        ids=["text", "empty", "another type's global id", "unknown uuid", "long"],
    )
    async def test_a_malformed_or_unknown_id(self, tenant, named):
        device = await device_of(tenant.admin)
        customer = await make_customer(tenant.admin, businessName="Target")
        await device.sync()
        await self.refused(tenant, device, raw_id(customer["id"]), named, None)

    async def test_the_refusal_is_final_and_a_different_payload_is_refused(self, tenant):
        """Resent as it was: the same refusal, replayed. The same clientMutationId with
        another conflict id (or none): refused on `clientMutationId`, nothing written."""
        device = await device_of(tenant.admin)
        customer = await make_customer(tenant.admin, businessName="Target")
        await device.sync()
        record = raw_id(customer["id"])
        change = {
            **device.change("customer", record, {"lastName": "X"}),
            "resolvesConflictId": str(uuid.uuid4()),
        }
        first = await one(device, change)
        again = await one(device, change)
        assert again["replayed"] is True
        assert again["fieldErrors"] == first["fieldErrors"]
        for variant in (
            {**change, "resolvesConflictId": str(uuid.uuid4())},
            {k: v for k, v in change.items() if k != "resolvesConflictId"},
        ):
            reused = await one(device, variant)
            assert reused["outcome"] == "VALIDATION_FAILED"
            assert [e["field"] for e in reused["fieldErrors"]] == ["clientMutationId"]
        after = (await tenant.admin(READ, {"id": customer["id"]}))["customer"]
        assert after["lastName"] is None


class TestBatchLimits:
    async def test_100000_changes_are_refused_before_the_body_is_read(self, tenant):
        """A push of 100,000 changes is larger than the request limit: 413 with a GraphQL
        error body, at once, and nothing written."""
        device = await device_of(tenant.admin)
        changes = [
            {
                "clientMutationId": str(i),
                "recordId": str(uuid.uuid4()),
                "op": "UPSERT",
                "counter": i + 1,
                "patch": {"customer": {"businessName": f"C{i}"}},
            }
            for i in range(100_000)
        ]
        started = time.perf_counter()
        response = await tenant.admin.post(PUSH, {"d": device.id, "changes": changes})
        elapsed = time.perf_counter() - started
        assert response.status_code == 413
        assert "too large" in response.json()["errors"][0]["message"]
        assert elapsed < 5, elapsed
        total = await tenant.admin("{ customers(first: 1) { totalCount } }")
        assert total["customers"]["totalCount"] == 0

    async def test_1001_changes_are_a_validation_error(self, tenant):
        """Over 1,000 changes (within the size limit): a ValidationError on `changes`,
        nothing written, no receipt (the same changes split in two go through)."""
        device = await device_of(tenant.admin)
        changes = [
            device.change("customer", str(uuid.uuid4()), {"businessName": f"C{i}"}, base=None)
            for i in range(1001)
        ]
        body = (await tenant.admin.post(PUSH, {"d": device.id, "changes": changes})).json()
        assert "errors" not in body, body
        refused = body["data"]["pushChanges"]
        assert refused["__typename"] == "ValidationError"
        assert "at most 1000 changes" in refused["message"]
        total = await tenant.admin("{ customers(first: 1) { totalCount } }")
        assert total["customers"]["totalCount"] == 0
        halves = [await push(device, changes[:500]), await push(device, changes[500:])]
        assert {r["outcome"] for h in halves for r in h["results"]} == {"APPLIED"}
        assert json.dumps(halves[0]["results"][0]["record"]["data"])
