"""Every value is checked against its field's shape before it is stored, on every write path.

Regressions of the hardening findings: a conflict's merge values of any JSON, empty custom
field lists, blank emails, deeply nested custom field values, and sync-window text that
PostgreSQL cannot store. Each test writes through the API and then reads through every read
path (tests/api/read_paths.py).
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import httpx
import pytest

from tests.api.queries import (
    CREATE_CUSTOMER,
    CREATE_FIELD,
    RESULT,
    UPDATE_CUSTOMER,
    make_customer,
    make_tree,
)
from tests.api.read_paths import read_everything
from tests.api.sync_client import PUSH, Device
from tests.api.test_external_sync import HEADER, MAPPING, create_source, csv_bytes, import_text
from tests.conftest import Api, Tenant

RESOLVE = f"""mutation($id: ID!, $r: ConflictResolution!, $v: JSON) {{
  resolveConflict(id: $id, resolution: $r, values: $v) {{ {RESULT}
    ... on SyncConflict {{ status resolution }} }} }}"""
CONFLICTS = """query { conflicts(openOnly: true) { id entity fields { field } } }"""
UPDATE_ASSET = f"""mutation($id: ID!, $input: AssetFields!) {{
  updateAsset(id: $id, input: $input) {{ {RESULT} ... on Asset {{ id installDate }} }} }}"""
CUSTOM_VALUES = "customFields { key value }"
CREATE = {
    "customer": ("createCustomer", "CreateCustomerInput"),
    "contact": ("createContact", "CreateContactInput"),
    "facility": ("createFacility", "CreateFacilityInput"),
    "asset": ("createAsset", "CreateAssetInput"),
}
UPDATE = {
    "customer": ("updateCustomer", "UpdateCustomerInput"),
    "contact": ("updateContact", "ContactFields"),
    "facility": ("updateFacility", "FacilityFields"),
    "asset": ("updateAsset", "AssetFields"),
}
TYPE = {"customer": "Customer", "contact": "Contact", "facility": "Facility", "asset": "Asset"}


def raw_id(global_id: str) -> str:
    """The uuid inside a global id (the id the sync API uses)."""
    return base64.b64decode(global_id).decode().split(":", 1)[1]


def field_errors(result: dict[str, Any]) -> dict[str, str]:
    """A ValidationError's field errors by field."""
    assert result["__typename"] == "ValidationError", result
    return {e["field"]: e["message"] for e in result["fieldErrors"]}


async def define_field(api: Api, entity: str, key: str = "note", kind: str = "TEXT") -> None:
    """A custom field definition on ``entity`` (upper case)."""
    data = await api(
        CREATE_FIELD, {"input": {"entityType": entity, "key": key, "label": key, "fieldType": kind}}
    )
    assert data["createCustomField"]["__typename"] == "CustomFieldDefinition", data


async def write(api: Api, entity: str, op: str, variables: dict[str, Any]) -> dict[str, Any]:
    """Create or update one record of ``entity``; the mutation's result."""
    name, input_type = (CREATE if op == "create" else UPDATE)[entity]
    args = "input: $input" if op == "create" else "id: $id, input: $input"
    header = f"$input: {input_type}!" if op == "create" else f"$id: ID!, $input: {input_type}!"
    query = f"""mutation({header}) {{ {name}({args}) {{ {RESULT}
        ... on {TYPE[entity]} {{ id {CUSTOM_VALUES} }} }} }}"""
    return (await api(query, variables))[name]  # type: ignore[no-any-return]


def parents(ids: dict[str, str], entity: str) -> dict[str, Any]:
    """The required fields and parent link of a new record of ``entity``."""
    return {
        "customer": {"businessName": "Acme"},
        "contact": {"customerId": ids["customer"], "firstName": "Ann"},
        "facility": {"customerId": ids["customer"], "name": "HQ"},
        "asset": {"facilityId": ids["facility"], "kind": "Door"},
    }[entity]


async def post_raw(api: Api, query: str, variables_json: str) -> httpx.Response:
    """A request whose variables are JSON text as given (nesting json.dumps cannot write)."""
    body = '{"query": ' + json.dumps(query) + ', "variables": ' + variables_json + "}"
    return await api.client.post(
        "/graphql",
        content=body,
        headers={"Authorization": f"Bearer {api.token}", "Content-Type": "application/json"},
    )


