"""The sync contract through the HTTP API: devices, selection, pull, push, conflicts, state."""

from __future__ import annotations

import uuid

import pytest

from tests.api.queries import CREATE_FIELD, UPDATE_CUSTOMER, make_customer, make_tree
from tests.api.sync_client import PUSH, Device


def raw_id(global_id: str) -> str:
    import base64

    return base64.b64decode(global_id).decode().split(":", 1)[1]


def evicted(page) -> list[str]:
    """Customers whose records the page evicts (each with all its records)."""
    return sorted({c["customerId"] for c in page["changes"] if c["op"] == "EVICT"})


async def technician(tenant, **caps):
    return await Device(await tenant.add_user("TECHNICIAN", **caps)).register()


class TestRegisterAndSelect:
    async def test_register_gives_a_fresh_replica_each_time(self, tenant):
        """Every registration gets a new replica id, never a reused one."""
        a = await Device(tenant.admin).register()
        b = await Device(tenant.admin).register()
        assert a.replica != b.replica
        assert a.id != b.id

    async def test_selecting_needs_the_capability(self, tenant):
        """Without 'sync by customer' a technician cannot select; with it they can."""
        c = await make_customer(tenant.admin)
        plain = await technician(tenant)
        refused = await plain.select("SELECTED", [raw_id(c["id"])])
        assert refused["__typename"] == "Forbidden"
        allowed = await technician(tenant, syncByCustomer=True)
        ok = await allowed.select("SELECTED", [raw_id(c["id"])])
        assert ok == {
            "__typename": "Device",
            "selectionMode": "SELECTED",
            "selectedCustomerIds": [raw_id(c["id"])],
        }

    async def test_unknown_customer_in_selection_is_a_validation_error(self, tenant):
        """Selecting an id that is not a live customer is refused."""
        device = await technician(tenant, syncByCustomer=True)
        result = await device.select("SELECTED", [str(uuid.uuid4())])
        assert result["__typename"] == "ValidationError"

    async def test_another_users_device_is_not_found(self, tenant):
        """A device belongs to the user who registered it."""
        mine = await technician(tenant)
        other = Device(await tenant.add_user("TECHNICIAN"), id=mine.id)
        errors = await other.api.errors(
            "query($d: ID!) { pull(deviceId: $d) { checkpoint } }", {"d": mine.id}
        )
        assert errors[0]["extensions"]["code"] == "NOT_FOUND"
        result = await other.push(
            [other.change("customer", str(uuid.uuid4()), {"businessName": "X"})]
        )
        assert result["__typename"] == "NotFound"


