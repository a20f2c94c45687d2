"""Customer reads encoded in one pass: the JSON graphql-core's own resolution gives."""

from __future__ import annotations

from tests.api.queries import (
    CREATE_ASSET,
    CREATE_CONTACT,
    CREATE_FACILITY,
    CREATE_FIELD,
    make_customer,
)

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

# `edges` twice with different selections reduces to no single shape: graphql-core resolves
# it field by field, which is the reference the encoded page must equal.
LIST = """query($filter: CustomerFilter, $typed: Boolean!) {
  customers(first: 50, filter: $filter) {
    totalCount pageInfo { hasNextPage endCursor }
    edges { cursor node { %s } }
    other: edges @include(if: $typed) { cursor } } }"""
# `credentials` is not in the encoder's specs: asking for it resolves the typed way.
DETAIL = """query($id: ID!) { customer(id: $id) { %s %s } }"""


async def define_fields(api) -> None:
    """A dropdown with a badge icon and a number field on every record type."""
    for entity in ("CUSTOMER", "CONTACT", "FACILITY", "ASSET"):
        inputs = [
            {
                "entityType": entity,
                "key": "tier",
                "label": "Tier",
                "fieldType": "DROPDOWN",
                "options": [
                    {"value": "gold", "label": "Gold", "badgeIcon": "star"},
                    {"value": "basic", "label": "Basic"},
                ],
            },
            {"entityType": entity, "key": "floors", "label": "Floors", "fieldType": "NUMBER"},
        ]
        for payload in inputs:
            created = await api(CREATE_FIELD, {"input": payload})
            assert created["createCustomField"]["__typename"] == "CustomFieldDefinition", created


async def make_rich_customer(api, name: str) -> str:
    """A customer using every field, with two contacts, two facilities and assets."""
    tier = [{"key": "tier", "value": "gold"}, {"key": "floors", "value": 3}]
    customer = await make_customer(
        api,
        businessName=name,
        email=f"{name.lower()}@example.com",
        phones=[{"type": "MOBILE", "number": "+1 555 0100"}],
        addresses=[{"type": "BILL_TO", "line1": "1 Main St", "city": "Oslo", "postalCode": "0150"}],
        notificationEmails=["ops@example.com"],
        settings={"taxRate": 25, "smsEnabled": True},
        customFields=tier,
    )
    for first in ("Zed", "Ann"):
        contact = {"customerId": customer["id"], "firstName": first, "lastName": first + "son"}
        created = await api(CREATE_CONTACT, {"input": {**contact, "customFields": tier[:1]}})
        assert created["createContact"]["__typename"] == "Contact", created
    for site in ("Warehouse", "HQ"):
        facility = await api(
            CREATE_FACILITY,
            {"input": {"customerId": customer["id"], "name": site, "address": {"city": "Bergen"}}},
        )
        assert facility["createFacility"]["__typename"] == "Facility", facility
        for kind, date in (("Fire door", "2024-02-29"), ("Shutter", None)):
            asset = {
                "facilityId": facility["createFacility"]["id"],
                "kind": kind,
                "installDate": date,
                "notes": 'quote " and \\ backslash, ünïcode',
                "customFields": tier[1:],
            }
            created = await api(CREATE_ASSET, {"input": asset})
            assert created["createAsset"]["__typename"] == "Asset", created
    return str(customer["id"])