async def customer_conflict(tenant: Tenant) -> tuple[Device, dict[str, str], str]:
    """A technician's MANUAL conflict on a customer's name, phones, settings, custom field
    and email: (the technician's device, the tree's ids, the conflict's id)."""
    await define_field(tenant.admin, "CUSTOMER")
    ids = await make_tree(tenant.admin)
    device = await Device(await tenant.add_user("TECHNICIAN")).register()
    await device.sync()
    server = {
        "businessName": "Server Name",
        "email": "server@acme.example",
        "phones": [{"type": "WORK", "number": "+1 555 0100"}],
        "settings": {"taxRate": 5},
        "customFields": [{"key": "note", "value": "server"}],
    }
    result = await tenant.admin(UPDATE_CUSTOMER, {"id": ids["customer"], "input": server})
    assert result["updateCustomer"]["__typename"] == "Customer", result
    client = {
        "businessName": "Phone Name",
        "email": "phone@acme.example",
        "phones": [{"type": "MOBILE", "number": "+1 555 0199"}],
        "settings": {"taxRate": 7},
        "customFields": {"note": "phone"},
    }
    [outcome] = (await device.push([device.change("customer", raw_id(ids["customer"]), client)]))[
        "results"
    ]
    assert outcome["outcome"] == "CONFLICT", outcome
    return device, ids, outcome["conflictId"]


