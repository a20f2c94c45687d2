"""One sync shape per record type (sync contract v2), through the public HTTP API.

The law: a pulled record with any field changed, sent back as a patch (the whole ``data``
object, or only the changed field), is accepted, and the next pull returns exactly the sent
values; the read API (``node(id: <uuid>)``, ``customer(id: <uuid>)``) agrees with ``data``
field by field (custom field lists read as maps, global ids as uuids). Hypothesis draws the
changes: every pushable record type and field, custom fields of each field type, empty
lists, nulls, unusual Unicode, the longest text and the longest lists a record may hold.

Also here: what ``data`` holds exactly (settings with defaults, complete addresses, no
``archived``), links a patch may carry (records cannot move), the v1 list form of custom
fields refused, hostile custom field maps (deep, huge; inline and as variables) refused
cleanly, and record uuids accepted wherever an id is.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from db.engine import Database
from db.queries import records as record_queries
from sync.record_shape import ADDRESS_KEYS, SETTING_DEFAULTS, SITE_ADDRESS_KEYS
from tests.api.credential_queries import make_credential
from tests.api.queries import (
    CREATE_ASSET,
    CREATE_CONTACT,
    CREATE_FACILITY,
    UPDATE_CUSTOMER,
    make_customer,
)
from tests.api.sync_client import PUSH, Device
from tests.api.test_value_shapes import post_raw, raw_id
from tests.api.ws_client import Socket, ids_in
from tests.conftest import Api, ServerProcess, Tenant, new_tenant
from tests.sync import value_strategies

# Examples per field (each sends two values): 29 fields, about 10 s in all.
EXAMPLES = int(os.environ.get("FIELDSYNC_SYNC_SHAPE_EXAMPLES", "4"))
ENTITIES = ("customer", "contact", "facility", "asset")
TYPE = {"customer": "Customer", "contact": "Contact", "facility": "Facility", "asset": "Asset"}
# Settings.max_string_length's default: the longest text any field may hold.
LONGEST = 10_000
# sync/validation.py's MAX_LIST_ITEMS: the longest list a field may hold.
MOST_ITEMS = 50
OPTIONS = [{"value": "a", "label": "A", "badgeIcon": "star"}, {"value": "b", "label": "B"}]
# One custom field of each field type on every record type.
CUSTOM_FIELDS = {
    "text": "TEXT",
    "number": "NUMBER",
    "date": "DATE",
    "checkbox": "CHECKBOX",
    "pick": "DROPDOWN",
}

# What `data` holds for each record type, exactly: its links (uuids) and its fields.
DATA_KEYS = {
    "customer": {
        "businessName",
        "firstName",
        "lastName",
        "email",
        "phones",
        "addresses",
        "notificationEmails",
        "invoiceCcEmails",
        "settings",
        "customFields",
    },
    "contact": {
        "customerId",
        "firstName",
        "lastName",
        "title",
        "email",
        "phones",
        "notes",
        "customFields",
    },
    "facility": {"customerId", "name", "address", "notes", "customFields"},
    "asset": {
        "customerId",
        "facilityId",
        "kind",
        "manufacturer",
        "model",
        "serialNumber",
        "installDate",
        "location",
        "notes",
        "customFields",
    },
    "credential": {
        "customerId",
        "contactId",
        "name",
        "username",
        "url",
        "notes",
        "isPublic",
        "hasPassword",
    },
}

# --------------------------------------------------------------------------- values

# Unicode without surrogates (JSON cannot carry them) and NUL (no text column holds it).
_chars = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
# The shared hostile texts a record can hold (blank, bidi and BOM marks, emoji, JSON-looking
# text; not NUL, not over the limit), and the longest text in one, two and four UTF-8 bytes.
SPECIAL_TEXT = (
    *(t for t in value_strategies.SPECIAL_TEXT if "\x00" not in t and len(t) <= LONGEST),
    "Ünïcödé",
    "x" * LONGEST,
    "é" * LONGEST,
    "😀" * LONGEST,
)
texts = st.one_of(st.text(_chars, max_size=20), st.sampled_from(SPECIAL_TEXT))
nullable_texts = st.none() | texts
# A record's only name (a facility's, an asset's kind) may not be blank.
names = st.one_of(
    st.text(_chars, max_size=20).map(lambda t: t if t.strip() else f"n{t}"),
    st.sampled_from([t for t in SPECIAL_TEXT if t.strip()]),
)
emails = st.sampled_from(
    [
        "ann@acme.example",
        "Ann.Lee+tag@sub.acme.example",
        "ünï@acme.example",
        "B@ACME.EXAMPLE",
        "a" * 64 + "@acme.example",
    ]
)
phones = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["MOBILE", "HOME", "WORK", "FAX", "OTHER"]),
        "number": st.from_regex(r"\A[0-9+()\-.x#*][0-9+()\-. /x#*]{1,38}[0-9+()\-./x#*]\Z")
        | st.just(" 555 0100 "),
    }
)
addresses = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["BILL_TO", "SHIP_TO", "PHYSICAL"]),
        **dict.fromkeys(SITE_ADDRESS_KEYS, nullable_texts),
    }
)
short_addresses = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["BILL_TO", "SHIP_TO", "PHYSICAL"]),
        **dict.fromkeys(SITE_ADDRESS_KEYS, st.none() | st.text(_chars, max_size=20)),
    }
)
site_addresses = st.fixed_dictionaries(dict.fromkeys(SITE_ADDRESS_KEYS, nullable_texts))
dates = st.dates().map(date.isoformat)
numbers = st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)


def lists(
    items: st.SearchStrategy[Any], short: st.SearchStrategy[Any] | None = None
) -> st.SearchStrategy[list[Any]]:
    """Short lists (empty ones included), or one as long as a field may hold, of ``short``
    items when given (fifty addresses of the longest text would pass the body limit)."""
    longest = (items if short is None else short).map(lambda item: [item] * MOST_ITEMS)
    return st.lists(items, max_size=3) | longest


settings_values = st.fixed_dictionaries(
    {
        "taxFree": st.booleans(),
        "taxRate": st.none() | st.floats(0, 100) | st.integers(0, 100),
        "smsEnabled": st.booleans(),
        "billingEmails": st.booleans(),
        "marketingEmails": st.booleans(),
        "reportEmails": st.booleans(),
        "noEmail": st.booleans(),
    }
)
# Custom field changes: every field type each time, each key set or cleared (null).
custom_values = {
    "text": texts,
    "number": numbers,
    "date": dates,
    "checkbox": st.booleans(),
    "pick": st.sampled_from([o["value"] for o in OPTIONS]),
}
custom_changes = st.fixed_dictionaries(
    {key: st.none() | values for key, values in custom_values.items()}
)

# Every pushable field of every record type, with the values a device may send. The other
# names of a customer (first, last) and a contact (last) stay set, so any value of one
# leaves the record a name.
FIELDS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "customer": {
        "businessName": nullable_texts,
        "firstName": names,
        "lastName": nullable_texts,
        "email": st.none() | emails,
        "phones": lists(phones),
        "addresses": lists(addresses, short_addresses),
        "notificationEmails": lists(emails),
        "invoiceCcEmails": lists(emails),
        "settings": settings_values,
        "customFields": custom_changes,
    },
    "contact": {
        "firstName": names,
        "lastName": nullable_texts,
        "title": nullable_texts,
        "email": st.none() | emails,
        "phones": lists(phones),
        "notes": nullable_texts,
        "customFields": custom_changes,
    },
    "facility": {
        "name": names,
        "address": site_addresses,
        "notes": nullable_texts,
        "customFields": custom_changes,
    },
    "asset": {
        "kind": names,
        "manufacturer": nullable_texts,
        "model": nullable_texts,
        "serialNumber": nullable_texts,
        "installDate": st.none() | dates,
        "location": nullable_texts,
        "notes": nullable_texts,
        "customFields": custom_changes,
    },
}
PAIRS = [(entity, field) for entity in ENTITIES for field in FIELDS[entity]]

# --------------------------------------------------------------------------- reads

CUSTOM = "customFields { key value }"
CUSTOMER = f"""recordId businessName firstName lastName email phones {{ type number }}
  addresses {{ type line1 line2 city region postalCode country }}
  notificationEmails invoiceCcEmails
  settings {{ taxFree taxRate smsEnabled billingEmails marketingEmails reportEmails noEmail }}
  {CUSTOM}"""
READS = {
    "Customer": CUSTOMER,
    "Contact": f"""recordId customer {{ id }} firstName lastName title email
      phones {{ type number }} notes {CUSTOM}""",
    "Facility": f"""recordId customer {{ id }} name notes {CUSTOM}
      address {{ line1 line2 city region postalCode country }}""",
    "Asset": f"""recordId customer {{ id }} facility {{ id }} kind manufacturer model
      serialNumber installDate location notes {CUSTOM}""",
    "Credential": "recordId customer { id } contact { id } name username url notes isPublic"
    " hasPassword",
}
NODE = (
    "query($id: ID!) { node(id: $id) { __typename id "
    + " ".join(f"... on {name} {{ {fields} }}" for name, fields in READS.items())
    + " } }"
)
CUSTOMER_BY_ID = f"query($id: ID!) {{ customer(id: $id) {{ {CUSTOMER} }} }}"
CUSTOMER_PLAIN = CUSTOMER.replace(CUSTOM, "")
# Without custom fields: the frontend's selection.
CUSTOMER_BY_ID_PLAIN = f"query($id: ID!) {{ customer(id: $id) {{ {CUSTOMER_PLAIN} }} }}"


def as_data(node: dict[str, Any]) -> dict[str, Any]:
    """A read of a record in the sync shape: custom fields as a map of the set ones, parent
    objects as their uuids, no read-only fields."""
    out = {k: v for k, v in node.items() if k not in ("__typename", "id", "recordId")}
    if "customFields" in out:
        out["customFields"] = {
            f["key"]: f["value"] for f in out["customFields"] if f["value"] is not None
        }
    for link in ("customer", "facility", "contact"):
        if link in out:
            parent = out.pop(link)
            out[f"{link}Id"] = None if parent is None else raw_id(parent["id"])
    return out


def as_json(value: Any) -> Any:
    """``value`` with every number as the decimal its JSON text names.

    PostgreSQL's jsonb keeps a number's value, not its text: a float 6.650627027115266e16
    comes back as the integer 66506270271152660, which is the same decimal (and the same
    double for a JSON reader), though Python's int and float of it differ.
    """
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    return [as_json(v) for v in value]


def set_values(custom: dict[str, Any]) -> dict[str, Any]:
    """A custom fields map as stored: a null value is a cleared key."""
    return {k: v for k, v in custom.items() if v is not None}


# --------------------------------------------------------------------------- setup


@dataclass
class World:
    """One tenant's record tree with custom fields of every type, and a device holding it."""

    tenant: Tenant
    device: Device
    ids: dict[str, str]  # entity -> record uuid
    global_ids: dict[str, str]  # entity -> global id