class TestPull:
    async def test_initial_sync_in_pages_gets_everything(self, tenant):
        """Paging with a small limit delivers every live record exactly once."""
        for i in range(3):
            await make_tree(tenant.admin, name=f"C{i}")
        device = await technician(tenant)
        pages = await device.sync(limit=2)
        assert pages == 6
        assert len(device.store) == 12
        assert (await device.state())["status"] == "SYNCED"

    async def test_changes_after_the_checkpoint_only(self, tenant):
        """A second pull returns only what changed since, including tombstones."""
        ids = await make_tree(tenant.admin)
        device = await technician(tenant)
        await device.sync()
        await tenant.admin(
            UPDATE_CUSTOMER, {"id": ids["customer"], "input": {"businessName": "Renamed"}}
        )
        await tenant.admin(
            "mutation($id: ID!) { deleteAsset(id: $id) { __typename } }", {"id": ids["asset"]}
        )
        page = await device.pull_page()
        assert [(c["entity"], c["op"]) for c in page["changes"]] == [
            ("CUSTOMER", "UPSERT"),
            ("ASSET", "DELETE"),
        ]
        assert (
            device.store[("customer", raw_id(ids["customer"]))]["data"]["businessName"] == "Renamed"
        )
        assert ("asset", raw_id(ids["asset"])) not in device.store

    async def test_selection_limits_and_new_customers_arrive_whole(self, tenant):
        """Only selected customers sync; a newly selected one arrives whole even though its
        rows are older than the checkpoint; an unselected one comes back as EVICTs of its
        records."""
        a = await make_tree(tenant.admin, name="A")
        b = await make_tree(tenant.admin, name="B")
        device = await technician(tenant, syncByCustomer=True)
        await device.select("SELECTED", [raw_id(a["customer"])])
        await device.sync()
        assert device.customers() == {raw_id(a["customer"])}
        assert len(device.store) == 4
        await device.select("SELECTED", [raw_id(a["customer"]), raw_id(b["customer"])])
        await device.sync()
        assert len(device.store) == 8
        await device.select("SELECTED", [raw_id(b["customer"])])
        page = await device.pull_page()
        assert evicted(page) == [raw_id(a["customer"])]
        assert [c["op"] for c in page["changes"]] == ["EVICT"] * 4
        assert device.customers() == {raw_id(b["customer"])}
        assert len(device.store) == 4

    async def test_a_first_pull_evicts_nothing_and_a_switch_from_all_evicts_the_rest(self, tenant):
        """A new device holds nothing to drop; one that synced everything and then selects
        one customer is told to drop the others."""
        a = await make_tree(tenant.admin, name="A")
        b = await make_tree(tenant.admin, name="B")
        fresh = await technician(tenant, syncByCustomer=True)
        await fresh.select("SELECTED", [raw_id(a["customer"])])
        page = await fresh.pull_page()
        assert evicted(page) == []
        assert fresh.customers() == {raw_id(a["customer"])}
        everything = await technician(tenant, syncByCustomer=True)
        await everything.sync()
        assert everything.customers() == {raw_id(a["customer"]), raw_id(b["customer"])}
        await everything.select("SELECTED", [raw_id(a["customer"])])
        page = await everything.pull_page()
        assert evicted(page) == [raw_id(b["customer"])]
        assert everything.customers() == {raw_id(a["customer"])}

    async def test_archive_evicts_and_reenable_brings_back(self, tenant):
        """Archiving evicts a customer from devices; re-enabling sends it whole again."""
        ids = await make_tree(tenant.admin)
        device = await technician(tenant)
        await device.sync()
        await tenant.admin(
            "mutation($id: ID!) { archiveCustomer(id: $id) { __typename } }",
            {"id": ids["customer"]},
        )
        page = await device.pull_page()
        assert evicted(page) == [raw_id(ids["customer"])]
        assert device.store == {}
        await tenant.admin(
            "mutation($id: ID!) { reenableCustomer(id: $id) { __typename } }",
            {"id": ids["customer"]},
        )
        await device.sync()
        assert len(device.store) == 4

    async def test_capability_withdrawn_switches_to_all(self, tenant):
        """When an admin withdraws 'sync by customer', the device syncs every customer."""
        a = await make_tree(tenant.admin, name="A")
        await make_tree(tenant.admin, name="B")
        user = await tenant.add_user("TECHNICIAN", syncByCustomer=True)
        device = await Device(user).register()
        await device.select("SELECTED", [raw_id(a["customer"])])
        await device.sync()
        assert len(device.customers()) == 1
        me = await user("{ me { id } }")
        await tenant.admin(
            """mutation($id: ID!) { setUserPermissions(userId: $id, capabilities: {syncByCustomer: false}) {
            __typename } }""",
            {"id": me["me"]["id"]},
        )
        await device.sync()
        assert len(device.customers()) == 2

    async def test_forged_and_future_checkpoints_are_refused(self, tenant):
        """A checkpoint this server did not issue, or one ahead of it, is a clear error."""
        device = await technician(tenant)
        import base64

        future = base64.urlsafe_b64encode(b"v1.99999.-1..99999").decode()
        for bad in ("garbage", future):
            errors = await device.api.errors(
                "query($d: ID!, $s: String) { pull(deviceId: $d, since: $s) { checkpoint } }",
                {"d": device.id, "s": bad},
            )
            assert errors[0]["extensions"]["code"] == "BAD_USER_INPUT"

    async def test_limit_is_capped(self, tenant):
        """A page size over the cap is refused."""
        device = await technician(tenant)
        errors = await device.api.errors(
            "query($d: ID!) { pull(deviceId: $d, limit: 100000) { checkpoint } }", {"d": device.id}
        )
        assert errors[0]["extensions"]["code"] == "BAD_USER_INPUT"

    async def test_other_tenants_rows_never_arrive(self, tenant, other_tenant):
        """A device pulls only its own tenant's records."""
        await make_tree(other_tenant.admin)
        device = await technician(tenant)
        await device.sync()
        assert device.store == {}


