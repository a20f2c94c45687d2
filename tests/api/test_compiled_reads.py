"""Compiled reads (server/compiled_reads.py): the executor's answer, byte for byte.

Every request goes to two apps on the same database: the normal one, where a compiled
document answers `customer(id:)` without the executor, and one with compiled reads
switched off. Status, content type and body must be identical; the compiled-reads counter
says which requests the compiled path answered and which it handed to the executor.
"""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Any

import orjson

from db.queries import record_rows
from tests.api.compare_paths import (
    compiled_count,
    define_fields,
    make_rich_customer,
)
from tests.api.credential_queries import add_portal_user
from tests.api.queries import CREATE_ASSET, CREATE_CONTACT, CREATE_FACILITY, make_customer
from tests.api.test_push_hostile import owner_ddl

SITE = "line1 line2 city region postalCode country"
# The frontend bench's detail page (bench/frontend/queries.py, query b).
DETAIL = f"""query CustomerDetail($id: ID!) {{
  customer(id: $id) {{
    id displayName businessName firstName lastName email phones {{ type number }}
    archived createdAt updatedAt version
    addresses {{ type {SITE} }}
    notificationEmails invoiceCcEmails
    settings {{ taxFree taxRate smsEnabled billingEmails marketingEmails reportEmails noEmail }}
    contacts {{ id firstName lastName title email phones {{ type number }} notes version
      createdAt updatedAt }}
    facilities {{ id name address {{ {SITE} }} notes version createdAt updatedAt
      assets {{ id kind manufacturer model serialNumber installDate location notes version
        createdAt updatedAt }} }}
  }}
}}"""
WHOLE = f"""query Whole($id: ID!) {{
  customer(id: $id) {{
    id recordId version createdAt updatedAt businessName firstName lastName displayName email
    phones {{ type number }} addresses {{ type line1 {SITE} }} notificationEmails invoiceCcEmails
    settings {{ taxFree taxRate smsEnabled billingEmails marketingEmails reportEmails noEmail }}
    archived customFields {{ key label fieldType value }} badges {{ fieldKey label icon }}
    contacts {{ id recordId version createdAt updatedAt firstName lastName title email
      phones {{ type number }} notes }}
    facilities {{ id recordId version createdAt updatedAt name address {{ {SITE} }} notes
      assets {{ id recordId version createdAt updatedAt kind manufacturer model serialNumber
        installDate location notes }} }}
  }}
}}"""
SHAPED = """query Shaped($id: ID!) {
  one: customer(id: $id) { __typename ...Names
    people: contacts { first: firstName __typename }
    facilities { name assets { kind } } facilities { id } } }
  fragment Names on Customer { name: displayName ... on Customer { email } }"""


async def delete(api, mutation: str, global_id: str) -> None:
    doc = f"mutation($id: ID!) {{ {mutation}(id: $id) {{ __typename }} }}"
    assert (await api(doc, {"id": global_id}))[mutation]["__typename"] == "DeletedRecord"