async def define_fields(api: Api) -> None:
    """Every custom field type on every record type."""
    for entity in ENTITIES:
        for key, kind in CUSTOM_FIELDS.items():
            field: dict[str, Any] = {
                "entityType": entity.upper(),
                "key": key,
                "label": key.title(),
                "fieldType": kind,
            }
            if kind == "DROPDOWN":
                field["options"] = OPTIONS
            data = await api(
                """mutation($input: CreateCustomFieldInput!) { createCustomField(input: $input) {
                     __typename } }""",
                {"input": field},
            )
            assert data["createCustomField"]["__typename"] == "CustomFieldDefinition", data


async def make_world(tenant: Tenant, *, custom_fields: bool = False) -> World:
    """One record of each type (every name set), a device that pulled them, and with
    ``custom_fields`` a custom field of each type on each record type."""
    api = tenant.admin
    if custom_fields:
        await define_fields(api)
    customer = await make_customer(api, businessName="Acme", firstName="Ann", lastName="Lee")
    contact = (
        await api(
            CREATE_CONTACT,
            {"input": {"customerId": customer["id"], "firstName": "Pat", "lastName": "Kim"}},
        )
    )["createContact"]
    facility = (
        await api(CREATE_FACILITY, {"input": {"customerId": customer["id"], "name": "HQ"}})
    )["createFacility"]
    asset = (await api(CREATE_ASSET, {"input": {"facilityId": facility["id"], "kind": "Door"}}))[
        "createAsset"
    ]
    global_ids = {
        "customer": customer["id"],
        "contact": contact["id"],
        "facility": facility["id"],
        "asset": asset["id"],
    }
    device = await Device(api).register()
    await device.sync()
    ids = {entity: raw_id(global_id) for entity, global_id in global_ids.items()}
    return World(tenant, device, ids, global_ids)


