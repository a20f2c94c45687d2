"""Long lists (pull pages, push outcomes) encoded in one pass: the JSON graphql-core would give.

Both paths read a value through the same spec (the typed one through
``schema.encoding.typed_builder``), so comparing them checks the encoding (enum names, scalars,
nesting); what each field holds is checked against the records themselves.
"""

from __future__ import annotations

import base64
import uuid

import orjson
import pytest
from graphql import FieldNode, OperationDefinitionNode, parse

from db.entities import EntityType
from db.pull import PulledChange
from resolvers.selection_json.changes import ChangesSubscription, prepare_subscription
from resolvers.selection_json.documents import Documents
from resolvers.selection_json.shapes import encode, field_shape, shape_of
from schema.contacts import CONTACT_ROW, Contact
from schema.encoding import Nested, ObjectSpec, typed_builder
from schema.errors import FIELD_CONFLICT
from schema.limits import OperationLimits
from schema.sync import CHANGE, CHANGE_RESULT, Change, ChangeResult, PullOp, SyncEntity
from server.schema import build_schema
from sync.hub import Batch
from tests.api.queries import CREATE_ASSET, UPDATE_CUSTOMER, make_tree
from tests.api.sync_client import PUSH, Device

FULL = "entity recordId customerId op version data __typename"

# `changes` twice with different selections: no single shape, so graphql-core resolves it.
TYPED = f"""query($d: ID!) {{ pull(deviceId: $d, limit: 1000) {{
  changes {{ {FULL} }} other: changes {{ recordId }} }} }}"""
ENCODED = f"""query($d: ID!) {{ pull(deviceId: $d, limit: 1000) {{ changes {{ {FULL} }} }} }}"""
RECORD = """query($id: ID!) { node(id: $id) { __typename
  ... on SyncedRecord { recordId version } ... on Customer { businessName }
  ... on Asset { kind } } }"""


def raw_id(global_id: str) -> str:
    return base64.b64decode(global_id).decode().split(":", 1)[1]


async def records(api, global_ids) -> dict[str, dict]:
    """The records of ``global_ids`` as `node` reads them, by record id."""
    found = [(await api(RECORD, {"id": gid}))["node"] for gid in global_ids]
    return {record["recordId"]: record for record in found}


async def test_an_encoded_page_equals_the_typed_resolution(tenant):
    """Every field of every change (dates, custom fields, tombstones) encodes as GraphQL would."""
    tree = await make_tree(tenant.admin, name="Encoded")
    created = await tenant.admin(
        CREATE_ASSET,
        {
            "input": {
                "facilityId": tree["facility"],
                "kind": "Boiler",
                "installDate": "2024-02-29",
                "notes": 'quote " and \\ backslash, ünïcode',
            }
        },
    )
    assert created["createAsset"]["__typename"] == "Asset"
    device = await Device(tenant.admin).register()
    typed = (await tenant.admin(TYPED, {"d": device.id}))["pull"]
    encoded = (await tenant.admin(ENCODED, {"d": device.id}))["pull"]
    assert len(encoded["changes"]) == 5
    assert encoded["changes"] == typed["changes"]
    assert typed["other"] == [{"recordId": c["recordId"]} for c in typed["changes"]]
    boiler = next(c for c in encoded["changes"] if (c["data"] or {}).get("kind") == "Boiler")
    assert boiler["data"]["installDate"] == "2024-02-29"
    assert boiler["data"]["notes"] == 'quote " and \\ backslash, ünïcode'
    # What each field holds, from the records themselves (not from the spec both paths read).
    stored = await records(tenant.admin, [*tree.values(), created["createAsset"]["id"]])
    assert {c["recordId"] for c in encoded["changes"]} == set(stored)
    for change in encoded["changes"]:
        record = stored[change["recordId"]]
        assert change["entity"] == record["__typename"].upper()
        assert change["customerId"] == raw_id(tree["customer"])
        assert (change["op"], change["version"]) == ("UPSERT", record["version"])
    customer = next(c for c in encoded["changes"] if c["entity"] == "CUSTOMER")
    assert customer["data"]["businessName"] == "Encoded"


async def test_aliases_fragments_and_directives_shape_the_encoded_page(tenant):
    """Aliases, named and inline fragments, __typename and @skip/@include are honoured."""
    await make_tree(tenant.admin, name="Shaped")
    device = await Device(tenant.admin).register()
    query = """
      query($d: ID!, $withData: Boolean!, $hideOp: Boolean!) {
        pull(deviceId: $d, limit: 1000) {
          ... on PullResult { rows: changes { kind: entity ...Ids ... on Change { t: __typename } } }
          rows: changes { op @skip(if: $hideOp) data @include(if: $withData) }
          hasMore
        }
      }
      fragment Ids on Change { recordId customerId }
    """
    page = (await tenant.admin(query, {"d": device.id, "withData": False, "hideOp": True}))["pull"]
    assert page["hasMore"] is False
    assert len(page["rows"]) == 4
    for row in page["rows"]:
        assert list(row) == ["kind", "recordId", "customerId", "t"]
        assert row["t"] == "Change"
        uuid.UUID(row["recordId"])
    page = (await tenant.admin(query, {"d": device.id, "withData": True, "hideOp": False}))["pull"]
    assert [list(row) for row in page["rows"]] == [
        ["kind", "recordId", "customerId", "t", "op", "data"]
    ] * 4