class TestConflictMergeValues:
    """resolveConflict(MERGE, values) checks the values like any write."""

    @pytest.mark.parametrize(
        ("values", "field"),
        [
            ({"phones": {"evil": True}}, "phones"),
            ({"phones": [{"type": "WORK"}]}, "phones[0].number"),
            ({"phones": [["+1 555 0100"]]}, "phones[0]"),
            ({"settings": [1, 2]}, "settings"),
            ({"settings": {"taxRate": "high"}}, "settings.taxRate"),
            ({"settings": {"evil": 1}}, "settings.evil"),
            ({"businessName": 12345}, "businessName"),
            ({"businessName": {"a": 1}}, "businessName"),
            ({"customFields": []}, "customFields"),
            ({"customFields": {"note": [[["deep"]]]}}, "customFields.note"),
            ({"email": ""}, "email"),
            ({"email": ["a@b.example"]}, "email"),
        ],
    )
    async def test_a_value_of_the_wrong_shape_is_a_validation_error(self, tenant, values, field):
        """A merge value that is not its field's shape is refused with a field error naming
        it; the conflict stays open and every read still works."""
        device, ids, conflict = await customer_conflict(tenant)
        result = (await device.api(RESOLVE, {"id": conflict, "r": "MERGE", "v": values}))[
            "resolveConflict"
        ]
        assert field in field_errors(result), result
        assert [c["id"] for c in (await tenant.admin(CONFLICTS))["conflicts"]] == [conflict]
        await read_everything(tenant.admin, ids=list(ids.values()))
        await read_everything(device.api)

    async def test_a_technicians_hostile_merge_breaks_no_read_of_the_admin(self, tenant):
        """The reported case: a technician merges {"phones": {"evil": true}} into their own
        conflict. It is refused; the customer, the lists, pulls, the sync window, the
        export and a later import all answer; a valid merge then settles the conflict."""
        device, ids, conflict = await customer_conflict(tenant)
        source = await create_source(tenant.admin)
        data = csv_bytes([["X-1", "Server Name", "server@acme.example", "+1 555 0100", "active"]])
        assert (await import_text(tenant.admin, source, data))["__typename"] == "ImportBatch"
        result = (
            await device.api(RESOLVE, {"id": conflict, "r": "MERGE", "v": {"phones": {"evil": 1}}})
        )["resolveConflict"]
        assert "phones" in field_errors(result)
        read = await read_everything(tenant.admin, ids=list(ids.values()), source=source)
        assert (await import_text(tenant.admin, source, data))["__typename"] == "ImportBatch"
        pulled = read["pulled"][("customer", raw_id(ids["customer"]))]["data"]
        assert pulled["phones"] == [{"type": "WORK", "number": "+1 555 0100"}]
        merged = {
            "phones": [{"type": "HOME", "number": "+1 555 0111"}],
            "settings": {"taxFree": True},
        }
        result = (await device.api(RESOLVE, {"id": conflict, "r": "MERGE", "v": merged}))[
            "resolveConflict"
        ]
        assert result == {"__typename": "SyncConflict", "status": "RESOLVED", "resolution": "MERGE"}
        read = await read_everything(tenant.admin, source=source)
        pulled = read["pulled"][("customer", raw_id(ids["customer"]))]["data"]
        assert pulled["phones"] == merged["phones"]
        # The merged settings are merged by key into the server's, as any settings patch;
        # data holds all seven, the unset ones at their defaults.
        assert pulled["settings"] == {
            "taxFree": True,
            "taxRate": 5,
            "smsEnabled": False,
            "billingEmails": True,
            "marketingEmails": False,
            "reportEmails": True,
            "noEmail": False,
        }

    async def test_another_customers_email_is_refused(self, tenant):
        """Merging in an email another customer holds is a validation error on email, not
        a unique-index failure."""
        device, _, conflict = await customer_conflict(tenant)
        await make_customer(tenant.admin, businessName="Other", email="taken@acme.example")
        result = (
            await device.api(
                RESOLVE, {"id": conflict, "r": "MERGE", "v": {"email": "Taken@acme.example"}}
            )
        )["resolveConflict"]
        assert "email" in field_errors(result)
        result = (await device.api(RESOLVE, {"id": conflict, "r": "KEEP_CLIENT"}))[
            "resolveConflict"
        ]
        assert result["__typename"] == "SyncConflict", result

    async def test_an_asset_conflict_on_its_install_date_resolves(self, tenant):
        """A stored patch holds the date as JSON text: KEEP_CLIENT writes it as a date, a
        merged date string is taken, and one that is not a date is refused."""
        ids = await make_tree(tenant.admin)
        device = await Device(await tenant.add_user("TECHNICIAN")).register()
        await device.sync()

        async def conflict(date: str) -> str:
            result = await tenant.admin(
                UPDATE_ASSET, {"id": ids["asset"], "input": {"installDate": date}}
            )
            assert result["updateAsset"]["__typename"] == "Asset", result
            change = device.change("asset", raw_id(ids["asset"]), {"installDate": "2021-06-01"})
            [outcome] = (await device.push([change]))["results"]
            assert outcome["outcome"] == "CONFLICT", outcome
            return str(outcome["conflictId"])

        first = await conflict("2020-01-01")
        result = (await device.api(RESOLVE, {"id": first, "r": "KEEP_CLIENT"}))["resolveConflict"]
        assert result["__typename"] == "SyncConflict", result
        await device.sync()
        assert device.store[("asset", raw_id(ids["asset"]))]["data"]["installDate"] == "2021-06-01"
        second = await conflict("2020-02-02")
        bad = {"installDate": "soon"}
        result = (await device.api(RESOLVE, {"id": second, "r": "MERGE", "v": bad}))[
            "resolveConflict"
        ]
        assert "installDate" in field_errors(result)
        good = {"installDate": "2022-03-04"}
        result = (await device.api(RESOLVE, {"id": second, "r": "MERGE", "v": good}))[
            "resolveConflict"
        ]
        assert result["__typename"] == "SyncConflict", result
        read = await read_everything(tenant.admin, ids=list(ids.values()))
        assert read["nodes"][ids["asset"]]["installDate"] == "2022-03-04"