class TestCompiledCustomerDetail:
    async def test_the_detail_page_is_answered_compiled_as_the_executor_answers(
        self, tenant, compare
    ):
        """The bench's detail document: every field of the customer and its tree."""
        await define_fields(tenant.admin)  # defined fields exist but are not selected
        customer_id = await make_rich_customer(tenant.admin, "Detail")
        response = await compare(
            tenant.admin.token, {"query": DETAIL, "variables": {"id": customer_id}}, compiled=True
        )
        customer = response.json()["data"]["customer"]
        assert customer["displayName"] == "Detail"
        assert [c["firstName"] for c in customer["contacts"]] == ["Ann", "Zed"]
        assert [f["name"] for f in customer["facilities"]] == ["HQ", "Warehouse"]
        assert [a["kind"] for a in customer["facilities"][0]["assets"]] == ["Fire door", "Shutter"]
        assert customer["facilities"][0]["assets"][0]["installDate"] == "2024-02-29"
        assert customer["settings"]["taxRate"] == 25.0
        # The second request finds the compiled document in the cache.
        await compare(
            tenant.admin.token, {"query": DETAIL, "variables": {"id": customer_id}}, compiled=True
        )

    async def test_aliases_fragments_and_typename_shape_the_answer(self, tenant, compare):
        """Aliased root and lists, fragments, inline fragments, a list selected twice."""
        await define_fields(tenant.admin)
        customer_id = await make_rich_customer(tenant.admin, "Shaped")
        body = {"query": SHAPED, "variables": {"id": customer_id}}
        one = (await compare(tenant.admin.token, body, compiled=True)).json()["data"]["one"]
        # `facilities` twice under one key: the selections merge.
        assert one["facilities"][0] == {
            "name": "HQ",
            "assets": [{"kind": "Fire door"}, {"kind": "Shutter"}],
            "id": one["facilities"][0]["id"],
        }
        # The same list under two keys is left to the executor.
        twice = SHAPED.replace(" facilities { id }", " sites: facilities { id }")
        await compare(
            tenant.admin.token, {"query": twice, "variables": {"id": customer_id}}, compiled=False
        )
        assert one["__typename"] == "Customer"
        assert one["name"] == "Shaped"
        assert one["email"] == "shaped@example.com"
        assert one["people"] == [
            {"first": "Ann", "__typename": "Contact"},
            {"first": "Zed", "__typename": "Contact"},
        ]

    async def test_deleted_children_archived_and_missing_customers(self, tenant, compare):
        """Deleted contacts and assets are left out; archived customers read; unknown,
        deleted and other tenants' customers read as null."""
        customer = await make_customer(tenant.admin, businessName="Pruned")
        kept = await tenant.admin(
            CREATE_CONTACT, {"input": {"customerId": customer["id"], "firstName": "Kept"}}
        )
        gone = await tenant.admin(
            CREATE_CONTACT, {"input": {"customerId": customer["id"], "firstName": "Gone"}}
        )
        facility = await tenant.admin(
            CREATE_FACILITY, {"input": {"customerId": customer["id"], "name": "Depot"}}
        )
        asset = await tenant.admin(
            CREATE_ASSET,
            {"input": {"facilityId": facility["createFacility"]["id"], "kind": "Gate"}},
        )
        await delete(tenant.admin, "deleteContact", gone["createContact"]["id"])
        await delete(tenant.admin, "deleteAsset", asset["createAsset"]["id"])
        await tenant.admin(
            "mutation($id: ID!) { archiveCustomer(id: $id) { __typename } }", {"id": customer["id"]}
        )
        data = (
            await compare(
                tenant.admin.token,
                {"query": DETAIL, "variables": {"id": customer["id"]}},
                compiled=True,
            )
        ).json()["data"]["customer"]
        assert data["archived"] is True
        assert [c["id"] for c in data["contacts"]] == [kept["createContact"]["id"]]
        assert data["facilities"][0]["assets"] == []

        empty = await make_customer(tenant.admin, businessName="Empty")
        await delete(tenant.admin, "deleteCustomer", empty["id"])
        unknown = f"Customer:{uuid.uuid4()}"
        import base64

        for global_id in (empty["id"], base64.b64encode(unknown.encode()).decode()):
            response = await compare(
                tenant.admin.token,
                {"query": DETAIL, "variables": {"id": global_id}},
                compiled=True,
            )
            assert response.json() == {"data": {"customer": None}}

    async def test_another_tenants_customer_reads_as_null(self, tenant, other_tenant, compare):
        """Row-level security scopes the one statement as it scopes the executor's."""
        await define_fields(other_tenant.admin)
        theirs = await make_rich_customer(other_tenant.admin, "Theirs")
        response = await compare(
            tenant.admin.token, {"query": DETAIL, "variables": {"id": theirs}}, compiled=True
        )
        assert response.json() == {"data": {"customer": None}}

    async def test_portal_users_read_only_their_own_customer(self, tenant, compare):
        """A portal user's own customer reads; any other reads as null."""
        own = await make_customer(tenant.admin, businessName="Own")
        other = await make_customer(tenant.admin, businessName="Other")
        portal = await add_portal_user(tenant, own["id"])
        for customer, expected in ((own, "Own"), (other, None)):
            response = await compare(
                portal.token,
                {"query": DETAIL, "variables": {"id": customer["id"]}},
                compiled=True,
            )
            found = response.json()["data"]["customer"]
            assert (found and found["displayName"]) == expected

    async def test_a_body_in_another_charset_is_the_executors_415(self, tenant, client, executor):
        """Only utf-8 JSON is answered; `charset=latin-1` gets the executor's 415."""
        customer = await make_customer(tenant.admin, businessName="Charset")
        body = orjson.dumps({"query": DETAIL, "variables": {"id": customer["id"]}})
        headers = {"Authorization": f"Bearer {tenant.admin.token}"}
        before = compiled_count()
        statuses = set()
        for content_type in ("application/json; charset=latin-1", "text/plain"):
            for app in (client, executor):
                response = await app.post(
                    "/graphql", content=body, headers={**headers, "Content-Type": content_type}
                )
                statuses.add(response.status_code)
        assert statuses == {415}
        assert compiled_count() == before
        response = await client.post(
            "/graphql",
            content=body,
            headers={**headers, "Content-Type": "Application/JSON; Charset=UTF-8"},
        )
        assert response.json()["data"]["customer"]["displayName"] == "Charset"
        assert compiled_count() == before + 1

    async def test_the_negotiated_media_type_is_kept(self, tenant, compare):
        """`Accept: application/graphql-response+json` gets that content type."""
        customer = await make_customer(tenant.admin, businessName="Typed")
        response = await compare(
            tenant.admin.token,
            {"query": DETAIL, "variables": {"id": customer["id"]}},
            compiled=True,
            headers={"Accept": "application/graphql-response+json"},
        )
        assert response.headers["content-type"].startswith("application/graphql-response+json")

    async def test_the_operation_named_in_the_request_is_the_one_compiled(self, tenant, compare):
        """Two operations in one document: `operationName` picks; without it, the executor's
        error."""
        customer = await make_customer(tenant.admin, businessName="Named", email="n@example.com")
        document = (
            "query A($id: ID!) { customer(id: $id) { email } }"
            " query B($id: ID!) { customer(id: $id) { displayName } }"
        )
        variables = {"id": customer["id"]}
        response = await compare(
            tenant.admin.token,
            {"query": document, "variables": variables, "operationName": "B"},
            compiled=True,
        )
        assert response.json() == {"data": {"customer": {"displayName": "Named"}}}
        await compare(
            tenant.admin.token, {"query": document, "variables": variables}, compiled=False
        )

    async def test_every_field_holds_what_was_written(self, tenant, compare):
        """Both paths read a field by the same spec expression (the typed one through
        ``from_row``), so their equality cannot catch a field read from the wrong column:
        every field of the tree is checked against the values written, all distinct."""
        await define_fields(tenant.admin)
        lines = {"line2": "Suite 2", "city": "Oslo", "region": "Viken", "country": "NO"}
        customer = await make_customer(
            tenant.admin,
            businessName="Whole",
            firstName="Wanda",
            lastName="Wholeson",
            email="whole@example.com",
            phones=[{"type": "WORK", "number": "+47 1"}],
            addresses=[{"type": "SHIP_TO", "line1": "1 Dock", "postalCode": "0150", **lines}],
            notificationEmails=["note@example.com"],
            invoiceCcEmails=["cc@example.com"],
            settings={"taxRate": 12.5, "taxFree": True, "billingEmails": False, "noEmail": True},
            customFields=[{"key": "tier", "value": "gold"}],
        )
        contact = {
            "firstName": "Carl",
            "lastName": "Carlson",
            "title": "Boss",
            "email": "carl@example.com",
            "phones": [{"type": "HOME", "number": "+47 2"}],
            "notes": "contact notes",
        }
        created = await tenant.admin(
            CREATE_CONTACT, {"input": {"customerId": customer["id"], **contact}}
        )
        site = {"line1": "2 Yard", "postalCode": "5003", **lines}
        facility = await tenant.admin(
            CREATE_FACILITY,
            {
                "input": {
                    "customerId": customer["id"],
                    "name": "Yard",
                    "address": site,
                    "notes": "facility notes",
                }
            },
        )
        asset = {
            "kind": "Gate",
            "manufacturer": "Maker",
            "model": "M1",
            "serialNumber": "SN-9",
            "installDate": "2023-04-05",
            "location": "North",
            "notes": "asset notes",
        }
        made = await tenant.admin(
            CREATE_ASSET, {"input": {"facilityId": facility["createFacility"]["id"], **asset}}
        )
        body = {"query": WHOLE, "variables": {"id": customer["id"]}}
        read = (await compare(tenant.admin.token, body, compiled=True)).json()["data"]["customer"]
        [read_contact] = read.pop("contacts")
        [read_facility] = read.pop("facilities")
        [read_asset] = read_facility.pop("assets")
        for record, global_id in (
            (read, customer["id"]),
            (read_contact, created["createContact"]["id"]),
            (read_facility, facility["createFacility"]["id"]),
            (read_asset, made["createAsset"]["id"]),
        ):
            assert record.pop("id") == global_id
            assert record.pop("recordId") == base64.b64decode(global_id).decode().split(":")[1]
            assert all(isinstance(n, int) for n in record.pop("version").values())
            created_at = datetime.fromisoformat(record.pop("createdAt"))
            assert created_at <= datetime.fromisoformat(record.pop("updatedAt"))
        assert read == {
            "businessName": "Whole",
            "firstName": "Wanda",
            "lastName": "Wholeson",
            "displayName": "Whole",
            "email": "whole@example.com",
            "phones": [{"type": "WORK", "number": "+47 1"}],
            "addresses": [{"type": "SHIP_TO", "line1": "1 Dock", "postalCode": "0150", **lines}],
            "notificationEmails": ["note@example.com"],
            "invoiceCcEmails": ["cc@example.com"],
            "settings": {
                "taxFree": True,
                "taxRate": 12.5,
                "smsEnabled": False,
                "billingEmails": False,
                "marketingEmails": False,
                "reportEmails": True,
                "noEmail": True,
            },
            "archived": False,
            "customFields": [
                {"key": "floors", "label": "Floors", "fieldType": "NUMBER", "value": None},
                {"key": "tier", "label": "Tier", "fieldType": "DROPDOWN", "value": "gold"},
            ],
            "badges": [{"fieldKey": "tier", "label": "Gold", "icon": "star"}],
        }
        assert read_contact == contact
        assert read_facility == {"name": "Yard", "address": site, "notes": "facility notes"}
        assert read_asset == asset