@pytest.fixture
async def world(tenant: Tenant) -> World:
    """A fresh world per test (hypothesis examples of one test share it)."""
    return await make_world(tenant)


async def push_one(device: Device, entity: str, record: str, patch: Any) -> dict[str, Any]:
    """Push one change edited from the device's copy; its outcome."""
    result = await device.push([device.change(entity, record, patch)])
    assert result["__typename"] == "PushResult", result
    [outcome] = result["results"]
    return outcome  # type: ignore[no-any-return]


async def read_node(api: Api, record: str) -> dict[str, Any]:
    """``node(id: <uuid>)``, which must find the record."""
    node = (await api(NODE, {"id": record}))["node"]
    assert node is not None, record
    assert node["recordId"] == record
    assert raw_id(node["id"]) == record
    return node  # type: ignore[no-any-return]


async def assert_reads_agree(world: World, entity: str, data: dict[str, Any]) -> None:
    """The read API shows what ``data`` holds, field by field."""
    record = world.ids[entity]
    api = world.tenant.admin
    assert as_json(as_data(await read_node(api, record))) == as_json(data)
    if entity == "customer":
        # The compiled read with custom fields and without, by uuid.
        read = (await api(CUSTOMER_BY_ID, {"id": record}))["customer"]
        assert as_json(as_data(read)) == as_json(data)
        plain = (await api(CUSTOMER_BY_ID_PLAIN, {"id": record}))["customer"]
        assert plain == {k: v for k, v in read.items() if k != "customFields"}


