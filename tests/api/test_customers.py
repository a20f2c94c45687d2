"""Customer mutations and queries through the HTTP API."""

from __future__ import annotations

import pytest

from tests.api.queries import (
    ARCHIVE_CUSTOMER,
    CREATE_CONTACT,
    CREATE_CUSTOMER,
    CREATE_FIELD,
    CUSTOMERS,
    DELETE_CUSTOMER,
    REENABLE_CUSTOMER,
    UPDATE_CUSTOMER,
    make_customer,
    make_tree,
)

FULL = {
    "businessName": "Harbor Logistics",
    "firstName": "Ines",
    "lastName": "Ito",
    "email": "ops@harbor.example",
    "phones": [{"type": "WORK", "number": "+1 555 010 2000"}],
    "addresses": [
        {"type": "BILL_TO", "line1": "1 Pier Rd", "city": "Lakeside", "postalCode": "90001"},
        {"type": "PHYSICAL", "line1": "9 Dock St", "city": "Lakeside"},
    ],
    "notificationEmails": ["alerts@harbor.example"],
    "invoiceCcEmails": ["ap@harbor.example"],
    "settings": {"taxFree": False, "taxRate": 8.5, "smsEnabled": True, "noEmail": False},
}


class TestCreate:
    async def test_every_field_round_trips(self, tenant):
        """A customer created with every field reads back the same."""
        c = await make_customer(tenant.admin, **FULL)
        assert c["businessName"] == "Harbor Logistics"
        assert c["displayName"] == "Harbor Logistics"
        assert c["phones"] == FULL["phones"]
        assert [a["type"] for a in c["addresses"]] == ["BILL_TO", "PHYSICAL"]
        assert c["settings"] == {
            "taxFree": False,
            "taxRate": 8.5,
            "smsEnabled": True,
            "noEmail": False,
        }
        assert c["invoiceCcEmails"] == ["ap@harbor.example"]
        assert c["version"] == {"server": 1}

    async def test_person_customer_shows_first_and_last_name(self, tenant):
        """Without a business name the display name is 'First Last'."""
        c = await make_customer(tenant.admin, businessName=None, firstName="Ann", lastName="Lee")
        assert c["displayName"] == "Ann Lee"

    async def test_a_name_is_required(self, tenant):
        """No business name and no person name is a validation error; nothing is written."""
        data = await tenant.admin(CREATE_CUSTOMER, {"input": {"email": "x@y.example"}})
        result = data["createCustomer"]
        assert result["__typename"] == "ValidationError"
        assert result["fieldErrors"][0]["field"] == "businessName"
        assert (await tenant.admin(CUSTOMERS, {"first": 5}))["customers"]["totalCount"] == 0

    @pytest.mark.parametrize(
        ("fields", "path"),
        [
            ({"email": "not-an-email"}, "email"),
            ({"notificationEmails": ["ok@x.example", "bad@"]}, "notificationEmails[1]"),
            ({"phones": [{"type": "WORK", "number": "call me"}]}, "phones[0].number"),
            ({"settings": {"taxRate": 150}}, "settings.taxRate"),
            ({"businessName": "x" * 10_001}, "businessName"),
        ],
    )
    async def test_bad_fields_get_field_errors(self, tenant, fields, path):
        """Each invalid field is reported by its path and nothing is written."""
        data = await tenant.admin(CREATE_CUSTOMER, {"input": {"businessName": "Ok", **fields}})
        result = data["createCustomer"]
        assert result["__typename"] == "ValidationError", result
        assert path in [e["field"] for e in result["fieldErrors"]]
        assert (await tenant.admin(CUSTOMERS, {"first": 5}))["customers"]["totalCount"] == 0