def _changes_field(document: str) -> tuple[dict, list[FieldNode]]:
    parsed = parse(document)
    fragments = {d.name.value: d for d in parsed.definitions if d.kind == "fragment_definition"}
    [operation] = [d for d in parsed.definitions if isinstance(d, OperationDefinitionNode)]
    [field] = operation.selection_set.selections
    assert isinstance(field, FieldNode)
    return fragments, [field]


def test_a_selection_compiles_to_keys_in_document_order():
    """Outside a resolver (the WebSocket endpoint) the same shape comes from the document."""
    fragments, nodes = _changes_field(
        "query($skip: Boolean!) { changes { a: recordId ...F op @skip(if: $skip) recordId } }"
        " fragment F on Change { entity a: recordId }"
    )
    shape = shape_of(build_schema()._schema, CHANGE, fragments, {"skip": True}, nodes)
    assert shape == (
        ("a", "recordId", None),
        ("entity", "entity", None),
        ("recordId", "recordId", None),
    )
    change = PulledChange(EntityType.ASSET, uuid.UUID(int=1), uuid.UUID(int=2), True, {}, 7, None)
    assert encode(CHANGE, shape, [change]) == (
        b'[{"a":"00000000-0000-0000-0000-000000000001","entity":"ASSET",'
        b'"recordId":"00000000-0000-0000-0000-000000000001"}]'
    )


def test_merged_selections_under_one_key_give_one_shape():
    """A response key selected twice (directly and in a fragment) merges into one shape."""
    document = parse(
        "query($d: Boolean!) { pull(deviceId: 1) { ... on PullResult { rows: changes { recordId } }"
        " rows: changes { op @include(if: $d) } other: changes { recordId op } hasMore } }"
    )
    [operation] = document.definitions
    [pull] = operation.selection_set.selections
    schema = build_schema()._schema
    shape = field_shape(schema, CHANGE, {}, {"d": True}, [pull], "PullResult", "changes")
    assert shape == (("recordId", "recordId", None), ("op", "op", None))
    assert field_shape(schema, CHANGE, {}, {"d": False}, [pull], "PullResult", "changes") is None


def test_a_field_outside_the_spec_is_left_to_ordinary_execution():
    """A selection naming a field its type's spec does not encode reduces to no shape."""
    fragments, nodes = _changes_field("{ changes { recordId op } }")
    partial = ObjectSpec(name="Change", fields={"recordId": "str(v.record_id)"})
    assert shape_of(build_schema()._schema, partial, fragments, {}, nodes) is None


def test_the_typed_objects_are_built_from_the_spec():
    """The typed path's Change reads each field by the spec's expression: enum names become
    members, the rest is the value the encoder writes."""
    evicted = PulledChange(
        EntityType.ASSET, uuid.UUID(int=3), uuid.UUID(int=4), False, {"s": 2}, 7, None, True
    )
    assert typed_builder(CHANGE, Change)(evicted) == Change(
        entity=SyncEntity.ASSET,
        record_id="00000000-0000-0000-0000-000000000003",
        customer_id="00000000-0000-0000-0000-000000000004",
        op=PullOp.EVICT,
        version={"s": 2},
        data=None,
    )
    assert orjson.loads(encode(CHANGE, tuple((n, n, None) for n in CHANGE.fields), [evicted])) == [
        {
            "entity": "ASSET",
            "recordId": "00000000-0000-0000-0000-000000000003",
            "customerId": "00000000-0000-0000-0000-000000000004",
            "op": "EVICT",
            "version": {"s": 2},
            "data": None,
        }
    ]


def test_a_spec_must_cover_the_type_it_builds():
    """A typed object needs every field: a spec that misses one, names another type or
    disagrees about a list is refused when its builder is made, not when a request runs."""
    partial = ObjectSpec(name="Change", fields={"recordId": "str(v.record_id)"})
    with pytest.raises(ValueError, match=r"Change\.entity has no expression"):
        typed_builder(partial, Change)
    with pytest.raises(ValueError, match="of ChangeResult cannot build a Change"):
        typed_builder(ObjectSpec(name="ChangeResult", fields=CHANGE.fields), Change)
    one = ObjectSpec(
        name="ChangeResult",
        fields={**CHANGE_RESULT.fields, "conflicts": Nested("v.conflict", FIELD_CONFLICT, False)},
    )
    with pytest.raises(ValueError, match="`many` disagrees"):
        typed_builder(one, ChangeResult)
    # Nested specs are checked as their field's type too.
    empty = ObjectSpec(
        name="ChangeResult",
        fields={**CHANGE_RESULT.fields, "conflicts": Nested("v.conflicts", ObjectSpec("X", {}))},
    )
    with pytest.raises(ValueError, match="of X cannot build a FieldConflict"):
        typed_builder(empty, ChangeResult)
    # What the type's own resolvers read must be given too.
    contact = ObjectSpec("Contact", CONTACT_ROW.fields, CONTACT_ROW.names, private={})
    with pytest.raises(ValueError, match="Contact's private uuid is not in its spec"):
        typed_builder(contact, Contact)