class TestHandedToTheExecutor:
    """What the compiled path leaves to the executor, answered exactly as before."""

    async def test_caller_problems(self, tenant, compare):
        """No token, a forged one, a revoked user: the executor's UNAUTHENTICATED."""
        customer = await make_customer(tenant.admin, businessName="Guarded")
        body = {"query": DETAIL, "variables": {"id": customer["id"]}}
        tech = await tenant.add_user("TECHNICIAN")
        await compare(tech.token, body, compiled=True)
        me = await tech("{ me { id } }")
        await tenant.admin(
            "mutation($id: ID!) { setUserActive(userId: $id, active: false) { __typename } }",
            {"id": me["me"]["id"]},
        )
        for token in (None, "not-a-token", tech.token):
            response = await compare(token, body, compiled=False)
            assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"

    async def test_documents_it_does_not_compile(self, tenant, compare):
        """Fields outside the specs, two root fields, mutations, invalid documents,
        documents over the limits, bad variables and ids."""
        await define_fields(tenant.admin)
        customer_id = await make_rich_customer(tenant.admin, "Plain")
        token = tenant.admin.token
        variables = {"id": customer_id}
        documents = [
            "query($id: ID!) { customer(id: $id) { credentials { id } } }",
            "query($id: ID!) { customer(id: $id) { id } me { email } }",
            "query($id: ID!) { customer(id: $id) { id } __typename }",
            "query($id: ID!) { customer(id: $id) { nope } }",
            "query($id: ID!) { customer(id: $id) { id }",
            "query($id: ID!) { customer(id: $id) { " + "a: id " * 40 + "} }",
            "mutation($id: ID!) { archiveCustomer(id: $id) { __typename } }",
        ]
        for document in documents:
            body = {"query": document, "variables": {**variables, "c": True}}
            await compare(token, body, compiled=False)
        for bad in ({"id": 5}, {}, {"id": "garbage"}, {"id": variables["id"][:-2]}):
            await compare(token, {"query": DETAIL, "variables": bad}, compiled=False)
        # A document too long to keep as a cache key.
        padded = DETAIL + "\n# " + "x" * 20_000
        await compare(token, {"query": padded, "variables": variables}, compiled=False)
        # A literal id instead of a variable compiles.
        literal = DETAIL.replace("($id: ID!)", "").replace("$id", f'"{customer_id}"')
        await compare(token, {"query": literal}, compiled=True)

    async def test_a_database_error_is_answered_by_the_executor(self, tenant, compare, monkeypatch):
        """If the compiled statement fails, the executor answers (here: successfully)."""
        customer = await make_customer(tenant.admin, businessName="Fallback")

        async def broken(*args: Any, **kwargs: Any) -> None:
            raise ConnectionResetError("connection lost")

        monkeypatch.setattr(record_rows, "read_record", broken)
        response = await compare(
            tenant.admin.token,
            {"query": DETAIL, "variables": {"id": customer["id"]}},
            compiled=False,
        )
        assert response.json()["data"]["customer"]["displayName"] == "Fallback"