class TestEmailUniqueness:
    async def test_same_email_any_case_is_taken(self, tenant):
        """A second live customer cannot take a primary email, whatever its case."""
        await make_customer(tenant.admin, email="Desk@Acme.example")
        data = await tenant.admin(
            CREATE_CUSTOMER, {"input": {"businessName": "B", "email": "desk@acme.EXAMPLE"}}
        )
        assert data["createCustomer"]["__typename"] == "EmailTaken"
        assert data["createCustomer"]["code"] == "EMAIL_TAKEN"

    async def test_update_to_a_taken_email_is_refused(self, tenant):
        """Changing the email to another customer's is EmailTaken and changes nothing."""
        await make_customer(tenant.admin, email="a@acme.example")
        b = await make_customer(tenant.admin, businessName="B", email="b@acme.example")
        data = await tenant.admin(
            UPDATE_CUSTOMER, {"id": b["id"], "input": {"email": "A@acme.example"}}
        )
        assert data["updateCustomer"]["__typename"] == "EmailTaken"
        node = await tenant.admin(
            "query($id: ID!) { customer(id: $id) { email } }", {"id": b["id"]}
        )
        assert node["customer"]["email"] == "b@acme.example"

    async def test_email_is_free_again_after_delete(self, tenant):
        """A deleted customer's email can be used again (only live customers count)."""
        a = await make_customer(tenant.admin, email="reuse@acme.example")
        assert (await tenant.admin(DELETE_CUSTOMER, {"id": a["id"]}))["deleteCustomer"][
            "__typename"
        ] == "DeletedRecord"
        await make_customer(tenant.admin, businessName="New", email="REUSE@acme.example")

    async def test_other_tenants_may_use_the_same_email(self, tenant, other_tenant):
        """Uniqueness is per tenant."""
        await make_customer(tenant.admin, email="shared@example.com")
        await make_customer(other_tenant.admin, email="shared@example.com")


class TestUpdate:
    async def test_partial_update_keeps_other_fields_and_bumps_version(self, tenant):
        """Omitted fields keep their values; the version vector advances."""
        c = await make_customer(tenant.admin, **FULL)
        data = await tenant.admin(
            UPDATE_CUSTOMER, {"id": c["id"], "input": {"lastName": "Ito-Smith"}}
        )
        updated = data["updateCustomer"]
        assert updated["lastName"] == "Ito-Smith"
        assert updated["email"] == FULL["email"]
        assert updated["phones"] == FULL["phones"]
        assert updated["version"] == {"server": 2}

    async def test_settings_merge_by_key(self, tenant):
        """Setting one setting leaves the others as they were."""
        c = await make_customer(tenant.admin, **FULL)
        data = await tenant.admin(
            UPDATE_CUSTOMER, {"id": c["id"], "input": {"settings": {"taxFree": True}}}
        )
        assert data["updateCustomer"]["settings"] == {
            "taxFree": True,
            "taxRate": 8.5,
            "smsEnabled": True,
            "noEmail": False,
        }

    async def test_null_clears_a_field(self, tenant):
        """An explicit null clears the field."""
        c = await make_customer(tenant.admin, **FULL)
        data = await tenant.admin(
            UPDATE_CUSTOMER, {"id": c["id"], "input": {"firstName": None, "phones": None}}
        )
        assert data["updateCustomer"]["firstName"] is None
        assert data["updateCustomer"]["phones"] == []

    async def test_unchanged_update_keeps_the_version(self, tenant):
        """Writing the same values is not a change: no new version, no change-log row."""
        c = await make_customer(tenant.admin, businessName="Same")
        data = await tenant.admin(
            UPDATE_CUSTOMER, {"id": c["id"], "input": {"businessName": "Same"}}
        )
        assert data["updateCustomer"]["version"] == {"server": 1}

    async def test_unknown_id_is_not_found(self, tenant):
        """Updating an id that does not exist gives NotFound."""
        ghost = "Q3VzdG9tZXI6MDAwMDAwMDAtMDAwMC0wMDAwLTAwMDAtMDAwMDAwMDAwMDAw"
        data = await tenant.admin(UPDATE_CUSTOMER, {"id": ghost, "input": {"businessName": "X"}})
        assert data["updateCustomer"]["__typename"] == "NotFound"

    async def test_malformed_id_is_not_found(self, tenant):
        """A malformed id gives NotFound with a clear message, not a server error."""
        data = await tenant.admin(UPDATE_CUSTOMER, {"id": "%%%", "input": {"businessName": "X"}})
        assert data["updateCustomer"]["__typename"] == "NotFound"
        assert "not a valid id" in data["updateCustomer"]["message"]