class TestEmptyCustomFieldLists:
    """``customFields: []`` (and null) merge nothing: the stored values stay a map."""

    @pytest.mark.parametrize("entity", ["customer", "contact", "facility", "asset"])
    async def test_online_writes_keep_the_values(self, tenant, entity):
        """Create with [] answers the record; an update with [] or null keeps the values;
        every read of the record (custom fields and badges included) still answers."""
        await define_field(tenant.admin, entity.upper())
        ids = await make_tree(tenant.admin)
        created = await write(
            tenant.admin, entity, "create", {"input": {**parents(ids, entity), "customFields": []}}
        )
        assert created["__typename"] == TYPE[entity], created
        assert created["customFields"] == [{"key": "note", "value": None}]
        record = created["id"]
        kept = [{"key": "note", "value": "kept"}]
        result = await write(
            tenant.admin, entity, "update", {"id": record, "input": {"customFields": kept}}
        )
        assert result["customFields"] == kept, result
        empties: list[list[Any] | None] = [[], None]
        for empty in empties:
            result = await write(
                tenant.admin, entity, "update", {"id": record, "input": {"customFields": empty}}
            )
            assert result["customFields"] == kept, (empty, result)
        read = await read_everything(tenant.admin, ids=[*ids.values(), record])
        assert read["nodes"][record]["customFields"] == [
            {"key": "note", "label": "note", "fieldType": "TEXT", "value": "kept"}
        ]
        pulled = read["pulled"][(entity, raw_id(record))]["data"]
        assert pulled["customFields"] == {"note": "kept"}

    @pytest.mark.parametrize("entity", ["customer", "contact", "facility", "asset"])
    async def test_pushed_writes_keep_the_values(self, tenant, entity):
        """A pushed create or edit with customFields [] or {} stores a map, and pulls
        deliver one (a patch's custom fields are the map `data` holds)."""
        await define_field(tenant.admin, entity.upper())
        ids = await make_tree(tenant.admin)
        device = await Device(tenant.admin).register()
        await device.sync()
        new = str(uuid.uuid4())
        links = {
            "customer": {},
            "contact": {"customerId": raw_id(ids["customer"])},
            "facility": {"customerId": raw_id(ids["customer"])},
            "asset": {"facilityId": raw_id(ids["facility"])},
        }[entity]
        fields = {k: v for k, v in parents(ids, entity).items() if not k.endswith("Id")}
        create = {**fields, **links, "customFields": []}
        [outcome] = (await device.push([device.change(entity, new, create)]))["results"]
        assert outcome["outcome"] == "APPLIED", outcome
        kept = {"note": "kept"}
        existing = raw_id(ids[entity])
        [outcome] = (await device.push([device.change(entity, existing, {"customFields": kept})]))[
            "results"
        ]
        assert outcome["outcome"] == "APPLIED", outcome
        await device.sync()
        empties: list[Any] = [[], {}]
        for empty in empties:
            change = device.change(entity, existing, {"customFields": empty})
            [outcome] = (await device.push([change]))["results"]
            assert outcome["outcome"] in ("APPLIED", "MERGED"), outcome
        read = await read_everything(tenant.admin, ids=list(ids.values()))
        assert read["pulled"][(entity, new)]["data"]["customFields"] == {}
        assert read["pulled"][(entity, existing)]["data"]["customFields"] == {"note": "kept"}