def test_keys_that_are_not_graphql_names_are_refused():
    """The encoder is generated from the keys: anything but a GraphQL name is rejected."""
    with pytest.raises(ValueError, match="not a GraphQL name"):
        encode(CHANGE, (("x': 1, 'y", "recordId", None),), [])


RESULT = """clientMutationId entity recordId outcome version conflictId
  conflicts { field serverValue clientValue } fieldErrors { field message } message"""
# `results` twice with different selections: resolved by graphql-core, object by object.
TYPED_PUSH = f"""mutation($d: ID!, $changes: [ChangeInput!]!) {{
  pushChanges(deviceId: $d, changes: $changes) {{ __typename
    ... on PushResult {{ results {{ {RESULT} replayed }} other: results {{ recordId }} }} }} }}"""


async def test_encoded_push_outcomes_equal_the_typed_resolution(tenant):
    """Applied, conflicting and invalid outcomes encode as graphql-core resolves them."""
    ids = await make_tree(tenant.admin, name="Outcomes")
    device = await Device(tenant.admin).register()
    await device.sync()
    await tenant.admin(
        UPDATE_CUSTOMER, {"id": ids["customer"], "input": {"businessName": "Server side"}}
    )
    raw = {name: raw_id(gid) for name, gid in ids.items()}
    changes = [
        device.change("customer", raw["customer"], {"businessName": "Phone side"}),
        device.change("contact", raw["contact"], {"email": "not an email"}),
        device.change("asset", raw["asset"], {"notes": "checked"}),
    ]
    encoded = (await device.api(PUSH, {"d": device.id, "changes": changes}))["pushChanges"]
    outcomes = [r["outcome"] for r in encoded["results"]]
    assert outcomes == ["CONFLICT", "VALIDATION_FAILED", "APPLIED"]
    # The replay returns the stored outcomes; this document takes the typed path.
    typed = (await device.api(TYPED_PUSH, {"d": device.id, "changes": changes}))["pushChanges"]
    assert [r["replayed"] for r in typed["results"]] == [True, True, True]
    assert [r["recordId"] for r in typed["other"]] == [r["recordId"] for r in encoded["results"]]
    for first, replay in zip(encoded["results"], typed["results"], strict=True):
        assert {**first, "replayed": True} == replay
    # What each field holds, from the changes sent and the records (not from the spec).
    conflict, invalid, applied = encoded["results"]
    assert [r["clientMutationId"] for r in encoded["results"]] == [
        c["clientMutationId"] for c in changes
    ]
    assert [(r["entity"], r["recordId"]) for r in encoded["results"]] == [
        ("CUSTOMER", raw["customer"]),
        ("CONTACT", raw["contact"]),
        ("ASSET", raw["asset"]),
    ]
    assert [r["replayed"] for r in encoded["results"]] == [False, False, False]
    assert base64.b64decode(conflict["conflictId"]).decode().startswith("SyncConflict:")
    assert (invalid["conflictId"], applied["conflictId"]) == (None, None)
    assert conflict["conflicts"] == [
        {"field": "businessName", "serverValue": "Server side", "clientValue": "Phone side"}
    ]
    assert [e["field"] for e in invalid["fieldErrors"]] == ["email"]
    assert invalid["fieldErrors"][0]["message"]
    stored = await records(tenant.admin, [ids["asset"]])
    assert applied["version"] == stored[raw["asset"]]["version"]


def test_a_subscription_batch_encodes_as_its_document_selects():
    """The `changes` subscription's payload follows its selection: aliases, fragments,
    `__typename` and @skip on the batch and on its changes."""
    documents = Documents(build_schema()._schema, OperationLimits())
    prepared = prepare_subscription(
        documents,
        "subscription($d: ID!, $skip: Boolean!) { live: changes(deviceId: $d) {"
        " __typename ...B cp: checkpoint reset @skip(if: $skip) } }"
        " fragment B on ChangeBatch { rows: changes { op recordId } }",
        {"d": "00000000-0000-0000-0000-000000000009", "skip": True},
        None,
    )
    assert isinstance(prepared, ChangesSubscription)
    assert prepared.device_id == "00000000-0000-0000-0000-000000000009"
    change = PulledChange(EntityType.ASSET, uuid.UUID(int=1), uuid.UUID(int=2), False, {}, 7, {})
    evicted = PulledChange(
        EntityType.ASSET, uuid.UUID(int=3), uuid.UUID(int=4), False, {}, 7, None, True
    )
    batch = Batch([change, evicted], "v1.7", True)
    assert orjson.loads(prepared.encoder.encode(batch)) == {
        "data": {
            "live": {
                "__typename": "ChangeBatch",
                "rows": [
                    {"op": "UPSERT", "recordId": "00000000-0000-0000-0000-000000000001"},
                    {"op": "EVICT", "recordId": "00000000-0000-0000-0000-000000000003"},
                ],
                "cp": "v1.7",
            }
        }
    }