class TestArchiveAndDelete:
    async def test_archive_hides_and_reenable_brings_back(self, tenant):
        """Archived customers leave the default list and come back when re-enabled."""
        c = await make_customer(tenant.admin)
        assert (await tenant.admin(ARCHIVE_CUSTOMER, {"id": c["id"]}))["archiveCustomer"][
            "archived"
        ] is True
        active = await tenant.admin(CUSTOMERS, {"first": 10})
        archived = await tenant.admin(CUSTOMERS, {"first": 10, "filter": {"archived": True}})
        assert active["customers"]["totalCount"] == 0
        assert archived["customers"]["totalCount"] == 1
        assert (await tenant.admin(REENABLE_CUSTOMER, {"id": c["id"]}))["reenableCustomer"][
            "archived"
        ] is False
        assert (await tenant.admin(CUSTOMERS, {"first": 10}))["customers"]["totalCount"] == 1

    async def test_delete_with_attached_records_says_archive(self, tenant):
        """Deleting a customer that has a contact is refused with HasAttachedRecords."""
        ids = await make_tree(tenant.admin)
        data = await tenant.admin(DELETE_CUSTOMER, {"id": ids["customer"]})
        result = data["deleteCustomer"]
        assert result["__typename"] == "HasAttachedRecords"
        assert sorted(result["attached"]) == ["assets", "contacts", "facilities"]
        assert "archive" in result["message"]

    async def test_delete_after_children_are_gone(self, tenant):
        """Once contacts, facilities and assets are deleted, the customer can be deleted."""
        ids = await make_tree(tenant.admin)
        for kind, mutation in (
            ("asset", "deleteAsset"),
            ("facility", "deleteFacility"),
            ("contact", "deleteContact"),
        ):
            doc = f"mutation($id: ID!) {{ {mutation}(id: $id) {{ __typename }} }}"
            assert (await tenant.admin(doc, {"id": ids[kind]}))[mutation][
                "__typename"
            ] == "DeletedRecord"
        data = await tenant.admin(DELETE_CUSTOMER, {"id": ids["customer"]})
        assert data["deleteCustomer"]["__typename"] == "DeletedRecord"
        node = await tenant.admin(
            "query($id: ID!) { node(id: $id) { id } }", {"id": ids["customer"]}
        )
        assert node["node"] is None

    async def test_facility_with_assets_cannot_be_deleted(self, tenant):
        """A facility's assets must go first."""
        ids = await make_tree(tenant.admin)
        data = await tenant.admin(
            "mutation($id: ID!) { deleteFacility(id: $id) { __typename } }", {"id": ids["facility"]}
        )
        assert data["deleteFacility"]["__typename"] == "HasAttachedRecords"

    async def test_deleting_twice_is_not_found(self, tenant):
        """A deleted customer is gone for later writes."""
        c = await make_customer(tenant.admin)
        await tenant.admin(DELETE_CUSTOMER, {"id": c["id"]})
        data = await tenant.admin(DELETE_CUSTOMER, {"id": c["id"]})
        assert data["deleteCustomer"]["__typename"] == "NotFound"