class TestBlankEmails:
    """An email is an address or null; a blank one is refused everywhere."""

    @pytest.mark.parametrize("blank", ["", "   "])
    async def test_a_blank_primary_email_is_refused(self, tenant, blank):
        """createCustomer / updateCustomer with a blank email is a field error; null means
        no email, and any number of customers may have none."""
        result = (
            await tenant.admin(CREATE_CUSTOMER, {"input": {"businessName": "A", "email": blank}})
        )["createCustomer"]
        assert "email" in field_errors(result)
        first = await make_customer(tenant.admin, businessName="A", email=None)
        await make_customer(tenant.admin, businessName="B", email=None)
        result = (
            await tenant.admin(UPDATE_CUSTOMER, {"id": first["id"], "input": {"email": blank}})
        )["updateCustomer"]
        assert "email" in field_errors(result)
        await make_customer(tenant.admin, businessName="C", email="c@acme.example")

    @pytest.mark.parametrize("field", ["notificationEmails", "invoiceCcEmails"])
    async def test_a_blank_email_in_a_list_is_refused(self, tenant, field):
        """A blank entry in notification or invoice-CC emails is a field error."""
        result = (
            await tenant.admin(
                CREATE_CUSTOMER, {"input": {"businessName": "A", field: ["a@acme.example", " "]}}
            )
        )["createCustomer"]
        assert f"{field}[1]" in field_errors(result)

    async def test_a_blank_contact_email_is_refused(self, tenant):
        """A contact's blank email is a field error too."""
        ids = await make_tree(tenant.admin)
        result = await write(
            tenant.admin,
            "contact",
            "create",
            {"input": {"customerId": ids["customer"], "firstName": "A", "email": ""}},
        )
        assert "email" in field_errors(result)

    async def test_a_pushed_blank_email_fails_validation(self, tenant):
        """A device's blank email is VALIDATION_FAILED on email, and nothing is stored."""
        device = await Device(tenant.admin).register()
        change = device.change(
            "customer", "0000aaaa-0000-4000-8000-000000000001", {"businessName": "A", "email": ""}
        )
        [outcome] = (await device.push([change]))["results"]
        assert outcome["outcome"] == "VALIDATION_FAILED", outcome
        assert [e["field"] for e in outcome["fieldErrors"]] == ["email"]
        assert (await read_everything(tenant.admin))["customers"] == []

    async def test_blank_cells_of_an_import_are_no_email(self, tenant):
        """In a CSV a blank cell is the only way to say "none": records without an email
        become customers without one, as many as there are."""
        source = await create_source(tenant.admin)
        rows = [["N-1", "One", "", "", "active"], ["N-2", "Two", " ", "", "active"]]
        assert (await import_text(tenant.admin, source, csv_bytes(rows, HEADER)))[
            "__typename"
        ] == "ImportBatch"
        result = await tenant.admin(
            """mutation($s: ID!) { createCustomersFromExternal(sourceId: $s,
                 externalIds: ["N-1", "N-2"]) { __typename
                 ... on SyncActionResult { refused { externalId } } } }""",
            {"s": source},
        )
        assert result["createCustomersFromExternal"]["refused"] == []
        read = await read_everything(tenant.admin, source=source)
        assert sorted((c["businessName"], c["email"]) for c in read["customers"]) == [
            ("One", None),
            ("Two", None),
        ]


class TestNestedCustomFieldValues:
    """A custom field value is one scalar; nesting of any depth is refused, never a 500."""

    @pytest.mark.parametrize("depth", [1, 50, 500, 900])
    async def test_nested_values_are_refused_online(self, tenant, depth):
        """createCustomer with a value nested ``depth`` lists deep: a field error."""
        await define_field(tenant.admin, "CUSTOMER")
        value = "[" * depth + '"x"' + "]" * depth
        variables = (
            '{"input": {"businessName": "A", "customFields": [{"key": "note", "value": '
            + value
            + "}]}}"
        )
        response = await post_raw(tenant.admin, CREATE_CUSTOMER, variables)
        assert response.status_code == 200, response.text
        result = response.json()["data"]["createCustomer"]
        assert "customFields.note" in field_errors(result)
        assert (await read_everything(tenant.admin))["customers"] == []

    @pytest.mark.parametrize("value", [[1], {"a": {"b": 1}}, [[[[]]]], {}])
    async def test_nested_values_are_refused_in_a_push(self, tenant, value):
        """A pushed list or object as a custom field value fails validation on that field."""
        await define_field(tenant.admin, "ASSET")
        ids = await make_tree(tenant.admin)
        device = await Device(tenant.admin).register()
        await device.sync()
        patch = {"customFields": {"note": value}}
        [outcome] = (await device.push([device.change("asset", raw_id(ids["asset"]), patch)]))[
            "results"
        ]
        assert outcome["outcome"] == "VALIDATION_FAILED", outcome
        assert [e["field"] for e in outcome["fieldErrors"]] == ["customFields.note"]
        read = await read_everything(tenant.admin, ids=list(ids.values()))
        assert read["pulled"][("asset", raw_id(ids["asset"]))]["data"]["customFields"] == {}

    async def test_a_push_nested_past_the_encoder_is_refused(self, tenant):
        """A pushed value nested 500 deep is refused (VALIDATION_FAILED), not a 500."""
        await define_field(tenant.admin, "CUSTOMER")
        device = await Device(tenant.admin).register()
        change = device.change(
            "customer",
            "0000aaaa-0000-4000-8000-000000000002",
            {"businessName": "A", "customFields": {"note": "PLACEHOLDER"}},
        )
        variables = json.dumps({"d": device.id, "changes": [change]}).replace(
            '"PLACEHOLDER"', "[" * 500 + "1" + "]" * 500
        )
        response = await post_raw(device.api, PUSH, variables)
        assert response.status_code == 200, response.text
        [outcome] = response.json()["data"]["pushChanges"]["results"]
        assert outcome["outcome"] == "VALIDATION_FAILED", outcome
        assert (await read_everything(tenant.admin))["customers"] == []