# --------------------------------------------------------------------------- the law


@pytest.fixture(scope="module")
async def law_world(db: Database, client: httpx.AsyncClient) -> World:
    """One world for every field's examples (setting one up per field would take longer
    than the examples)."""
    return await make_world(await new_tenant(db, client), custom_fields=True)


async def send_back(world: World, entity: str, field: str, value: Any, *, whole: bool) -> None:
    """Change ``field`` of the device's copy to ``value``, push the whole data or the field
    alone, and check the next pull and the reads."""
    device, record = world.device, world.ids[entity]
    data = device.store[(entity, record)]["data"]
    assert set(data) == DATA_KEYS[entity]
    sent = value
    if field == "customFields":
        # A client's local map after the edit: cleared keys held as null, so that the
        # whole map sent back clears them too (a patch merges custom fields by key).
        sent = {**data["customFields"], **value}
    patch = {**data, field: sent} if whole else {field: sent}
    outcome = await push_one(device, entity, record, patch)
    assert outcome["outcome"] == "APPLIED", (patch, outcome)
    await device.sync()
    pulled = device.store[(entity, record)]["data"]
    # Exactly what was sent; a custom field sent as null is cleared (absent from the map).
    expected = {**data, field: set_values(sent) if field == "customFields" else sent}
    assert as_json(pulled) == as_json(expected)
    await assert_reads_agree(world, entity, pulled)


class TestTheLaw:
    """A pulled record, changed and sent back, is what the next pull and every read show."""

    @pytest.mark.parametrize(("entity", "field"), PAIRS, ids=[f"{e}.{f}" for e, f in PAIRS])
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    async def test_a_changed_record_sent_back_is_what_the_next_pull_returns(
        self, law_world: World, entity: str, field: str, data: st.DataObject
    ) -> None:
        """Each example sends one value as the changed field alone and another in the whole
        ``data`` object: both APPLIED, pulled exactly as sent, and read the same."""
        strategy = FIELDS[entity][field]
        await send_back(law_world, entity, field, data.draw(strategy, "alone"), whole=False)
        await send_back(law_world, entity, field, data.draw(strategy, "within"), whole=True)


# --------------------------------------------------------------------------- the shape


