"""Paged children (issue #20, point 3): ``Customer.contactsConnection``,
``facilitiesConnection``, ``credentialsConnection``, ``Contact.credentialsConnection`` and
``Facility.assetsConnection`` page what the plain lists next to them hold, in the same
order, with the lists' cursor rules, `first` range and errors; a customer list's
connections cost a constant number of statements; the cost limit counts them; and the
compiled read path leaves documents that select them to the executor.
"""

from __future__ import annotations

from typing import Any

import pytest

from db import raw
from db.seed import seed_records
from tests.api.credential_queries import add_portal_user, make_contact, make_credential
from tests.api.queries import make_customer
from tests.conftest import Api, Tenant, new_tenant

PAGE = "totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor } edges { cursor node { id } }"

CUSTOMER_CHILDREN = f"""query($id: ID!, $first: Int!, $after: String) {{ customer(id: $id) {{
  contacts {{ id }} facilities {{ id }} credentials {{ id }}
  contactsConnection(first: $first, after: $after) {{ {PAGE} }}
  facilitiesConnection(first: $first, after: $after) {{ {PAGE} }}
  credentialsConnection(first: $first, after: $after) {{ {PAGE} }} }} }}"""

ASSETS = f"""query($id: ID!, $first: Int!, $after: String) {{ node(id: $id) {{ ... on Facility {{
  assets {{ id kind }}
  assetsConnection(first: $first, after: $after) {{ {PAGE} }} }} }} }}"""

CONTACT_CREDENTIALS = f"""query($id: ID!, $first: Int!, $after: String) {{ node(id: $id) {{
  ... on Contact {{ credentials {{ id }} credentialsConnection(first: $first, after: $after) {{ {PAGE} }} }} }} }}"""

# Mixed case on purpose: the lists order by the display column in any case.
LAST_NAMES = ["delta", "Alpha", "charlie", "Bravo", "echo"]
KINDS = [f"Door {i:02d}" for i in range(23)]


async def create_many(api: Api, field: str, inputs: list[dict[str, Any]]) -> list[str]:
    """Create records in one request (aliased mutations); their ids, in input order."""
    variables = {f"i{n}": value for n, value in enumerate(inputs)}
    head = ", ".join(f"$i{n}: Create{field}Input!" for n in range(len(inputs)))
    body = " ".join(
        f"r{n}: create{field}(input: $i{n}) {{ __typename ... on {field} {{ id }} }}"
        for n in range(len(inputs))
    )
    data = await api(f"mutation({head}) {{ {body} }}", variables)
    results = [data[f"r{n}"] for n in range(len(inputs))]
    assert all(r["__typename"] == field for r in results), results
    return [r["id"] for r in results]


@pytest.fixture(scope="module")
async def tree(db, client) -> dict[str, Any]:
    """A customer with five contacts, three facilities (one with 23 assets), and
    credentials (two of the customer, one public; one of a contact)."""
    tenant = await new_tenant(db, client)
    admin = tenant.admin
    customer = (await make_customer(admin, businessName="Acme Doors"))["id"]
    await create_many(
        admin,
        "Contact",
        [{"customerId": customer, "lastName": name} for name in LAST_NAMES],
    )
    facilities = await create_many(
        admin,
        "Facility",
        [{"customerId": customer, "name": name} for name in ("West", "east", "North")],
    )
    await create_many(admin, "Asset", [{"facilityId": facilities[0], "kind": k} for k in KINDS])
    await make_credential(admin, {"customerId": customer}, name="Router", isPublic=True)
    await make_credential(admin, {"customerId": customer}, name="alarm panel")
    contact = await make_contact(admin, customer)
    await make_credential(admin, {"contactId": contact}, name="Gate")
    return {
        "tenant": tenant,
        "customer": customer,
        "facility": facilities[0],
        "contact": contact,
    }


async def page_all(api: Api, document: str, variables: dict[str, Any], path: list[str]):
    """Every page of one connection; (ids in order, pages' hasPreviousPage, totalCounts)."""
    ids: list[str] = []
    previous: list[bool] = []
    totals: set[int] = set()
    after = None
    while True:
        data = await api(document, {**variables, "after": after})
        for key in path:
            data = data[key]
        ids += [e["node"]["id"] for e in data["edges"]]
        assert [e["cursor"] for e in data["edges"]][-1:] == [data["pageInfo"]["endCursor"]]
        previous.append(data["pageInfo"]["hasPreviousPage"])
        totals.add(data["totalCount"])
        if not data["pageInfo"]["hasNextPage"]:
            return ids, previous, totals
        after = data["pageInfo"]["endCursor"]