class TestPush:
    async def test_create_then_edit_applied(self, tenant):
        """A device creates a customer and edits it: APPLIED with a version for its replica."""
        device = await technician(tenant)
        cid = str(uuid.uuid4())
        result = await device.push(
            [device.change("customer", cid, {"businessName": "Offline Co"}, base=None)]
        )
        [created] = result["results"]
        assert created["outcome"] == "APPLIED"
        assert created["version"] == {device.replica: 1}
        edit = await device.push(
            [device.change("customer", cid, {"lastName": "X"}, base=created["version"])]
        )
        assert edit["results"][0]["outcome"] == "APPLIED"
        assert edit["results"][0]["version"] == {device.replica: 2}

    async def test_merged_when_server_changed_other_fields(self, tenant):
        """The server moved on in other fields: MERGED, both sides kept."""
        ids = await make_tree(tenant.admin)
        device = await technician(tenant)
        await device.sync()
        await tenant.admin(
            UPDATE_CUSTOMER, {"id": ids["customer"], "input": {"email": "new@x.example"}}
        )
        result = await device.push(
            [device.change("customer", raw_id(ids["customer"]), {"lastName": "Phone"})]
        )
        assert result["results"][0]["outcome"] == "MERGED"
        node = await tenant.admin(
            "query($id: ID!) { customer(id: $id) { email lastName } }", {"id": ids["customer"]}
        )
        assert node["customer"] == {"email": "new@x.example", "lastName": "Phone"}

    async def test_conflict_is_stored_under_manual_and_resolved(self, tenant):
        """Both sides changed a field: CONFLICT with both values, stored; resolving it is a
        new versioned write that the device pulls."""
        ids = await make_tree(tenant.admin)
        device = await technician(tenant)
        await device.sync()
        await tenant.admin(
            UPDATE_CUSTOMER, {"id": ids["customer"], "input": {"businessName": "Server Name"}}
        )
        result = await device.push(
            [device.change("customer", raw_id(ids["customer"]), {"businessName": "Phone Name"})]
        )
        [outcome] = result["results"]
        assert outcome["outcome"] == "CONFLICT"
        assert outcome["conflicts"] == [
            {"field": "businessName", "serverValue": "Server Name", "clientValue": "Phone Name"}
        ]
        assert (await device.state())["status"] == "CONFLICTS"
        data = await device.api(
            """mutation($id: ID!) { resolveConflict(id: $id, resolution: MERGE,
            values: {businessName: "Both Names"}) { __typename ... on SyncConflict { status resolution } } }""",
            {"id": outcome["conflictId"]},
        )
        assert data["resolveConflict"] == {
            "__typename": "SyncConflict",
            "status": "RESOLVED",
            "resolution": "MERGE",
        }
        await device.sync()
        assert (
            device.store[("customer", raw_id(ids["customer"]))]["data"]["businessName"]
            == "Both Names"
        )

    @pytest.mark.parametrize(
        ("resolution", "expected"), [("KEEP_SERVER", "Server Name"), ("KEEP_CLIENT", "Phone Name")]
    )
    async def test_keep_server_or_client(self, tenant, resolution, expected):
        """KEEP_SERVER and KEEP_CLIENT settle the field either way and bump the version."""
        ids = await make_tree(tenant.admin)
        device = await technician(tenant)
        await device.sync()
        await tenant.admin(
            UPDATE_CUSTOMER, {"id": ids["customer"], "input": {"businessName": "Server Name"}}
        )
        [outcome] = (
            await device.push(
                [device.change("customer", raw_id(ids["customer"]), {"businessName": "Phone Name"})]
            )
        )["results"]
        await device.api(
            f"""mutation($id: ID!) {{ resolveConflict(id: $id, resolution: {resolution}) {{ __typename }} }}""",
            {"id": outcome["conflictId"]},
        )
        await device.sync()
        assert (
            device.store[("customer", raw_id(ids["customer"]))]["data"]["businessName"] == expected
        )

    @pytest.mark.parametrize(
        ("policy", "expected"), [("SERVER_WINS", "Server Name"), ("CLIENT_WINS", "Phone Name")]
    )
    async def test_tenant_policy_decides(self, tenant, policy, expected):
        """SERVER_WINS and CLIENT_WINS settle a conflict at once (reported as MERGED)."""
        data = await tenant.admin(
            f"mutation {{ setConflictPolicy(entity: CUSTOMER, policy: {policy}) {{ __typename }} }}"
        )
        assert data["setConflictPolicy"]["__typename"] == "ConflictPolicies"
        ids = await make_tree(tenant.admin)
        device = await technician(tenant)
        await device.sync()
        await tenant.admin(
            UPDATE_CUSTOMER, {"id": ids["customer"], "input": {"businessName": "Server Name"}}
        )
        [outcome] = (
            await device.push(
                [device.change("customer", raw_id(ids["customer"]), {"businessName": "Phone Name"})]
            )
        )["results"]
        assert outcome["outcome"] == "MERGED"
        assert outcome["conflicts"][0]["field"] == "businessName"
        node = await tenant.admin(
            "query($id: ID!) { customer(id: $id) { businessName } }", {"id": ids["customer"]}
        )
        assert node["customer"]["businessName"] == expected

    async def test_deleted_elsewhere(self, tenant):
        """Editing a record someone else deleted: DELETED, the device drops it."""
        ids = await make_tree(tenant.admin)
        device = await technician(tenant)
        await device.sync()
        await tenant.admin(
            "mutation($id: ID!) { deleteAsset(id: $id) { __typename } }", {"id": ids["asset"]}
        )
        [outcome] = (
            await device.push([device.change("asset", raw_id(ids["asset"]), {"notes": "fixed"})])
        )["results"]
        assert outcome["outcome"] == "DELETED"

    async def test_field_made_required_fails_then_fix_and_push_again(self, tenant):
        """An offline edit lacking a newly required field fails validation; with it, it applies."""
        ids = await make_tree(tenant.admin)
        device = await technician(tenant)
        await device.sync()
        await tenant.admin(
            CREATE_FIELD,
            {
                "input": {
                    "entityType": "ASSET",
                    "key": "inspected",
                    "label": "Inspected",
                    "fieldType": "DATE",
                    "required": True,
                }
            },
        )
        [failed] = (
            await device.push([device.change("asset", raw_id(ids["asset"]), {"notes": "done"})])
        )["results"]
        assert failed["outcome"] == "VALIDATION_FAILED"
        assert failed["fieldErrors"][0]["field"] == "customFields.inspected"
        fixed = device.change(
            "asset",
            raw_id(ids["asset"]),
            {"notes": "done", "customFields": {"inspected": "2026-11-20"}},
        )
        [ok] = (await device.push([fixed]))["results"]
        assert ok["outcome"] == "APPLIED"

    async def test_replay_returns_first_outcome_and_writes_nothing(self, tenant):
        """A push retried after a lost response returns the stored outcome, applies nothing."""
        device = await technician(tenant)
        change = device.change("customer", str(uuid.uuid4()), {"businessName": "Once"}, base=None)
        first = await device.push([change])
        again = await device.push([change])
        assert again["results"][0]["replayed"] is True
        assert again["results"][0]["version"] == first["results"][0]["version"]
        total = await tenant.admin("{ customers(first: 10) { totalCount } }")
        assert total["customers"]["totalCount"] == 1

    async def test_reused_client_mutation_id_with_other_payload_is_refused(self, tenant):
        """The same clientMutationId with a different change is refused, not applied."""
        device = await technician(tenant)
        change = device.change("customer", str(uuid.uuid4()), {"businessName": "One"}, base=None)
        await device.push([change])
        forged = {**change, "patch": {"customer": {"businessName": "Two"}}}
        [outcome] = (await device.push([forged]))["results"]
        assert outcome["outcome"] == "VALIDATION_FAILED"
        assert outcome["fieldErrors"][0]["field"] == "clientMutationId"

    async def test_counter_going_backwards_requires_reregistration(self, tenant):
        """A change whose counter is not above the device's last one is rejected."""
        device = await technician(tenant)
        await device.push(
            [device.change("customer", str(uuid.uuid4()), {"businessName": "A"}, base=None)]
        )
        device.counter = 0
        result = await device.push(
            [device.change("customer", str(uuid.uuid4()), {"businessName": "B"}, base=None)]
        )
        assert result["reregisterRequired"] is True
        assert result["results"][0]["fieldErrors"][0]["field"] == "counter"

    async def test_one_bad_change_does_not_block_the_others(self, tenant):
        """A batch with an invalid change applies the valid ones around it."""
        device = await technician(tenant)
        changes = [
            device.change("customer", str(uuid.uuid4()), {"businessName": "Good 1"}, base=None),
            device.change(
                "customer", str(uuid.uuid4()), {"email": "nameless@x.example"}, base=None
            ),
            device.change("customer", str(uuid.uuid4()), {"businessName": "Good 2"}, base=None),
        ]
        result = await device.push(changes)
        assert [r["outcome"] for r in result["results"]] == [
            "APPLIED",
            "VALIDATION_FAILED",
            "APPLIED",
        ]
        total = await tenant.admin("{ customers(first: 10) { totalCount } }")
        assert total["customers"]["totalCount"] == 2

    async def test_base_from_the_future_is_refused(self, tenant):
        """A base version the server never had fails validation."""
        ids = await make_tree(tenant.admin)
        device = await technician(tenant)
        [outcome] = (
            await device.push(
                [
                    device.change(
                        "customer", raw_id(ids["customer"]), {"lastName": "X"}, base={"server": 99}
                    )
                ]
            )
        )["results"]
        assert outcome["outcome"] == "VALIDATION_FAILED"
        assert outcome["fieldErrors"][0]["field"] == "baseVersion"

    async def test_archived_customer_is_forbidden(self, tenant):
        """Edits to an archived customer's records are FORBIDDEN."""
        ids = await make_tree(tenant.admin)
        device = await technician(tenant)
        await device.sync()
        await tenant.admin(
            "mutation($id: ID!) { archiveCustomer(id: $id) { __typename } }",
            {"id": ids["customer"]},
        )
        [outcome] = (
            await device.push([device.change("contact", raw_id(ids["contact"]), {"title": "Boss"})])
        )["results"]
        assert outcome["outcome"] == "FORBIDDEN"

    async def test_batch_over_the_cap_is_refused_whole(self, tenant):
        """More than 1,000 changes in one push is a clear error and nothing is applied."""
        device = await technician(tenant)
        changes = [
            device.change("customer", str(uuid.uuid4()), {"businessName": f"C{i}"}, base=None)
            for i in range(1001)
        ]
        result = await device.push(changes)
        assert result["__typename"] == "ValidationError"
        assert "at most 1000" in result["message"]

    async def test_unknown_field_in_patch_is_a_graphql_error(self, tenant):
        """A patch field that does not exist is rejected by the schema, nothing written."""
        device = await technician(tenant)
        change = device.change("customer", str(uuid.uuid4()), {"nope": 1}, base=None)
        errors = await device.api.errors(PUSH, {"d": device.id, "changes": [change]})
        assert "nope" in errors[0]["message"]

    async def test_created_customer_joins_the_selection(self, tenant):
        """A customer created on a device in SELECTED mode is added to its selection."""
        other = await make_customer(tenant.admin, businessName="Other")
        device = await technician(tenant, syncByCustomer=True)
        await device.select("SELECTED", [raw_id(other["id"])])
        cid = str(uuid.uuid4())
        await device.push([device.change("customer", cid, {"businessName": "Mine"}, base=None)])
        view = await device.api("{ devices { selectedCustomerIds } }")
        assert set(view["devices"][0]["selectedCustomerIds"]) == {cid, raw_id(other["id"])}