class TestTheShape:
    """What `data` holds: every field, explicitly."""

    async def test_fresh_records_are_complete(self, world: World) -> None:
        """Records with almost nothing set: settings at their seven defaults, addresses with
        every key, no `archived`, custom fields an empty map; the reads agree."""
        store = world.device.store
        customer = store[("customer", world.ids["customer"])]["data"]
        assert customer["settings"] == SETTING_DEFAULTS
        assert customer["customFields"] == {}
        facility = store[("facility", world.ids["facility"])]["data"]
        assert facility["address"] == dict.fromkeys(SITE_ADDRESS_KEYS)
        for entity in ENTITIES:
            data = store[(entity, world.ids[entity])]["data"]
            assert set(data) == DATA_KEYS[entity], entity
            await assert_reads_agree(world, entity, data)

    async def test_partial_addresses_come_back_complete(self, world: World) -> None:
        """Address items (and a facility's address) sent with some keys are pulled with all
        of them, the missing ones null; partial settings are merged and completed."""
        device = world.device
        customer, facility = world.ids["customer"], world.ids["facility"]
        patch = {
            "addresses": [{"type": "BILL_TO", "city": "Oslo"}],
            "settings": {"taxRate": 7.5, "billingEmails": False},
        }
        assert (await push_one(device, "customer", customer, patch))["outcome"] == "APPLIED"
        outcome = await push_one(device, "facility", facility, {"address": {"line1": "1 Main"}})
        assert outcome["outcome"] == "APPLIED"
        await device.sync()
        data = device.store[("customer", customer)]["data"]
        assert data["addresses"] == [
            dict.fromkeys(ADDRESS_KEYS) | {"type": "BILL_TO", "city": "Oslo"}
        ]
        assert data["settings"] == {**SETTING_DEFAULTS, "taxRate": 7.5, "billingEmails": False}
        site = device.store[("facility", facility)]["data"]["address"]
        assert site == dict.fromkeys(SITE_ADDRESS_KEYS) | {"line1": "1 Main"}
        await assert_reads_agree(world, "customer", data)

    async def test_archived_customers_never_sync_and_archived_is_no_field(
        self, world: World
    ) -> None:
        """`archived` is not in data (an archived customer is evicted), and a patch naming
        it is a GraphQL input error."""
        device = world.device
        result = await device.api.post(
            PUSH,
            {
                "d": device.id,
                "changes": [device.change("customer", world.ids["customer"], {"archived": True})],
            },
        )
        assert "archived" in result.json()["errors"][0]["message"]
        await world.tenant.admin(
            "mutation($id: ID!) { archiveCustomer(id: $id) { __typename } }",
            {"id": world.ids["customer"]},
        )
        await device.sync()
        # The customer's records are dropped from the device, the customer included.
        assert not device.store

    async def test_credentials_are_complete_too(self, world: World) -> None:
        """A credential's data holds its links and fields, never its secret columns."""
        await make_credential(
            world.tenant.admin, {"customerId": world.ids["customer"]}, password="s3cret"
        )
        device = world.device
        await device.sync()
        [(key, held)] = [(k, v) for k, v in device.store.items() if k[0] == "credential"]
        assert set(held["data"]) == DATA_KEYS["credential"]
        assert held["data"]["contactId"] is None
        assert held["data"]["hasPassword"] is True
        node = await read_node(world.tenant.admin, key[1])
        assert as_data(node) == held["data"]


class TestLive:
    """The `changes` subscription sends the same shape (its rows take another path)."""

    async def test_live_changes_hold_the_pulled_data(
        self, server_pair: tuple[ServerProcess, ServerProcess], db: Database
    ) -> None:
        """A customer with partial settings and an address item, a facility with a partial
        address: what arrives live equals what a pull then sends."""
        server, _ = server_pair
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            tenant = await new_tenant(db, http)
            device = await Device(tenant.admin).register()
            socket = await Socket.open(server.ws_url, device.api.token)
            try:
                await socket.subscribe("1", device.id)
                customer = await make_customer(
                    tenant.admin,
                    addresses=[{"type": "SHIP_TO", "city": "Oslo"}],
                    settings={"taxRate": 5, "smsEnabled": True},
                )
                facility = (
                    await tenant.admin(
                        CREATE_FACILITY,
                        {
                            "input": {
                                "customerId": customer["id"],
                                "name": "HQ",
                                "address": {"line1": "1 Main"},
                            }
                        },
                    )
                )["createFacility"]
                wanted = {raw_id(customer["id"]), raw_id(facility["id"])}
                batches = await socket.collect("1", lambda b: wanted <= set(ids_in(b)))
            finally:
                await socket.close()
            await device.sync()
        live = {
            (c["entity"].lower(), c["recordId"]): c["data"] for b in batches for c in b["changes"]
        }
        assert live == {key: held["data"] for key, held in device.store.items()}
        customer_data = live[("customer", raw_id(customer["id"]))]
        assert customer_data["settings"] == {**SETTING_DEFAULTS, "taxRate": 5, "smsEnabled": True}
        assert customer_data["addresses"] == [
            dict.fromkeys(ADDRESS_KEYS) | {"type": "SHIP_TO", "city": "Oslo"}
        ]
        assert "archived" not in customer_data