class TestList:
    async def test_pages_by_name_with_cursors(self, tenant):
        """Keyset pages in name order cover every customer exactly once."""
        names = [f"Customer {i:02d}" for i in range(7)]
        for name in reversed(names):
            await make_customer(tenant.admin, businessName=name)
        seen, after = [], None
        while True:
            page = (await tenant.admin(CUSTOMERS, {"first": 3, "after": after}))["customers"]
            assert page["totalCount"] == 7
            seen += [e["node"]["displayName"] for e in page["edges"]]
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["pageInfo"]["endCursor"]
        assert seen == names

    async def test_descending_order(self, tenant):
        """orderBy NAME DESC reverses the list."""
        for name in ("A co", "B co", "C co"):
            await make_customer(tenant.admin, businessName=name)
        page = await tenant.admin(
            CUSTOMERS, {"first": 10, "order": {"field": "NAME", "direction": "DESC"}}
        )
        assert [e["node"]["displayName"] for e in page["customers"]["edges"]] == [
            "C co",
            "B co",
            "A co",
        ]

    async def test_search_by_name_and_email(self, tenant):
        """search matches a name prefix, a name substring or an email, any case."""
        await make_customer(tenant.admin, businessName="Summit Hotels", email="desk@summit.example")
        await make_customer(tenant.admin, businessName="Oak Foods", email="hello@oak.example")
        for term, expected in (
            ("summ", ["Summit Hotels"]),
            ("FOODS", ["Oak Foods"]),
            ("hello@", ["Oak Foods"]),
            ("%", []),
            ("_", []),
        ):
            page = await tenant.admin(CUSTOMERS, {"first": 10, "filter": {"search": term}})
            assert [e["node"]["displayName"] for e in page["customers"]["edges"]] == expected, term

    async def test_first_over_the_cap_is_a_clear_error(self, tenant):
        """`first` above the configured cap is refused with BAD_USER_INPUT."""
        errors = await tenant.admin.errors(CUSTOMERS, {"first": 10_000})
        assert errors[0]["extensions"]["code"] == "BAD_USER_INPUT"

    async def test_forged_cursor_is_a_clear_error(self, tenant):
        """A cursor this server did not issue is refused, not a 500."""
        errors = await tenant.admin.errors(CUSTOMERS, {"first": 5, "after": "bm9wZQ"})
        assert errors[0]["extensions"]["code"] == "BAD_USER_INPUT"