LIST = f"""query List($first: Int!, $after: String, $filter: CustomerFilter,
                 $order: CustomerOrder) {{
  customers(first: $first, after: $after, filter: $filter, orderBy: $order) {{
    totalCount __typename
    pageInfo {{ hasNextPage hasPreviousPage startCursor endCursor }}
    edges {{ cursor node {{
      id displayName businessName email archived createdAt updatedAt phones {{ type number }}
      contacts {{ id firstName lastName email }}
      facilities {{ id name address {{ {SITE} }} assets {{ id kind installDate }} }} }} }}
  }}
}}"""


async def make_list(api) -> list[dict]:
    """Nine customers: names in mixed case, a person, one archived, children on some."""
    made = []
    for name in ("maple Doors", "Maple Gates", "Birch", "Oak", "maplewood", "Ash", "Elm", "Fir"):
        email = f"{name.replace(' ', '.')}@Example.com"
        made.append(await make_customer(api, businessName=name, email=email))
    made.append(await make_customer(api, businessName=None, firstName="Mapleton", lastName="Jones"))
    for customer in made[:3]:
        await api(CREATE_CONTACT, {"input": {"customerId": customer["id"], "firstName": "Cy"}})
        facility = await api(
            CREATE_FACILITY, {"input": {"customerId": customer["id"], "name": "Yard"}}
        )
        await api(
            CREATE_ASSET,
            {"input": {"facilityId": facility["createFacility"]["id"], "kind": "Gate"}},
        )
    await api(
        "mutation($id: ID!) { archiveCustomer(id: $id) { __typename } }", {"id": made[3]["id"]}
    )
    return made