class TestLinks:
    """A patch may carry the links data holds; records cannot move."""

    async def test_the_pulled_links_sent_back_are_accepted(self, world: World) -> None:
        """customerId (contacts, facilities, assets) and facilityId (assets) as pulled."""
        device = world.device
        for entity in ("contact", "facility", "asset"):
            data = device.store[(entity, world.ids[entity])]["data"]
            links = {k: v for k, v in data.items() if k.endswith("Id")}
            outcome = await push_one(device, entity, world.ids[entity], {**links, "notes": "x"})
            assert outcome["outcome"] == "APPLIED", outcome

    @pytest.mark.parametrize(
        ("entity", "link"),
        [
            ("contact", "customerId"),
            ("facility", "customerId"),
            ("asset", "customerId"),
            ("asset", "facilityId"),
        ],
    )
    async def test_another_parent_is_refused(self, world: World, entity: str, link: str) -> None:
        """VALIDATION_FAILED on the link; nothing moved, nothing written."""
        device = world.device
        other = await make_customer(world.tenant.admin, businessName="Other")
        other_facility = (
            await world.tenant.admin(
                CREATE_FACILITY, {"input": {"customerId": other["id"], "name": "Annex"}}
            )
        )["createFacility"]
        parent = raw_id(other["id"] if link == "customerId" else other_facility["id"])
        before = device.store[(entity, world.ids[entity])]
        patch = {link: parent, "notes": "moved?"}
        outcome = await push_one(device, entity, world.ids[entity], patch)
        assert outcome["outcome"] == "VALIDATION_FAILED", outcome
        assert outcome["fieldErrors"] == [
            {"field": link, "message": "must be the record's own: records cannot move"}
        ]
        await device.sync()
        after = device.store[(entity, world.ids[entity])]
        assert after["version"] == before["version"]
        assert after["data"] == before["data"]

    async def test_a_new_asset_names_its_facilitys_customer_or_none(self, world: World) -> None:
        """A created asset may send customerId, and it must be its facility's."""
        device = world.device
        facility, customer = world.ids["facility"], world.ids["customer"]
        other = raw_id((await make_customer(world.tenant.admin, businessName="Other"))["id"])
        wrong = {"facilityId": facility, "customerId": other, "kind": "Gate"}
        outcome = await push_one(device, "asset", str(uuid.uuid4()), wrong)
        assert outcome["outcome"] == "VALIDATION_FAILED", outcome
        assert [e["field"] for e in outcome["fieldErrors"]] == ["customerId"]
        right = {"facilityId": facility, "customerId": customer, "kind": "Gate"}
        new = str(uuid.uuid4())
        assert (await push_one(device, "asset", new, right))["outcome"] == "APPLIED"
        await device.sync()
        assert device.store[("asset", new)]["data"]["customerId"] == customer


# --------------------------------------------------------------------------- hostile maps