TOP_LEVEL = """query($customer: ID!, $facility: ID!, $contact: ID!) {
  contacts(customerId: $customer, first: 100) { edges { node { id } } }
  facilities(customerId: $customer, first: 100) { edges { node { id } } }
  credentials(customerId: $customer, first: 100) { edges { node { id } } }
  assets(facilityId: $facility, first: 100) { edges { node { id } } }
  contactCredentials: credentials(contactId: $contact, first: 100) { edges { node { id } } } }"""


async def top_level(tree) -> dict[str, list[str]]:
    """The top-level lists' ids, in their order: the connections' order too."""
    data = await tree["tenant"].admin(
        TOP_LEVEL,
        {"customer": tree["customer"], "facility": tree["facility"], "contact": tree["contact"]},
    )
    return {key: [e["node"]["id"] for e in value["edges"]] for key, value in data.items()}


async def test_the_connections_page_the_lists_in_the_top_level_lists_order(tree) -> None:
    """The same records as the plain list next to each, in the order (and with the
    cursors' sort) of `contacts(customerId:)` and its siblings: by the display column in
    any case, a missing one first."""
    admin = tree["tenant"].admin
    ordered = await top_level(tree)
    whole = (await admin(CUSTOMER_CHILDREN, {"id": tree["customer"], "first": 100}))["customer"]
    for field, listed in (
        ("contactsConnection", "contacts"),
        ("facilitiesConnection", "facilities"),
        ("credentialsConnection", "credentials"),
    ):
        ids, previous, totals = await page_all(
            admin, CUSTOMER_CHILDREN, {"id": tree["customer"], "first": 2}, ["customer", field]
        )
        assert ids == ordered[listed], field
        assert sorted(ids) == sorted(c["id"] for c in whole[listed]), field
        assert previous == [False] + [True] * (len(previous) - 1)
        assert totals == {len(whole[listed])}
    assert len(whole["contacts"]) == 6  # five named, and the credentials' contact
    assert len(whole["credentials"]) == 3  # a contact's credential is its customer's too


async def test_a_facility_with_many_assets_is_paged(tree) -> None:
    admin = tree["tenant"].admin
    whole = (await admin(ASSETS, {"id": tree["facility"], "first": 1}))["node"]
    assert [a["kind"] for a in whole["assets"]] == KINDS
    ids, previous, totals = await page_all(
        admin, ASSETS, {"id": tree["facility"], "first": 10}, ["node", "assetsConnection"]
    )
    assert ids == [a["id"] for a in whole["assets"]]
    assert ids == (await top_level(tree))["assets"]
    assert len(previous) == 3
    assert totals == {23}


async def test_a_contacts_credentials_are_paged(tree) -> None:
    admin = tree["tenant"].admin
    ids, _, totals = await page_all(
        admin,
        CONTACT_CREDENTIALS,
        {"id": tree["contact"], "first": 1},
        ["node", "credentialsConnection"],
    )
    assert ids == (await top_level(tree))["contactCredentials"]
    assert totals == {1}


async def test_portal_users_page_only_public_credentials(tree) -> None:
    tenant: Tenant = tree["tenant"]
    portal = await add_portal_user(tenant, tree["customer"])
    data = await portal(CUSTOMER_CHILDREN, {"id": tree["customer"], "first": 10})
    page = data["customer"]["credentialsConnection"]
    assert [e["node"]["id"] for e in page["edges"]] == [
        c["id"] for c in data["customer"]["credentials"]
    ]
    assert page["totalCount"] == 1


async def refusal(api: Api, document: str, variables: dict[str, Any]) -> dict[str, Any]:
    response = await api.post(document, variables)
    body = response.json()
    [error] = body["errors"]
    return {"message": error["message"], "code": error["extensions"]["code"]}


@pytest.mark.parametrize("first", [0, -1, 101, 1_000_000])
async def test_first_out_of_range_is_refused_as_customers_refuses_it(tree, first) -> None:
    admin = tree["tenant"].admin
    expected = await refusal(
        admin, "query($first: Int!) { customers(first: $first) { totalCount } }", {"first": first}
    )
    assert expected["code"] == "BAD_USER_INPUT"
    for document, record in ((CUSTOMER_CHILDREN, "customer"), (ASSETS, "facility")):
        got = await refusal(admin, document, {"id": tree[record], "first": first})
        assert got == expected, document


async def test_cursors_of_other_lists_and_malformed_ones_are_refused(tree) -> None:
    admin = tree["tenant"].admin
    listed = await admin(
        """{ customers(first: 1, orderBy: {field: CREATED_AT}) { pageInfo { endCursor } } }"""
    )
    by_time = listed["customers"]["pageInfo"]["endCursor"]
    got = await refusal(admin, ASSETS, {"id": tree["facility"], "first": 5, "after": by_time})
    assert got["code"] == "BAD_USER_INPUT"
    assert "cursor of another list" in got["message"]
    expected = await refusal(
        admin,
        "query($after: String) { customers(after: $after) { totalCount } }",
        {"after": "not-a-cursor"},
    )
    got = await refusal(
        admin, CUSTOMER_CHILDREN, {"id": tree["customer"], "first": 5, "after": "not-a-cursor"}
    )
    assert got == expected