class TestExternalSyncText:
    """Text of the sync window PostgreSQL could not store (external ids, source names and
    columns, file names) is refused or mended, never a 500."""

    @pytest.mark.parametrize(
        "external_id",
        [
            "A\x00B",
            "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(3000)),
        ],
    )
    async def test_an_unstorable_external_id_refuses_the_import(self, tenant, external_id):
        """An id with NUL, or too long for the pairs' key, refuses the file with its line."""
        source = await create_source(tenant.admin)
        rows = [["OK-1", "Fine", "", "", "active"], [external_id, "Bad", "", "", "active"]]
        data = await tenant.admin(
            """mutation($s: ID!, $content: String) { importExternalRecords(sourceId: $s,
                 content: $content) { __typename ... on ImportRefused { errors { line column
                 reason } } } }""",
            {"s": source, "content": csv_bytes(rows, HEADER).decode()},
        )
        result = data["importExternalRecords"]
        assert result["__typename"] == "ImportRefused", result
        [error] = result["errors"]
        assert error["line"] == 3
        assert error["column"] == "Customer No"
        await read_everything(tenant.admin, source=source)

    async def test_an_action_naming_an_unstorable_id_refuses_that_item(self, tenant):
        """createCustomersFromExternal with an id holding NUL: that item is NOT_FOUND."""
        source = await create_source(tenant.admin)
        rows = [["OK-1", "Fine", "", "", "active"]]
        assert (await import_text(tenant.admin, source, csv_bytes(rows, HEADER)))[
            "__typename"
        ] == "ImportBatch"
        data = await tenant.admin(
            """mutation($s: ID!, $ids: [String!]!) { createCustomersFromExternal(sourceId: $s,
                 externalIds: $ids) { __typename ... on SyncActionResult {
                 refused { externalId code } } } }""",
            {"s": source, "ids": ["OK-1", "X\x00"]},
        )
        result = data["createCustomersFromExternal"]
        assert result["refused"] == [{"externalId": "X\x00", "code": "NOT_FOUND"}], result
        assert len((await read_everything(tenant.admin, source=source))["customers"]) == 1

    async def test_an_unstorable_file_name_is_mended(self, tenant):
        """A file name with NUL is only a label: the import is kept under a mended name."""
        source = await create_source(tenant.admin)
        rows = csv_bytes([["OK-1", "Fine", "", "", "active"]], HEADER).decode()
        data = await tenant.admin(
            """mutation($s: ID!, $content: String, $name: String) { importExternalRecords(
                 sourceId: $s, content: $content, fileName: $name) { __typename } }""",
            {"s": source, "content": rows, "name": "list\x00.csv"},
        )
        assert data["importExternalRecords"]["__typename"] == "ImportBatch", data
        await read_everything(tenant.admin, source=source)

    @pytest.mark.parametrize(
        ("changes", "field"),
        [
            ({"name": "Books\x00"}, "name"),
            ({"name": "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(3000))}, "name"),
            ({"kind": "erp\x00"}, "kind"),
            ({"mapping": [{"column": "No\x00", "field": "externalId"}]}, "mapping[0].column"),
        ],
    )
    async def test_unstorable_source_settings_are_refused(self, tenant, changes, field):
        """A source name, kind or mapped column PostgreSQL cannot store is a field error."""
        data = await tenant.admin(
            """mutation($input: CreateExternalSourceInput!) { createExternalSource(input:
                 $input) { __typename ... on ValidationError { fieldErrors { field } } } }""",
            {"input": {"name": "Books", "kind": "erp", "mapping": MAPPING, **changes}},
        )
        result = data["createExternalSource"]
        assert result["__typename"] == "ValidationError", result
        assert field in [e["field"] for e in result["fieldErrors"]]