class TestCustomFieldMaps:
    """Custom fields in a patch are the map data holds; anything else is refused cleanly."""

    async def test_the_v1_list_form_is_refused(self, world: World) -> None:
        """A list of {key, value} where the map belongs: VALIDATION_FAILED on customFields."""
        patch = {"customFields": [{"key": "text", "value": "x"}]}
        outcome = await push_one(world.device, "asset", world.ids["asset"], patch)
        assert outcome["outcome"] == "VALIDATION_FAILED", outcome
        assert [e["field"] for e in outcome["fieldErrors"]] == ["customFields"]

    @pytest.mark.parametrize("depth", [10, 1_000, 10_000])
    async def test_deep_values_as_variables(self, world: World, depth: int) -> None:
        """A value nested ``depth`` deep: VALIDATION_FAILED on its key while the JSON
        parser takes it, a 400 past its depth limit; never a 500, and quickly."""
        device = world.device
        change = device.change(
            "asset", world.ids["asset"], {"customFields": {"text": "PLACEHOLDER"}}
        )
        body = json.dumps({"d": device.id, "changes": [change]})
        body = body.replace('"PLACEHOLDER"', "[" * depth + "1" + "]" * depth)
        started = time.perf_counter()
        response = await post_raw(device.api, PUSH, body)
        assert time.perf_counter() - started < 5
        assert response.status_code < 500, response.text
        answer = response.json()
        if response.status_code == 200:
            [outcome] = answer["data"]["pushChanges"]["results"]
            assert outcome["outcome"] == "VALIDATION_FAILED", outcome
            assert [e["field"] for e in outcome["fieldErrors"]] == ["customFields.text"]
        else:
            assert answer["errors"], answer

    @pytest.mark.parametrize("depth", [10, 150, 190, 1_000, 10_000])
    async def test_deep_values_inline(self, world: World, depth: int) -> None:
        """The same written into the document: refused as a field error, or the document
        as too deep or too large; never a 500 or a recursion error."""
        device = world.device
        value = "[" * depth + "1" + "]" * depth
        document = f"""mutation {{ pushChanges(deviceId: "{device.id}", changes: [{{
          clientMutationId: "{uuid.uuid4().hex}", recordId: "{world.ids["asset"]}",
          op: UPSERT, counter: {device.counter + 1},
          patch: {{asset: {{customFields: {{text: {value}}}}}}}}}]) {{
          __typename ... on PushResult {{ results {{ outcome fieldErrors {{ field }} }} }} }} }}"""
        device.counter += 1
        started = time.perf_counter()
        response = await device.api.post(document)
        assert time.perf_counter() - started < 5
        assert response.status_code < 500, response.text
        answer = response.json()
        for error in answer.get("errors") or []:
            assert error.get("extensions", {}).get("code") != "INTERNAL_SERVER_ERROR", answer
            assert "recursion" not in error["message"].lower(), answer
        if answer.get("data"):
            [outcome] = answer["data"]["pushChanges"]["results"]
            assert outcome == {
                "outcome": "VALIDATION_FAILED",
                "fieldErrors": [{"field": "customFields.text"}],
            }
        else:
            assert answer["errors"], answer

    async def test_a_map_of_100000_keys_as_a_variable(self, world: World) -> None:
        """VALIDATION_FAILED on customFields for its size, found quickly."""
        device = world.device
        huge = {f"k{i}": i for i in range(100_000)}
        started = time.perf_counter()
        outcome = await push_one(device, "asset", world.ids["asset"], {"customFields": huge})
        assert time.perf_counter() - started < 5
        assert outcome["outcome"] == "VALIDATION_FAILED", outcome
        assert outcome["fieldErrors"] == [
            {"field": "customFields", "message": "has too many keys (100000, at most 1000)"}
        ]

    async def test_a_large_map_inline(self, world: World) -> None:
        """Written into the document, a map of 100,000 keys is past the document limits
        (a clean error); one of 1,500 (as many as the limits let through) is refused for
        its unknown keys, naming a few."""
        device = world.device
        for keys in (100_000, 1_500):
            entries = ", ".join(f"k{i}: {i}" for i in range(keys))
            document = f"""mutation {{ pushChanges(deviceId: "{device.id}", changes: [{{
              clientMutationId: "{uuid.uuid4().hex}", recordId: "{world.ids["asset"]}",
              op: UPSERT, counter: {device.counter + 1},
              patch: {{asset: {{customFields: {{{entries}}}}}}}}}]) {{
              __typename ... on PushResult {{ results {{ outcome fieldErrors {{ field }} }} }}
              }} }}"""
            device.counter += 1
            started = time.perf_counter()
            response = await device.api.post(document)
            assert time.perf_counter() - started < 5
            assert response.status_code < 500, response.text
            answer = response.json()
            if keys == 100_000:
                assert answer["errors"][0]["extensions"]["code"] == "QUERY_TOO_LARGE", answer
            elif answer.get("data"):
                [outcome] = answer["data"]["pushChanges"]["results"]
                assert outcome["outcome"] == "VALIDATION_FAILED"
                assert 0 < len(outcome["fieldErrors"]) <= 20
            else:
                assert answer["errors"][0]["extensions"]["code"] == "QUERY_TOO_LARGE", answer