LIST_TREE = """query($first: Int!) { customers(first: $first) { edges { node { id
  contactsConnection(first: 2) { totalCount edges { node { id } } }
  credentialsConnection(first: 2) { totalCount edges { node { id } } }
  facilitiesConnection(first: 2) { totalCount pageInfo { hasNextPage } edges { node { id
    assetsConnection(first: 2) { totalCount edges { node { id } } } } } } } } } }"""


async def test_a_customer_lists_connections_cost_a_constant_number_of_statements(
    db, tenant, statements, monkeypatch
) -> None:
    """A page of 40 customers with four connections each (and assets under facilities)
    costs as many statements as a page of 2."""
    await seed_records(
        db,
        tenant.org_id,
        customers_count=40,
        contacts_per_customer=3,
        facilities_per_customer=3,
        assets_per_customer=4,
    )
    fetched: list[str] = []
    fetch = raw.fetch

    async def counting(conn, sql, *args):
        fetched.append(sql)
        return await fetch(conn, sql, *args)

    monkeypatch.setattr(raw, "fetch", counting)
    counts = {}
    for first in (2, 40):
        statements.reset()
        fetched.clear()
        data = await tenant.admin(LIST_TREE, {"first": first})
        edges = data["customers"]["edges"]
        assert len(edges) == first
        for edge in edges:
            facilities = edge["node"]["facilitiesConnection"]
            assert facilities["totalCount"] == 3
            assert facilities["pageInfo"]["hasNextPage"]
            assert edge["node"]["contactsConnection"]["totalCount"] == 3
        counts[first] = statements.count + len(fetched)
    assert counts[40] == counts[2], counts
    # page + 4 pages + 4 counts (+ the transaction's and the caller's statements).
    assert counts[40] <= 16, (statements.statements, fetched)


async def test_the_cost_limit_counts_nested_connections(tree) -> None:
    admin = tree["tenant"].admin
    document = """{ customers(first: 100) { edges { node {
      facilitiesConnection(first: 100) { edges { node {
        assetsConnection(first: 100) { edges { node { id kind } } } } } } } } } }"""
    response = await admin.post(document)
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "QUERY_TOO_COSTLY", error


async def test_the_compiled_read_path_leaves_them_to_the_executor(tree, compare) -> None:
    """`customer`, `customers` and `node` documents are compiled unless they select a
    connection field of a record: those are answered by the executor, the same answer."""
    token = tree["tenant"].admin.token
    plain = {
        "query": "query($id: ID!) { customer(id: $id) { id contacts { id } } }",
        "variables": {"id": tree["customer"]},
    }
    await compare(token, plain, compiled=True)
    for document, record in (
        (CUSTOMER_CHILDREN, "customer"),
        (ASSETS, "facility"),
        (CONTACT_CREDENTIALS, "contact"),
    ):
        body = {"query": document, "variables": {"id": tree[record], "first": 3}}
        response = await compare(token, body, compiled=False)
        assert "errors" not in response.json()
    listing = {"query": LIST_TREE, "variables": {"first": 5}}
    response = await compare(token, listing, compiled=False)
    assert response.json()["data"]["customers"]["edges"]
    # Without arguments too (the defaults): still the executor's.
    bare = {
        "query": "query($id: ID!) { customer(id: $id) { contactsConnection { totalCount } } }",
        "variables": {"id": tree["customer"]},
    }
    response = await compare(token, bare, compiled=False)
    assert response.json()["data"]["customer"]["contactsConnection"]["totalCount"] == 6


async def test_the_top_level_lists_refuse_a_cursor_of_another_list_too(tree) -> None:
    """`contacts`, `facilities`, `assets` and `credentials` page by text and the access
    report by time: a cursor holding the other kind is a client error, not a server one."""
    admin = tree["tenant"].admin
    listed = await admin(
        """{ byTime: customers(first: 1, orderBy: {field: CREATED_AT}) { pageInfo { endCursor } }
             byName: customers(first: 1) { pageInfo { endCursor } } }"""
    )
    by_time = listed["byTime"]["pageInfo"]["endCursor"]
    by_name = listed["byName"]["pageInfo"]["endCursor"]
    for field, cursor in (
        ("contacts", by_time),
        ("facilities", by_time),
        ("assets", by_time),
        ("credentials", by_time),
        ("credentialAccessReport", by_name),
    ):
        got = await refusal(
            admin, f"query($a: String) {{ {field}(after: $a) {{ totalCount }} }}", {"a": cursor}
        )
        assert got["code"] == "BAD_USER_INPUT", (field, got)
        assert "cursor of another list" in got["message"], field