class TestEncodedCustomerReads:
    """The customer list and detail, encoded, equal what typed resolution returns."""

    async def test_a_list_page_with_its_tree_equals_the_typed_resolution(self, tenant):
        """Every field of customers, contacts, facilities and assets encodes as GraphQL does."""
        await define_fields(tenant.admin)
        for name in ("Beta", "Alpha", "Gamma"):
            await make_rich_customer(tenant.admin, name)
        await make_customer(tenant.admin, businessName=None, firstName="Solo", lastName="Person")
        query = LIST % TREE
        typed = (await tenant.admin(query, {"typed": True}))["customers"]
        encoded = (await tenant.admin(query, {"typed": False}))["customers"]
        assert [e["node"]["displayName"] for e in encoded["edges"]] == [
            "Alpha",
            "Beta",
            "Gamma",
            "Solo Person",
        ]
        assert encoded["edges"] == typed["edges"]
        assert encoded["pageInfo"] == typed["pageInfo"]
        assert encoded["totalCount"] == typed["totalCount"] == 4
        alpha = encoded["edges"][0]["node"]
        assert alpha["badges"] == [{"fieldKey": "tier", "label": "Gold", "icon": "star"}]
        assert [c["firstName"] for c in alpha["contacts"]] == ["Ann", "Zed"]
        assert [f["name"] for f in alpha["facilities"]] == ["HQ", "Warehouse"]
        assert alpha["facilities"][0]["assets"][0]["installDate"] == "2024-02-29"
        assert alpha["settings"]["taxRate"] == 25.0

    async def test_a_customer_detail_equals_the_typed_resolution(self, tenant):
        """`customer(id)` with everything attached encodes as GraphQL does."""
        await define_fields(tenant.admin)
        customer_id = await make_rich_customer(tenant.admin, "Detail")
        encoded = (await tenant.admin(DETAIL % (TREE, ""), {"id": customer_id}))["customer"]
        typed = (await tenant.admin(DETAIL % (TREE, "credentials { id }"), {"id": customer_id}))[
            "customer"
        ]
        assert typed.pop("credentials") == []
        assert encoded == typed
        assert len(encoded["facilities"]) == 2
        assert sum(len(f["assets"]) for f in encoded["facilities"]) == 4

    async def test_aliases_fragments_and_search_shape_the_encoded_page(self, tenant):
        """Aliases, fragments and @skip apply; a search returns only its matches."""
        await define_fields(tenant.admin)
        for name in ("Northwind", "Northgate", "Southpark"):
            await make_rich_customer(tenant.admin, name)
        query = """query($skip: Boolean!) { customers(first: 20, filter: {search: "north"}) {
          edges { node { ...Names kids: contacts { first: firstName }
            facilities @skip(if: $skip) { name } } } } }
          fragment Names on Customer { name: displayName __typename }"""
        edges = (await tenant.admin(query, {"skip": True}))["customers"]["edges"]
        assert [e["node"] for e in edges] == [
            {
                "name": name,
                "__typename": "Customer",
                "kids": [{"first": "Ann"}, {"first": "Zed"}],
            }
            for name in ("Northgate", "Northwind")
        ]
        # The same document again with the directive's variable flipped: a shape remembered
        # for the first request must not answer the second.
        edges = (await tenant.admin(query, {"skip": False}))["customers"]["edges"]
        assert [f["name"] for f in edges[0]["node"]["facilities"]] == ["HQ", "Warehouse"]

    async def test_a_repeated_document_keeps_answering_its_own_selection(self, tenant):
        """Two documents differing only in their selection never share a remembered shape."""
        await make_customer(tenant.admin, businessName="Solo", email="solo@example.com")
        for _ in range(2):
            for fields, keys in (("id", {"id"}), ("email displayName", {"email", "displayName"})):
                query = "{ customers(first: 5) { edges { node { FIELDS } } } }".replace(
                    "FIELDS", fields
                )
                node = (await tenant.admin(query))["customers"]["edges"][0]["node"]
                assert set(node) == keys

    async def test_unknown_and_other_tenants_customers_read_as_null(self, tenant, other_tenant):
        """The encoded detail path keeps the tenant wall: another tenant's id reads as null."""
        await define_fields(other_tenant.admin)
        theirs = await make_rich_customer(other_tenant.admin, "Theirs")
        data = await tenant.admin(DETAIL % ("id contacts { id }", ""), {"id": theirs})
        assert data["customer"] is None
