"""Hostile values through every write path, then every read path: no read may fail.

Each test writes a batch of generated values (wrong types, empty lists and maps, nulls,
unusual Unicode, NUL characters, over-long text, huge numbers, deep nesting, blanks)
through one write path: online create and update of each record type, ``pushChanges``,
``resolveConflict(MERGE, values)``, and the external sync window's import (JSON and CSV)
with its "create customers" action. A write may be refused (a typed error, a GraphQL
input error, ``VALIDATION_FAILED``), never answered with an internal error. Then every
read runs (tests/api/read_paths.py: ``customer``, ``customers`` typed and compiled,
``node``, the contact, facility and asset lists, a pull from the start, ``syncWindow``
and ``exportLocal``): none may fail, and every accepted write must be there. The live
subscription encodes changes with the pull's encoder, so the pull covers it.

The values come from hypothesis strategies, derandomized, and are drawn before the
writes run (``drawn``): the writes and reads need the async client and one tenant, and
one set of reads after the whole batch keeps the run well under a minute. A failure
names the input; there is no shrinking.
"""

from __future__ import annotations

import base64
import csv
import io
import os
import uuid
from typing import Any

import orjson
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.api.queries import make_tree
from tests.api.read_paths import read_everything
from tests.api.sync_client import PUSH, Device
from tests.api.test_external_sync import MAPPING, create_source
from tests.api.test_value_shapes import RESOLVE, TYPE, parents, raw_id
from tests.conftest import Api, Tenant
from tests.sync.value_strategies import (
    emails,
    hostile_for,
    hostile_values,
    json_values,
    numbers,
    stored_values,
    texts,
)

EXAMPLES = int(os.environ.get("FIELDSYNC_VALUE_FUZZ_EXAMPLES", "60"))
ENTITIES = ("customer", "contact", "facility", "asset")
KEYS = ("note", "num", "when", "flag", "pick", "unknown")
FIELDS = {
    "note": "TEXT",
    "num": "NUMBER",
    "when": "DATE",
    "flag": "CHECKBOX",
    "pick": "DROPDOWN",
}
OPTIONS = [{"value": "a", "label": "A", "badgeIcon": "star"}, {"value": "b", "label": "B"}]


def drawn(strategy: st.SearchStrategy[Any], count: int = EXAMPLES) -> list[Any]:
    """``count`` values of ``strategy``, the same ones on every run."""
    found: list[Any] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(value: Any) -> None:
        found.append(value)

    collect()
    return found


# --------------------------------------------------------------------------- inputs

custom_inputs: st.SearchStrategy[list[dict[str, Any]] | None] = st.one_of(
    st.none(),
    st.just([]),
    st.lists(
        st.fixed_dictionaries(
            {
                "key": st.sampled_from(KEYS),
                "value": st.one_of(
                    st.sampled_from(["a", "b", "2024-02-29", "x", 3, True]), hostile_values
                ),
            }
        ),
        max_size=3,
    ),
)
text_or_null = st.none() | texts
phone_inputs = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["MOBILE", "WORK", "FAX"]),
        "number": hostile_for(st.sampled_from(["+1 555 0100", "555 0199"])) | texts,
    }
)
address_inputs = st.fixed_dictionaries(
    {"type": st.sampled_from(["BILL_TO", "SHIP_TO", "PHYSICAL"])},
    optional={"line1": text_or_null, "city": text_or_null, "postalCode": text_or_null},
)
INPUTS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "customer": st.fixed_dictionaries(
        {},
        optional={
            "businessName": text_or_null,
            "firstName": text_or_null,
            "email": st.none() | emails,
            "phones": st.none() | st.lists(phone_inputs, max_size=3),
            "addresses": st.none() | st.lists(address_inputs, max_size=2),
            "notificationEmails": st.none() | st.lists(emails, max_size=3),
            "invoiceCcEmails": st.none() | st.lists(emails, max_size=60),
            "settings": st.none()
            | st.fixed_dictionaries(
                {},
                optional={
                    "taxRate": st.none() | st.floats(-1e300, 1e300),
                    "taxFree": st.none() | st.booleans(),
                    "noEmail": st.booleans(),
                },
            ),
            "customFields": custom_inputs,
        },
    ),
    "contact": st.fixed_dictionaries(
        {},
        optional={
            "firstName": text_or_null,
            "lastName": text_or_null,
            "email": st.none() | emails,
            "phones": st.none() | st.lists(phone_inputs, max_size=2),
            "notes": text_or_null,
            "customFields": custom_inputs,
        },
    ),
    "facility": st.fixed_dictionaries(
        {},
        optional={
            "name": text_or_null,
            "address": st.none()
            | st.fixed_dictionaries({}, optional={"line1": text_or_null, "city": text_or_null}),
            "notes": text_or_null,
            "customFields": custom_inputs,
        },
    ),
    "asset": st.fixed_dictionaries(
        {},
        optional={
            "kind": text_or_null,
            "serialNumber": text_or_null,
            "installDate": st.none() | st.sampled_from(["2024-02-29", "1900-01-01", "2023-02-29"]),
            "notes": text_or_null,
            "customFields": custom_inputs,
        },
    ),
}
writes = st.tuples(st.sampled_from(ENTITIES), st.sampled_from(["create", "update"]), st.data()).map(
    lambda t: (t[0], t[1], t[2].draw(INPUTS[t[0]]))
)