# --------------------------------------------------------------------------- ids


class TestRecordIds:
    """A record's uuid is accepted wherever an id is; reads show it as `recordId`."""

    async def test_node_finds_every_synced_type_by_uuid(self, world: World) -> None:
        """Customer, contact, facility, asset and credential, by uuid as by global id."""
        api = world.tenant.admin
        credential = await make_credential(api, {"customerId": world.global_ids["customer"]})
        found = {**world.global_ids, "credential": credential["id"]}
        for entity, global_id in found.items():
            by_global = (await api(NODE, {"id": global_id}))["node"]
            by_uuid = await read_node(api, raw_id(global_id))
            assert by_uuid == by_global, entity
            assert by_uuid["__typename"] == TYPE.get(entity, "Credential")

    async def test_node_looks_a_uuid_up_in_one_statement(
        self, world: World, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A bare uuid's type is one lookup across every synced table (the loader batches
        the uuids it is given together); an unknown uuid is null."""
        calls: list[int] = []
        lookup = record_queries.entity_types

        async def counted(conn: Any, org_id: Any, ids: Any) -> Any:
            calls.append(len(ids))
            return await lookup(conn, org_id, ids)

        monkeypatch.setattr(record_queries, "entity_types", counted)
        fields = " ".join(f'{e}: node(id: "{world.ids[e]}") {{ __typename id }}' for e in ENTITIES)
        missing = str(uuid.uuid4())
        data = await world.tenant.admin(
            f'query {{ {fields} missing: node(id: "{missing}") {{ id }} }}'
        )
        # At most one lookup per `node` with a uuid, each for every type at once (root
        # fields resolve one after another while the first reads the caller, so their
        # loads do not coincide: the same holds for the loaders of global ids).
        assert len(calls) <= len(ENTITIES) + 1
        assert sum(calls) == len(ENTITIES) + 1
        assert data["missing"] is None
        for entity in ENTITIES:
            assert data[entity] == {"__typename": TYPE[entity], "id": world.global_ids[entity]}

    async def test_reads_and_mutations_take_uuids(self, world: World) -> None:
        """customer(id:), the lists' parent filters, update and delete mutations, and
        `recordId` on every read type; a deleted record's id is still its global id."""
        api = world.tenant.admin
        customer = world.ids["customer"]
        read = (
            await api("query($id: ID!) { customer(id: $id) { id recordId } }", {"id": customer})
        )["customer"]
        assert read == {"id": world.global_ids["customer"], "recordId": customer}
        lists = await api(
            """query($c: ID!, $f: ID!) {
                 contacts(customerId: $c) { edges { node { recordId } } }
                 assets(facilityId: $f) { edges { node { recordId } } } }""",
            {"c": customer, "f": world.ids["facility"]},
        )
        assert lists["contacts"]["edges"] == [{"node": {"recordId": world.ids["contact"]}}]
        assert lists["assets"]["edges"] == [{"node": {"recordId": world.ids["asset"]}}]
        updated = (await api(UPDATE_CUSTOMER, {"id": customer, "input": {"lastName": "Uuid"}}))[
            "updateCustomer"
        ]
        assert updated["__typename"] == "Customer", updated
        assert updated["lastName"] == "Uuid"
        deleted = (
            await api(
                """mutation($id: ID!) { deleteAsset(id: $id) { __typename
                     ... on DeletedRecord { id } } }""",
                {"id": world.ids["asset"]},
            )
        )["deleteAsset"]
        assert deleted == {"__typename": "DeletedRecord", "id": world.global_ids["asset"]}
        assert (await api(NODE, {"id": world.ids["asset"]}))["node"] is None

    async def test_another_tenants_uuid_is_unknown(
        self, world: World, other_tenant: Tenant
    ) -> None:
        """A uuid of another tenant's record reads as null and updates as NotFound."""
        theirs = raw_id((await make_customer(other_tenant.admin, businessName="Theirs"))["id"])
        api = world.tenant.admin
        assert (await api(NODE, {"id": theirs}))["node"] is None
        assert (await api(CUSTOMER_BY_ID, {"id": theirs}))["customer"] is None
        result = (await api(UPDATE_CUSTOMER, {"id": theirs, "input": {"lastName": "X"}}))[
            "updateCustomer"
        ]
        assert result["__typename"] == "NotFound", result