class TestCustomFields:
    async def define(self, tenant, **overrides):
        payload = {
            "entityType": "CUSTOMER",
            "key": "tier",
            "label": "Tier",
            "fieldType": "DROPDOWN",
            "options": [
                {"value": "gold", "label": "Gold", "badgeIcon": "star"},
                {"value": "basic", "label": "Basic"},
            ],
            **overrides,
        }
        data = await tenant.admin(CREATE_FIELD, {"input": payload})
        assert data["createCustomField"]["__typename"] == "CustomFieldDefinition", data
        return data["createCustomField"]

    async def test_dropdown_with_icon_shows_as_badge(self, tenant):
        """A dropdown value whose option has an icon is a badge on the customer."""
        await self.define(tenant)
        c = await make_customer(tenant.admin, customFields=[{"key": "tier", "value": "gold"}])
        assert c["badges"] == [{"fieldKey": "tier", "label": "Gold", "icon": "star"}]
        assert c["customFields"] == [{"key": "tier", "value": "gold"}]

    @pytest.mark.parametrize(
        ("field_type", "value"),
        [
            ("NUMBER", "ten"),
            ("CHECKBOX", "yes"),
            ("DATE", "31/12/2024"),
            ("TEXT", 5),
            ("DROPDOWN", "platinum"),
        ],
    )
    async def test_wrong_value_type_is_refused(self, tenant, field_type, value):
        """A value of the wrong type for its definition is a field error."""
        options = [{"value": "gold", "label": "Gold"}] if field_type == "DROPDOWN" else []
        await self.define(tenant, key="f", fieldType=field_type, options=options)
        data = await tenant.admin(
            CREATE_CUSTOMER,
            {"input": {"businessName": "X", "customFields": [{"key": "f", "value": value}]}},
        )
        result = data["createCustomer"]
        assert result["__typename"] == "ValidationError"
        assert result["fieldErrors"][0]["field"] == "customFields.f"

    async def test_unknown_custom_field_is_refused(self, tenant):
        """A key with no definition is a field error."""
        data = await tenant.admin(
            CREATE_CUSTOMER,
            {"input": {"businessName": "X", "customFields": [{"key": "nope", "value": 1}]}},
        )
        assert data["createCustomer"]["fieldErrors"][0]["field"] == "customFields.nope"

    async def test_field_made_required_later_blocks_writes_without_it(self, tenant):
        """After a field becomes required, a write to a record lacking it fails until it is set."""
        definition = await self.define(tenant, key="contract", fieldType="TEXT", options=[])
        c = await make_customer(tenant.admin)
        data = await tenant.admin(
            """mutation($id: ID!) { updateCustomField(id: $id, input: {required: true}) {
                 ... on CustomFieldDefinition { required } } }""",
            {"id": definition["id"]},
        )
        assert data["updateCustomField"]["required"] is True
        refused = await tenant.admin(UPDATE_CUSTOMER, {"id": c["id"], "input": {"lastName": "X"}})
        assert refused["updateCustomer"]["__typename"] == "ValidationError"
        assert refused["updateCustomer"]["fieldErrors"][0]["field"] == "customFields.contract"
        fixed = await tenant.admin(
            UPDATE_CUSTOMER,
            {
                "id": c["id"],
                "input": {"lastName": "X", "customFields": [{"key": "contract", "value": "C-1"}]},
            },
        )
        assert fixed["updateCustomer"]["__typename"] == "Customer"

    async def test_duplicate_key_and_bad_definitions(self, tenant):
        """Keys are unique per type; dropdowns need options; keys are snake_case."""
        await self.define(tenant)
        dup = await tenant.admin(
            CREATE_FIELD,
            {"input": {"entityType": "CUSTOMER", "key": "tier", "label": "T", "fieldType": "TEXT"}},
        )
        assert dup["createCustomField"]["__typename"] == "Duplicate"
        bad = await tenant.admin(
            CREATE_FIELD,
            {
                "input": {
                    "entityType": "ASSET",
                    "key": "Bad Key",
                    "label": "T",
                    "fieldType": "DROPDOWN",
                }
            },
        )
        fields = sorted(e["field"] for e in bad["createCustomField"]["fieldErrors"])
        assert fields == ["key", "options"]

    async def test_only_admins_define_fields(self, tenant):
        """Technicians get Forbidden."""
        tech = await tenant.add_user("TECHNICIAN")
        data = await tech(
            CREATE_FIELD,
            {"input": {"entityType": "ASSET", "key": "k", "label": "K", "fieldType": "TEXT"}},
        )
        assert data["createCustomField"]["__typename"] == "Forbidden"