# --------------------------------------------------------------------------- helpers


def refused_or_done(body: dict[str, Any], what: Any) -> None:
    """An answer that is a result or an expected refusal, never an internal error."""
    for error in body.get("errors") or []:
        assert error.get("extensions", {}).get("code") != "INTERNAL_SERVER_ERROR", (what, body)


async def post(api: Api, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    """POST a document; the JSON body (the status must not be a server error)."""
    response = await api.post(query, variables)
    assert response.status_code < 500, (variables, response.text)
    body: dict[str, Any] = response.json()
    refused_or_done(body, variables)
    return body


async def setup(tenant: Tenant) -> dict[str, str]:
    """Custom fields of every type on every record type, and one record tree."""
    for entity in ENTITIES:
        for key, kind in FIELDS.items():
            field: dict[str, Any] = {
                "entityType": entity.upper(),
                "key": key,
                "label": key,
                "fieldType": kind,
            }
            if kind == "DROPDOWN":
                field["options"] = OPTIONS
            body = await post(
                tenant.admin,
                """mutation($input: CreateCustomFieldInput!) { createCustomField(input: $input) {
                     __typename } }""",
                {"input": field},
            )
            assert body["data"]["createCustomField"]["__typename"] == "CustomFieldDefinition"
    return await make_tree(tenant.admin)


def mutation(entity: str, op: str) -> tuple[str, str]:
    """The document and root field that creates or updates ``entity``."""
    name = f"{op}{TYPE[entity]}"
    if op == "create":
        header, args = f"$input: Create{TYPE[entity]}Input!", "input: $input"
    else:
        input_type = "UpdateCustomerInput" if entity == "customer" else f"{TYPE[entity]}Fields"
        header, args = f"$id: ID!, $input: {input_type}!", "id: $id, input: $input"
    query = f"""mutation({header}) {{ {name}({args}) {{ __typename
      ... on {TYPE[entity]} {{ id }} ... on UserError {{ code message }} }} }}"""
    return query, name


def assert_readable(read: dict[str, Any], accepted: dict[str, str]) -> None:
    """Every accepted record answers node(id) and reached a fresh device's pull."""
    for global_id, entity in accepted.items():
        assert read["nodes"].get(global_id) is not None, (entity, global_id)
        assert (entity, raw_id(global_id)) in read["pulled"], (entity, global_id)


# --------------------------------------------------------------------------- tests


class TestHostileWritesThenReads:
    """Whatever a write path accepts, every read path reads back."""

    async def test_online_creates_and_updates(self, tenant: Tenant) -> None:
        """createX / updateX of customers, contacts, facilities and assets."""
        ids = await setup(tenant)
        accepted = {ids[e]: e for e in ENTITIES}
        for entity, op, values in drawn(writes):
            query, name = mutation(entity, op)
            if op == "create":
                variables: dict[str, Any] = {"input": {**parents(ids, entity), **values}}
            else:
                variables = {"id": ids[entity], "input": values}
            body = await post(tenant.admin, query, variables)
            result = (body.get("data") or {}).get(name) or {}
            if result.get("__typename") == TYPE[entity]:
                accepted[result["id"]] = entity
        # Not vacuous: writes beyond the starting tree got through.
        assert len(accepted) > len(ENTITIES) + 2, accepted
        read = await read_everything(tenant.admin, ids=list(accepted))
        assert_readable(read, accepted)

    async def test_pushed_upserts(self, tenant: Tenant) -> None:
        """pushChanges creates and edits, each its own outcome."""
        ids = await setup(tenant)
        device = await Device(tenant.admin).register()
        await device.sync()
        accepted = {ids[e]: e for e in ENTITIES}
        links = {
            "customer": {},
            "contact": {"customerId": raw_id(ids["customer"])},
            "facility": {"customerId": raw_id(ids["customer"])},
            "asset": {"facilityId": raw_id(ids["facility"])},
        }
        for entity, op, inputs in drawn(writes):
            # A patch holds custom fields as the map a pull's data holds.
            values = as_patch(inputs)
            if op == "create":
                record = str(uuid.uuid4())
                required = {k: v for k, v in parents(ids, entity).items() if not k.endswith("Id")}
                change = device.change(entity, record, {**required, **links[entity], **values})
            else:
                record = raw_id(ids[entity])
                change = device.change(entity, record, values, base=None)
            body = await post(device.api, PUSH, {"d": device.id, "changes": [change]})
            result = (body.get("data") or {}).get("pushChanges") or {}
            for outcome in result.get("results", []):
                assert outcome["outcome"] != "FORBIDDEN", outcome
                if outcome["outcome"] in ("APPLIED", "MERGED") and op == "create":
                    accepted[_global(entity, record)] = entity
        # Not vacuous: writes beyond the starting tree got through.
        assert len(accepted) > len(ENTITIES) + 2, accepted
        read = await read_everything(tenant.admin, ids=list(accepted))
        assert_readable(read, accepted)

    async def test_conflict_merge_values(self, tenant: Tenant) -> None:
        """resolveConflict(MERGE, values) with any JSON for the conflicting fields."""
        await setup(tenant)
        device = await Device(await tenant.add_user("TECHNICIAN")).register()
        merges = drawn(
            st.dictionaries(
                st.sampled_from(sorted(stored_values)),
                st.one_of(json_values, hostile_values),
                min_size=1,
                max_size=3,
            ).flatmap(
                lambda keys: (
                    st.fixed_dictionaries({k: stored_values[k] for k in keys}) | st.just(keys)
                )
            ),
            count=max(EXAMPLES // 2, 5),
        )
        server = {
            "businessName": "Server",
            "firstName": "S",
            "email": "server@acme.example",
            "phones": [{"type": "WORK", "number": "+1 555 0100"}],
            "addresses": [{"type": "BILL_TO", "line1": "Server St"}],
            "notificationEmails": ["s@acme.example"],
            "settings": {"taxRate": 5},
            "customFields": [{"key": "note", "value": "server"}],
        }
        resolved = 0
        for index, values in enumerate(merges):
            customer = str(uuid.uuid4())
            create = device.change("customer", customer, {"businessName": f"C{index}"})
            [created] = (await device.push([create]))["results"]
            assert created["outcome"] == "APPLIED", created
            await device.sync()
            global_id = _global("customer", customer)
            body = await post(
                tenant.admin,
                """mutation($id: ID!, $input: UpdateCustomerInput!) { updateCustomer(id: $id,
                   input: $input) { __typename } }""",
                {"id": global_id, "input": {**server, "email": f"s{index}@acme.example"}},
            )
            assert body["data"]["updateCustomer"]["__typename"] == "Customer", body
            client = {**server, "businessName": "Phone", "firstName": "P"}
            client |= {"email": f"p{index}@acme.example", "settings": {"taxRate": 7}}
            client |= {"phones": [], "addresses": [], "notificationEmails": []}
            client |= {"customFields": {"note": "phone"}}
            [outcome] = (await device.push([device.change("customer", customer, client)]))[
                "results"
            ]
            assert outcome["outcome"] == "CONFLICT", outcome
            body = await post(
                device.api, RESOLVE, {"id": outcome["conflictId"], "r": "MERGE", "v": values}
            )
            result = body["data"]["resolveConflict"]
            assert result["__typename"] in ("SyncConflict", "ValidationError"), (values, result)
            resolved += result["__typename"] == "SyncConflict"
        read = await read_everything(tenant.admin)
        await read_everything(device.api)
        assert len(read["customers"]) == len(merges) + 1
        assert resolved, "no merge got through: the strategy only tests refusals"

    async def test_imports_and_created_customers(self, tenant: Tenant) -> None:
        """importExternalRecords of JSON and CSV files with any cells, then
        createCustomersFromExternal for every new external record; the window, the
        export and every customer read still answer."""
        await setup(tenant)
        source = await create_source(tenant.admin)
        # Mostly rows an accounting package writes (unusual text, blank or odd emails), so
        # files get through to the window; sometimes a row of anything, refusing the file.
        good = st.fixed_dictionaries(
            {
                "Customer No": st.text(min_size=1, max_size=8),
                "Company": st.sampled_from(["Acme", "Ünïcödé GmbH", "=SUM(A1)", "😀"]) | texts,
                "E-mail": st.sampled_from(["", "x@acme.example", "X@Acme.Example", "a b@c"]),
                "Phone": st.sampled_from(["", "+1 555 0100", "+", "555"]),
                "Status": st.sampled_from(["active", "inactive", "", "yes", "no"]),
            }
        )
        cell = st.one_of(scalar_cells, hostile_values)
        hostile = st.fixed_dictionaries({m["column"]: cell for m in MAPPING})
        records = st.lists(st.one_of(good, good, good, good, hostile), min_size=1, max_size=4)
        imported = 0
        for index, (rows, as_json) in enumerate(
            drawn(st.tuples(records, st.booleans()), count=max(EXAMPLES // 2, 5))
        ):
            for row in rows:
                row["Customer No"] = f"{index}-{row['Customer No']}"[:40]
            content = _json_file(rows) if as_json else _csv_file(rows)
            if content is None:
                continue
            body = await post(
                tenant.admin,
                """mutation($s: ID!, $content: String) { importExternalRecords(sourceId: $s,
                   content: $content) { __typename } }""",
                {"s": source, "content": content},
            )
            kind = body["data"]["importExternalRecords"]["__typename"]
            assert kind in ("ImportBatch", "ImportRefused"), body
            imported += kind == "ImportBatch"
            ids = [str(row["Customer No"]) for row in rows]
            await post(
                tenant.admin,
                """mutation($s: ID!, $ids: [String!]!) { createCustomersFromExternal(
                   sourceId: $s, externalIds: $ids) { __typename } }""",
                {"s": source, "ids": ids},
            )
        read = await read_everything(tenant.admin, source=source)
        # Not vacuous: some files got through and made customers.
        assert imported
        assert len(read["customers"]) > 1


scalar_cells = st.one_of(
    st.none(),
    st.booleans(),
    numbers,
    texts,
    emails,
    st.sampled_from(["active", "inactive", "+1 555 0100", "Acme"]),
)


def as_patch(values: dict[str, Any]) -> dict[str, Any]:
    """Online input values as a sync patch: custom fields as a map, not a list."""
    custom = values.get("customFields")
    if not isinstance(custom, list):
        return values
    return {**values, "customFields": {item["key"]: item["value"] for item in custom}}


def _global(entity: str, record: str) -> str:
    return base64.b64encode(f"{TYPE[entity]}:{record}".encode()).decode()


def _json_file(rows: list[dict[str, Any]]) -> str | None:
    try:
        return orjson.dumps(rows).decode()
    except orjson.JSONEncodeError:
        return None  # deeper than any JSON encoder writes: no client can send this file


def _csv_file(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([m["column"] for m in MAPPING])
    for row in rows:
        writer.writerow(
            ["" if row[m["column"]] is None else str(row[m["column"]]) for m in MAPPING]
        )
    return out.getvalue()
