"""Compiled reads of custom fields, badges, directives and `node`: the executor's answer.

The selections the compiled path took over from the resolvers' own encoders (custom field
values and badges, @skip/@include evaluated per request, the child lists) and `node(id:)`,
each request sent to both apps of ``tests/api/test_compiled_reads.py`` and compared byte
for byte.
"""

from __future__ import annotations

import base64
import uuid

import httpx
import pytest

from server.app import create_app
from tests.api.compare_paths import (
    define_fields,
    make_rich_customer,
)
from tests.api.credential_queries import add_portal_user
from tests.api.queries import (
    make_customer,
    make_tree,
)
from tests.api.read_paths import NODE

SITE = "line1 line2 city region postalCode country"
RECORD = "__typename id version createdAt updatedAt customFields { key label fieldType value }"
TREE = f"""
  {RECORD} businessName firstName lastName email displayName archived
  phones {{ type number }}
  addresses {{ type {SITE} }}
  notificationEmails invoiceCcEmails
  settings {{ taxFree taxRate smsEnabled billingEmails marketingEmails reportEmails noEmail }}
  badges {{ fieldKey label icon }}
  contacts {{ {RECORD} firstName lastName title email notes phones {{ type number }} }}
  facilities {{ {RECORD} name notes address {{ {SITE} }}
    assets {{ {RECORD} kind manufacturer model serialNumber installDate location notes }} }}
"""

# `other: edges` only under @include: both directive values are compiled variants.
LIST = """query($filter: CustomerFilter, $typed: Boolean!) {
  customers(first: 50, filter: $filter) {
    totalCount pageInfo { hasNextPage endCursor }
    edges { cursor node { %s } }
    other: edges @include(if: $typed) { cursor } } }"""
# `credentials` is not in the specs: asking for it leaves the document to the executor.
DETAIL = """query($id: ID!) { customer(id: $id) { %s %s } }"""


NODE_PLAIN = """query($id: ID!) { node(id: $id) { __typename id
  ... on Customer { displayName contacts { firstName } }
  ... on Contact { firstName email } ... on Facility { name assets { kind } }
  ... on Asset { kind installDate } } }"""