class TestCompiledCustomerList:
    async def test_filters_orders_and_pages_answer_as_the_executor(self, tenant, compare):
        """Every ordering both ways, the filters, and walking the pages by cursor."""
        await make_list(tenant.admin)
        token = tenant.admin.token
        orders = [None] + [
            {"field": field, "direction": direction}
            for field in ("NAME", "CREATED_AT", "UPDATED_AT")
            for direction in ("ASC", "DESC")
        ]
        filters = [
            None,
            {},
            {"archived": None},
            {"archived": True},
            {"search": "maple"},
            {"search": "MA"},
            {"search": "  "},
            {"search": "example.com", "archived": None},
            {"email": "ELM@example.COM"},
            {"search": "100%_"},
        ]
        for order in orders:
            for flt in filters:
                variables = {"first": 3, "filter": flt, "order": order}
                seen = 0
                while True:
                    body = {"query": LIST, "variables": variables}
                    page = (await compare(token, body, compiled=True)).json()["data"]["customers"]
                    seen += len(page["edges"])
                    if not page["pageInfo"]["hasNextPage"]:
                        break
                    variables = {**variables, "after": page["pageInfo"]["endCursor"]}
                assert seen == page["totalCount"], (order, flt)
        names = (
            await compare(
                token,
                {"query": LIST, "variables": {"first": 10, "filter": {"search": "maple"}}},
                compiled=True,
            )
        ).json()["data"]["customers"]
        # (The order between these follows the database's collation.)
        assert sorted(e["node"]["displayName"] for e in names["edges"]) == [
            "Maple Gates",
            "Mapleton Jones",
            "maple Doors",
            "maplewood",
        ]
        doors = next(e["node"] for e in names["edges"] if e["node"]["displayName"] == "maple Doors")
        assert doors["facilities"][0]["assets"][0]["kind"] == "Gate"

    async def test_the_bench_documents_and_small_selections(self, tenant, compare):
        """The frontend bench's list and search, and a count alone."""
        from bench.frontend.queries import FIELDSYNC_A, FIELDSYNC_C

        await make_list(tenant.admin)
        token = tenant.admin.token
        await compare(token, {"query": FIELDSYNC_A}, compiled=True)
        await compare(
            token, {"query": FIELDSYNC_C, "variables": {"search": "maple"}}, compiled=True
        )
        count = await compare(token, {"query": "{ customers { totalCount } }"}, compiled=True)
        assert count.json() == {"data": {"customers": {"totalCount": 8}}}

    async def test_portal_users_list_only_their_customer(self, tenant, compare):
        """The portal rule applies in the one statement."""
        made = await make_list(tenant.admin)
        portal = await add_portal_user(tenant, made[1]["id"])
        page = (
            await compare(portal.token, {"query": LIST, "variables": {"first": 5}}, compiled=True)
        ).json()["data"]["customers"]
        assert [e["node"]["displayName"] for e in page["edges"]] == ["Maple Gates"]
        assert page["totalCount"] == 1

    async def test_a_portal_user_without_a_customer_lists_nothing(
        self, tenant, compare, database_url
    ):
        """The portal rule fails closed: a portal row whose customer is missing (only a hand
        edit of the database makes one) lists no customer on either path, as its detail
        reads and `node` already show none."""
        made = await make_list(tenant.admin)
        portal = await add_portal_user(tenant, made[1]["id"])
        customer_uuid = base64.b64decode(made[1]["id"]).decode().split(":", 1)[1]
        await owner_ddl(
            database_url,
            "UPDATE users SET customer_id = NULL"
            f" WHERE role = 'PORTAL' AND customer_id = '{customer_uuid}'",
        )
        page = (
            await compare(portal.token, {"query": LIST, "variables": {"first": 5}}, compiled=True)
        ).json()["data"]["customers"]
        assert page["edges"] == []
        assert page["totalCount"] == 0
        children = await portal(
            "{ contacts { totalCount } facilities { totalCount } assets { totalCount } }"
        )
        assert children == {k: {"totalCount": 0} for k in ("contacts", "facilities", "assets")}

    async def test_bad_arguments_are_the_executors_to_report(self, tenant, compare):
        """`first` out of range, a forged cursor, a cursor of another ordering, a NUL."""
        await make_list(tenant.admin)
        token = tenant.admin.token
        by_date = {"field": "CREATED_AT", "direction": "ASC"}
        page = (
            await compare(
                token, {"query": LIST, "variables": {"first": 2, "order": by_date}}, compiled=True
            )
        ).json()["data"]["customers"]
        date_cursor = page["pageInfo"]["endCursor"]
        for variables in (
            {"first": 0},
            {"first": 101},
            {"first": 2, "after": "bm90LWEtY3Vyc29y"},
            {"first": 2, "after": date_cursor},
            {"first": 2, "filter": {"search": "ma\u0000"}},
            {"first": 2, "filter": {"email": "\u0000"}},
        ):
            await compare(token, {"query": LIST, "variables": variables}, compiled=False)
        # A cursor of another ordering is bad input with a way out, not a server error.
        wrong = await compare(
            token, {"query": LIST, "variables": {"first": 2, "after": date_cursor}}, compiled=False
        )
        error = wrong.json()["errors"][0]
        assert error["extensions"]["code"] == "BAD_USER_INPUT", error
        assert "another ordering" in error["message"], error