class TestSyncState:
    async def test_statuses_follow_the_facts(self, tenant):
        """NEVER_SYNCED before a pull, SYNCED after, BEHIND once the server moves on or the
        device reports pending edits."""
        device = await technician(tenant)
        assert (await device.state())["status"] == "NEVER_SYNCED"
        await device.sync()
        assert (await device.state())["status"] == "SYNCED"
        await make_customer(tenant.admin)
        state = await device.state()
        assert state["status"] == "BEHIND"
        assert state["lag"] >= 1
        await device.sync()
        await device.api(
            """mutation($d: ID!) { reportDevice(deviceId: $d, input: {pendingChanges: 3}) { __typename } }""",
            {"d": device.id},
        )
        assert (await device.state())["status"] == "BEHIND"

    async def test_admin_sees_every_device(self, tenant):
        """devices() lists all devices for admins with their state; technicians see their own."""
        a = await technician(tenant)
        b = await technician(tenant)
        await a.sync()
        listing = await tenant.admin("{ devices { id syncState { status } } }")
        states = {d["id"]: d["syncState"]["status"] for d in listing["devices"]}
        assert states == {a.id: "SYNCED", b.id: "NEVER_SYNCED"}
        never = await tenant.admin("{ devices(status: NEVER_SYNCED) { id } }")
        assert [d["id"] for d in never["devices"]] == [b.id]
        own = await a.api("{ devices { id } }")
        assert [d["id"] for d in own["devices"]] == [a.id]
