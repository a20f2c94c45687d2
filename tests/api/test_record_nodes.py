"""Records with an id are Relay nodes (issue #20, point 3): ``CredentialAccess``,
``ExternalSource`` and ``ImportBatch`` implement ``Node`` and come back from ``node(id:)``
as their lists show them, under the lists' rule: admins only. Anyone else, and another
tenant's admin, gets what ``node`` gives for any id they may not see: null, no error.
``User`` and ``CustomFieldDefinition`` (Nodes already) resolve too, under the rules of
``users``/``me`` and ``customFieldDefinitions``.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest

from tests.api.credential_queries import add_portal_user, make_credential, reveal
from tests.api.queries import make_customer
from tests.api.test_conflict_resolvers import device_of, stored_conflict
from tests.conftest import Api, Tenant, new_tenant

MAPPING = [
    {"column": "Customer No", "field": "externalId"},
    {"column": "Company", "field": "businessName"},
]
CSV = "Customer No,Company\r\nA-1,Acme Doors\r\n"

SOURCE_FIELDS = "id name kind direction mapping { column field } createdAt updatedAt"
BATCH_FIELDS = "id status fileName rows created problemCount createdAt"
ACCESS_FIELDS = (
    "id revealedAt userId userEmail credentialId credentialName customerId customer { id }"
)

LISTS = f"""query($s: ID!) {{
  externalSources {{ {SOURCE_FIELDS} }}
  importBatches(sourceId: $s) {{ {BATCH_FIELDS} }}
  credentialAccessReport {{ edges {{ node {{ {ACCESS_FIELDS} }} }} }} }}"""

# The three in one request, as a client refetching them would ask (one batch per type).
NODES = f"""query($source: ID!, $batch: ID!, $access: ID!) {{
  source: node(id: $source) {{ __typename ... on ExternalSource {{ {SOURCE_FIELDS} }} }}
  batch: node(id: $batch) {{ __typename ... on ImportBatch {{ {BATCH_FIELDS} }} }}
  access: node(id: $access) {{ __typename ... on CredentialAccess {{ {ACCESS_FIELDS} }} }} }}"""


def global_id(type_name: str, record_id: uuid.UUID) -> str:
    return base64.b64encode(f"{type_name}:{record_id}".encode()).decode()


@pytest.fixture(scope="module")
async def admin_records(db, client) -> tuple[Tenant, dict[str, Any]]:
    """A tenant whose admin registered a source, imported a file and revealed a password;
    the three records as the admin's lists show them."""
    tenant = await new_tenant(db, client)
    admin = tenant.admin
    customer = await make_customer(admin, businessName="Acme Doors")
    source = (
        await admin(
            """mutation($input: CreateExternalSourceInput!) {
              createExternalSource(input: $input) { __typename ... on ExternalSource { id } } }""",
            {"input": {"name": "Accounting", "mapping": MAPPING}},
        )
    )["createExternalSource"]
    assert source["__typename"] == "ExternalSource", source
    imported = (
        await admin(
            """mutation($s: ID!, $content: String) {
              importExternalRecords(sourceId: $s, content: $content, fileName: "c.csv") {
                __typename } }""",
            {"s": source["id"], "content": CSV},
        )
    )["importExternalRecords"]
    assert imported["__typename"] == "ImportBatch", imported
    credential = await make_credential(admin, {"customerId": customer["id"]}, password="s3cret")
    assert (await reveal(admin, credential["id"]))["__typename"] == "RevealedPassword"
    lists = await admin(LISTS, {"s": source["id"]})
    [listed_source] = lists["externalSources"]
    [batch] = lists["importBatches"]
    [edge] = lists["credentialAccessReport"]["edges"]
    return tenant, {
        "source": listed_source,
        "batch": batch,
        "access": edge["node"],
        "customer": customer["id"],
    }


def ids(records: dict[str, Any]) -> dict[str, str]:
    return {name: records[name]["id"] for name in ("source", "batch", "access")}


async def test_an_admin_reads_each_record_by_node_as_its_list_shows_it(admin_records) -> None:
    tenant, records = admin_records
    data = await tenant.admin(NODES, ids(records))
    assert data["source"] == {"__typename": "ExternalSource", **records["source"]}
    assert data["batch"] == {"__typename": "ImportBatch", **records["batch"]}
    assert data["access"] == {"__typename": "CredentialAccess", **records["access"]}
    assert data["batch"]["status"] == "APPLIED"
    assert data["access"]["customer"] == {"id": records["customer"]}


async def test_the_node_interface_selects_the_id_of_each(admin_records) -> None:
    """A fragment on Node alone (Relay's refetch query) reads each record's id."""
    tenant, records = admin_records
    for name, record_id in ids(records).items():
        data = await tenant.admin(
            "query($id: ID!) { node(id: $id) { __typename ... on Node { id } } }", {"id": record_id}
        )
        assert data["node"]["id"] == record_id, name


@pytest.mark.parametrize("role", ["TECHNICIAN", "PORTAL"])
async def test_a_non_admin_gets_null_as_for_an_id_they_may_not_see(admin_records, role) -> None:
    """Like an unknown id: null and no error, so an id's existence is not disclosed."""
    tenant, records = admin_records
    caller: Api = (
        await add_portal_user(tenant, records["customer"])
        if role == "PORTAL"
        else await tenant.add_user(role)
    )
    response = await caller.post(NODES, ids(records))
    body = response.json()
    assert "errors" not in body, body
    assert body["data"] == {"source": None, "batch": None, "access": None}
    unknown = {
        "source": global_id("ExternalSource", uuid.uuid4()),
        "batch": global_id("ImportBatch", uuid.uuid4()),
        "access": global_id("CredentialAccess", uuid.uuid4()),
    }
    assert (await caller.post(NODES, unknown)).json() == body