class TestChildren:
    async def test_contact_requires_a_name_and_a_real_customer(self, tenant):
        """Contacts need a name and an existing customer."""
        c = await make_customer(tenant.admin)
        nameless = await tenant.admin(
            CREATE_CONTACT, {"input": {"customerId": c["id"], "title": "Boss"}}
        )
        assert nameless["createContact"]["__typename"] == "ValidationError"
        ghost = "Q3VzdG9tZXI6MDAwMDAwMDAtMDAwMC0wMDAwLTAwMDAtMDAwMDAwMDAwMDAw"
        orphan = await tenant.admin(
            CREATE_CONTACT, {"input": {"customerId": ghost, "firstName": "A"}}
        )
        assert orphan["createContact"]["__typename"] == "NotFound"

    async def test_tree_reads_back_through_nested_fields(self, tenant):
        """customer { contacts facilities { assets } } returns what was created."""
        ids = await make_tree(tenant.admin)
        data = await tenant.admin(
            """query($id: ID!) { customer(id: $id) { contacts { id } facilities { id assets { id
                 facility { id } customer { id } } } } }""",
            {"id": ids["customer"]},
        )
        customer = data["customer"]
        assert [c["id"] for c in customer["contacts"]] == [ids["contact"]]
        assert customer["facilities"][0]["assets"][0]["id"] == ids["asset"]
        assert customer["facilities"][0]["assets"][0]["customer"]["id"] == ids["customer"]

    async def test_child_lists_filter_by_parent_and_search(self, tenant):
        """assets(facilityId:, search:) filters and pages."""
        ids = await make_tree(tenant.admin)
        await make_tree(tenant.admin, name="Other")
        data = await tenant.admin(
            """query($f: ID!) { assets(first: 10, facilityId: $f, search: "fire") { totalCount
                 edges { node { id } } } }""",
            {"f": ids["facility"]},
        )
        assert data["assets"]["totalCount"] == 1
        assert data["assets"]["edges"][0]["node"]["id"] == ids["asset"]

    async def test_install_date_must_be_a_date(self, tenant):
        """A malformed date is a GraphQL validation error (400), nothing written."""
        ids = await make_tree(tenant.admin)
        response = await tenant.admin.post(
            """mutation($id: ID!) { updateAsset(id: $id, input: {installDate: "yesterday"}) { __typename } }""",
            {"id": ids["asset"]},
        )
        assert response.status_code == 200
        assert response.json()["errors"]


class TestOnlineEditsWithBaseVersion:
    DOC = """mutation($id: ID!, $input: UpdateCustomerInput!, $base: VersionVector) {
      updateCustomer(id: $id, input: $input, baseVersion: $base) { __typename
        ... on Customer { businessName email version }
        ... on EditConflict { code fields { field serverValue clientValue } serverVersion } } }"""

    async def test_stale_edit_of_another_field_merges(self, tenant):
        """An edit from an old version that touches other fields than the server's keeps both."""
        c = await make_customer(tenant.admin, businessName="Old")
        base = c["version"]
        await tenant.admin(UPDATE_CUSTOMER, {"id": c["id"], "input": {"email": "new@x.example"}})
        data = await tenant.admin(
            self.DOC, {"id": c["id"], "input": {"businessName": "Renamed"}, "base": base}
        )
        assert data["updateCustomer"]["__typename"] == "Customer"
        assert data["updateCustomer"]["email"] == "new@x.example"
        assert data["updateCustomer"]["businessName"] == "Renamed"

    async def test_stale_edit_of_the_same_field_is_an_edit_conflict(self, tenant):
        """Both sides changed the same field: EditConflict with both values; nothing written."""
        c = await make_customer(tenant.admin, businessName="Old")
        base = c["version"]
        await tenant.admin(UPDATE_CUSTOMER, {"id": c["id"], "input": {"businessName": "Theirs"}})
        data = await tenant.admin(
            self.DOC, {"id": c["id"], "input": {"businessName": "Mine"}, "base": base}
        )
        result = data["updateCustomer"]
        assert result["__typename"] == "EditConflict"
        assert result["fields"] == [
            {"field": "businessName", "serverValue": "Theirs", "clientValue": "Mine"}
        ]
        assert result["serverVersion"] == {"server": 2}

    async def test_current_base_applies(self, tenant):
        """An edit from the current version applies."""
        c = await make_customer(tenant.admin, businessName="Old")
        data = await tenant.admin(
            self.DOC, {"id": c["id"], "input": {"businessName": "New"}, "base": c["version"]}
        )
        assert data["updateCustomer"]["version"] == {"server": 2}

    async def test_malformed_base_version_is_a_graphql_error(self, tenant):
        """A base version that is not {replica: counter} is refused by the scalar."""
        c = await make_customer(tenant.admin)
        errors = await tenant.admin.errors(
            self.DOC, {"id": c["id"], "input": {"businessName": "X"}, "base": {"server": -1}}
        )
        assert "VersionVector" in errors[0]["message"] or "negative" in errors[0]["message"]