class TestCompiledCustomFieldsAndDirectives:
    """The customer list and detail with everything selectable, compiled."""

    async def test_a_list_page_with_its_tree_and_custom_fields(self, tenant, compare):
        """Every field of customers, contacts, facilities and assets, custom field values
        and badges included, for both values of the document's @include."""
        await define_fields(tenant.admin)
        for name in ("Beta", "Alpha", "Gamma"):
            await make_rich_customer(tenant.admin, name)
        await make_customer(tenant.admin, businessName=None, firstName="Solo", lastName="Person")
        token = tenant.admin.token
        for typed in (True, False):
            body = {"query": LIST % TREE, "variables": {"typed": typed}}
            page = (await compare(token, body, compiled=True)).json()["data"]["customers"]
            assert ("other" in page) is typed
        assert [e["node"]["displayName"] for e in page["edges"]] == [
            "Alpha",
            "Beta",
            "Gamma",
            "Solo Person",
        ]
        assert page["totalCount"] == 4
        alpha = page["edges"][0]["node"]
        assert alpha["badges"] == [{"fieldKey": "tier", "label": "Gold", "icon": "star"}]
        assert {"key": "tier", "label": "Tier", "fieldType": "DROPDOWN", "value": "gold"} in alpha[
            "customFields"
        ]
        assert [c["firstName"] for c in alpha["contacts"]] == ["Ann", "Zed"]
        floors = alpha["facilities"][0]["assets"][0]["customFields"]
        assert {"key": "floors", "label": "Floors", "fieldType": "NUMBER", "value": 3} in floors
        assert alpha["settings"]["taxRate"] == 25.0

    async def test_a_customer_detail_with_custom_fields(self, tenant, compare):
        """`customer(id)` with everything attached; with `credentials`, the executor's."""
        await define_fields(tenant.admin)
        customer_id = await make_rich_customer(tenant.admin, "Detail")
        token = tenant.admin.token
        body = {"query": DETAIL % (TREE, ""), "variables": {"id": customer_id}}
        detail = (await compare(token, body, compiled=True)).json()["data"]["customer"]
        assert sum(len(f["assets"]) for f in detail["facilities"]) == 4
        body = {"query": DETAIL % (TREE, "credentials { id }"), "variables": {"id": customer_id}}
        await compare(token, body, compiled=False)

    async def test_no_definitions_read_as_empty_lists(self, tenant, compare):
        """A tenant without custom fields: empty values and badges."""
        customer = await make_customer(tenant.admin, businessName="Bare")
        body = {"query": DETAIL % (TREE, ""), "variables": {"id": customer["id"]}}
        detail = (await compare(tenant.admin.token, body, compiled=True)).json()["data"]
        assert detail["customer"]["customFields"] == []
        assert detail["customer"]["badges"] == []

    async def test_aliases_fragments_directives_and_search(self, tenant, compare):
        """Aliases, fragments and @skip apply per request; a search returns its matches."""
        await define_fields(tenant.admin)
        for name in ("Northwind", "Northgate", "Southpark"):
            await make_rich_customer(tenant.admin, name)
        query = """query($skip: Boolean!) { customers(first: 20, filter: {search: "north"}) {
          edges { node { ...Names kids: contacts { first: firstName }
            facilities @skip(if: $skip) { name } } } } }
          fragment Names on Customer { name: displayName __typename }"""
        token = tenant.admin.token
        body = {"query": query, "variables": {"skip": True}}
        edges = (await compare(token, body, compiled=True)).json()["data"]["customers"]["edges"]
        assert [e["node"] for e in edges] == [
            {"name": name, "__typename": "Customer", "kids": [{"first": "Ann"}, {"first": "Zed"}]}
            for name in ("Northgate", "Northwind")
        ]
        # The same document with the directive's variable flipped: another variant.
        body = {"query": query, "variables": {"skip": False}}
        edges = (await compare(token, body, compiled=True)).json()["data"]["customers"]["edges"]
        assert [f["name"] for f in edges[0]["node"]["facilities"]] == ["HQ", "Warehouse"]
        # A root field under @include: absent when excluded, as the executor answers.
        root = """query($on: Boolean!) { customers(first: 2) @include(if: $on) { totalCount } }"""
        await compare(token, {"query": root, "variables": {"on": True}}, compiled=True)
        await compare(token, {"query": root, "variables": {"on": False}}, compiled=False)

    async def test_a_repeated_document_keeps_answering_its_own_selection(self, tenant, compare):
        """Two documents differing only in their selection never share a compiled plan."""
        await make_customer(tenant.admin, businessName="Solo", email="solo@example.com")
        for _ in range(2):
            for fields, keys in (("id", {"id"}), ("email displayName", {"email", "displayName"})):
                query = "{ customers(first: 5) { edges { node { FIELDS } } } }".replace(
                    "FIELDS", fields
                )
                response = await compare(tenant.admin.token, {"query": query}, compiled=True)
                assert set(response.json()["data"]["customers"]["edges"][0]["node"]) == keys

    async def test_unknown_and_other_tenants_customers_read_as_null(
        self, tenant, other_tenant, compare
    ):
        """The tenant wall: another tenant's id reads as null."""
        await define_fields(other_tenant.admin)
        theirs = await make_rich_customer(other_tenant.admin, "Theirs")
        body = {
            "query": DETAIL % ("id contacts { id } badges { label }", ""),
            "variables": {"id": theirs},
        }
        response = await compare(tenant.admin.token, body, compiled=True)
        assert response.json() == {"data": {"customer": None}}