async def test_another_tenants_admin_gets_null(admin_records, db, client) -> None:
    _, records = admin_records
    other = await new_tenant(db, client)
    assert await other.admin(NODES, ids(records)) == {"source": None, "batch": None, "access": None}


async def test_unknown_ids_of_these_types_are_null_for_an_admin(admin_records) -> None:
    tenant, _ = admin_records
    unknown = {
        "source": global_id("ExternalSource", uuid.uuid4()),
        "batch": global_id("ImportBatch", uuid.uuid4()),
        "access": global_id("CredentialAccess", uuid.uuid4()),
    }
    assert await tenant.admin(NODES, unknown) == {"source": None, "batch": None, "access": None}


async def test_a_bare_uuid_of_these_records_names_no_synced_record(admin_records) -> None:
    """Bare uuids (`recordId`) are the sync API's ids of synced records; these records are
    reached by their global ids only, so their uuid alone is unknown."""
    tenant, records = admin_records
    raw = base64.b64decode(records["source"]["id"]).decode().partition(":")[2]
    data = await tenant.admin("query($id: ID!) { node(id: $id) { id } }", {"id": raw})
    assert data == {"node": None}


USER_AND_FIELD = """query($user: ID!, $field: ID!) {
  user: node(id: $user) { __typename ... on User { id email role } }
  field: node(id: $field) { __typename ... on CustomFieldDefinition { id key label } } }"""


async def test_users_and_field_definitions_by_node_follow_their_queries(admin_records) -> None:
    """A user, as `users` (admins) or `me` (anyone, themself) shows one; a custom field
    definition, as `customFieldDefinitions` shows it to everyone of the tenant."""
    tenant, _ = admin_records
    created = await tenant.admin(
        """mutation($input: CreateCustomFieldInput!) { createCustomField(input: $input) {
          ... on CustomFieldDefinition { id key label } } }""",
        {"input": {"entityType": "ASSET", "key": "floor", "label": "Floor", "fieldType": "TEXT"}},
    )
    field = created["createCustomField"]
    technician = await tenant.add_user("TECHNICIAN")
    me = (await technician("{ me { id email role } }"))["me"]
    admin_me = (await tenant.admin("{ me { id email role } }"))["me"]
    by_admin = await tenant.admin(USER_AND_FIELD, {"user": me["id"], "field": field["id"]})
    assert by_admin == {
        "user": {"__typename": "User", **me},
        "field": {"__typename": "CustomFieldDefinition", **field},
    }
    by_self = await technician(USER_AND_FIELD, {"user": me["id"], "field": field["id"]})
    assert by_self == by_admin
    # Another user's id is unknown to a non-admin (`users` is admins' only).
    other = await technician(USER_AND_FIELD, {"user": admin_me["id"], "field": field["id"]})
    assert other["user"] is None
    assert other["field"] == by_admin["field"]


DEVICE_FIELDS = "id name replicaId userEmail resolvesConflicts syncState { id deviceId status }"
CONFLICT_FIELDS = "id recordId deviceId status resolution fields { field serverValue clientValue }"
SYNC_LISTS = f"""{{ devices {{ {DEVICE_FIELDS} }}
  conflicts(openOnly: false) {{ {CONFLICT_FIELDS} }} }}"""
SYNC_NODES = f"""query($device: ID!, $conflict: ID!) {{
  device: node(id: $device) {{ __typename ... on Device {{ {DEVICE_FIELDS} }} }}
  conflict: node(id: $conflict) {{ __typename ... on SyncConflict {{ {CONFLICT_FIELDS} }} }} }}"""


class TestDevicesAndConflictsAreNodes:
    """``Device`` and ``SyncConflict`` come back from ``node(id:)`` as ``devices`` and
    ``conflicts`` show them, under their rule: the owner and admins; anyone else gets null."""

    async def test_owner_and_admin_see_them_others_get_null(
        self, tenant: Tenant, other_tenant: Tenant
    ) -> None:
        """A technician's device and the conflict its push stored: the technician and the
        admin read both through ``node`` exactly as their lists give them; another
        technician, a portal user and another tenant's admin get null, without an error."""
        tech = await tenant.add_user("TECHNICIAN")
        device = await device_of(tech)
        await stored_conflict(tenant, device)
        listed = await tech(SYNC_LISTS)
        [shown_device] = listed["devices"]
        [shown_conflict] = listed["conflicts"]
        ids = {"device": shown_device["id"], "conflict": shown_conflict["id"]}
        expected = {
            "device": {"__typename": "Device", **shown_device},
            "conflict": {"__typename": "SyncConflict", **shown_conflict},
        }
        assert await tech(SYNC_NODES, ids) == expected
        assert await tenant.admin(SYNC_NODES, ids) == expected
        customer = await make_customer(tenant.admin, businessName="Portal Co")
        strangers = [
            await tenant.add_user("TECHNICIAN"),
            await add_portal_user(tenant, customer["id"]),
            other_tenant.admin,
        ]
        for stranger in strangers:
            assert await stranger(SYNC_NODES, ids) == {"device": None, "conflict": None}