class TestCompiledNode:
    """`node(id:)` by global id, compiled per record type."""

    async def test_every_record_type_reads_as_the_executor_reads_it(self, tenant, compare):
        """Customers, contacts, facilities and assets, with and without custom fields."""
        await define_fields(tenant.admin)
        ids = await make_tree(tenant.admin, name="Noded")
        token = tenant.admin.token
        for global_id in ids.values():
            for query in (NODE, NODE_PLAIN):
                body = {"query": query, "variables": {"id": global_id}}
                node = (await compare(token, body, compiled=True)).json()["data"]["node"]
                assert node["id"] == global_id
        assert node["__typename"] == "Asset"

    async def test_portal_users_other_tenants_unknown_and_bare_ids(
        self, tenant, other_tenant, compare
    ):
        """Another customer's records and another tenant's read as null; a bare uuid, a
        credential or a user id is the executor's to look up."""
        own = await make_tree(tenant.admin, name="Own")
        other = await make_tree(tenant.admin, name="Other")
        theirs = await make_tree(other_tenant.admin, name="Theirs")
        portal = await add_portal_user(tenant, own["customer"])
        for name in ("customer", "contact", "facility", "asset"):
            mine = await compare(
                portal.token, {"query": NODE_PLAIN, "variables": {"id": own[name]}}, compiled=True
            )
            assert mine.json()["data"]["node"]["id"] == own[name]
            for hidden, api in ((other[name], portal), (theirs[name], tenant.admin)):
                response = await compare(
                    api.token, {"query": NODE_PLAIN, "variables": {"id": hidden}}, compiled=True
                )
                assert response.json() == {"data": {"node": None}}
        unknown = base64.b64encode(f"Contact:{uuid.uuid4()}".encode()).decode()
        response = await compare(
            tenant.admin.token, {"query": NODE_PLAIN, "variables": {"id": unknown}}, compiled=True
        )
        assert response.json() == {"data": {"node": None}}
        bare = base64.b64decode(own["contact"]).decode().split(":", 1)[1]
        me = (await tenant.admin("{ me { id } }"))["me"]["id"]
        for executor_only in (bare, me, "garbage"):
            body = {"query": NODE_PLAIN, "variables": {"id": executor_only}}
            await compare(tenant.admin.token, body, compiled=False)


@pytest.fixture
async def debug_client(settings, db):
    """The app in debug mode: responses name the read path that answered."""
    app = create_app(settings.model_copy(update={"log_level": "debug"}), database=db)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://fieldsync.test") as c:
        yield c


async def test_debug_mode_names_the_read_path(tenant, debug_client, client):
    """`X-Fieldsync-Read-Path`: compiled or executor, only in debug mode."""
    customer = await make_customer(tenant.admin, businessName="Pathed")
    headers = {"Authorization": f"Bearer {tenant.admin.token}"}
    compiled = {"query": DETAIL % ("id", ""), "variables": {"id": customer["id"]}}
    typed = {"query": DETAIL % ("id", "credentials { id }"), "variables": {"id": customer["id"]}}
    for body, path in ((compiled, "compiled"), (typed, "executor")):
        response = await debug_client.post("/graphql", json=body, headers=headers)
        assert response.headers["x-fieldsync-read-path"] == path
        response = await client.post("/graphql", json=body, headers=headers)
        assert "x-fieldsync-read-path" not in response.headers


def test_every_spec_field_is_a_field_of_its_type():
    """The specs name their GraphQL types' fields; what a type has beyond its spec is
    answered by the executor (the compiled path leaves such selections to it)."""
    from graphql import GraphQLObjectType

    from resolvers.selection_json import records
    from schema.encoding import Nested, ObjectSpec
    from schema.subscriptions import CHANGE_BATCH
    from schema.sync import CHANGE_RESULT
    from server.schema import build_schema

    schema = build_schema()._schema
    specs: list[ObjectSpec] = [
        records.CUSTOMER_CONNECTION,
        *(record.spec for record in records.RECORDS.values()),
        CHANGE_BATCH,
        CHANGE_RESULT,
    ]
    outside: dict[str, set[str]] = {}
    seen: set[str] = set()
    while specs:
        spec = specs.pop()
        if spec.name in seen:
            continue
        seen.add(spec.name)
        type_ = schema.get_type(spec.name)
        assert isinstance(type_, GraphQLObjectType), spec.name
        assert set(spec.fields) <= set(type_.fields), spec.name
        missing = set(type_.fields) - set(spec.fields)
        if missing:
            outside[spec.name] = missing
        specs.extend(m.spec for m in spec.fields.values() if isinstance(m, Nested))
    assert outside == {
        # The paged children (`...Connection`) page with DataLoaders on the typed path.
        "Customer": {
            "credentials",
            "contactsConnection",
            "facilitiesConnection",
            "credentialsConnection",
        },
        "Contact": {"customer", "credentials", "credentialsConnection"},
        "Facility": {"customer", "assetsConnection"},
        "Asset": {"customer", "facility"},
    }
