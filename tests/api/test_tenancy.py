"""Tenant A cannot read or write tenant B through any query or mutation."""

from __future__ import annotations

import pytest

from tests.api.queries import CREATE_CONTACT, CREATE_CUSTOMER, make_tree

READS = {
    "customer": "query($id: ID!) { customer(id: $id) { id } }",
    "node": "query($id: ID!) { node(id: $id) { id } }",
}


class TestCrossTenant:
    async def test_lists_show_only_own_rows(self, tenant, other_tenant):
        """Every list query of tenant A is empty of tenant B's records."""
        await make_tree(other_tenant.admin, name="Secret Co")
        data = await tenant.admin(
            """{ customers(first: 50, filter: {archived: null}) { totalCount }
                 contacts(first: 50) { totalCount } facilities(first: 50) { totalCount }
                 assets(first: 50) { totalCount } users { email } }"""
        )
        assert data["customers"]["totalCount"] == 0
        assert data["contacts"]["totalCount"] == 0
        assert data["facilities"]["totalCount"] == 0
        assert data["assets"]["totalCount"] == 0
        assert [u["email"] for u in data["users"]] == [tenant.admin_email]

    @pytest.mark.parametrize("kind", ["customer", "contact", "facility", "asset"])
    async def test_node_of_another_tenant_is_null(self, tenant, other_tenant, kind):
        """node(id:) with another tenant's id returns null."""
        ids = await make_tree(other_tenant.admin)
        data = await tenant.admin(READS["node"], {"id": ids[kind]})
        assert data["node"] is None

    @pytest.mark.parametrize(
        ("mutation", "input_"),
        [
            ("updateCustomer", '(id: $id, input: {businessName: "Pwned"})'),
            ("archiveCustomer", "(id: $id)"),
            ("deleteCustomer", "(id: $id)"),
        ],
    )
    async def test_writes_to_another_tenant_are_not_found(
        self, tenant, other_tenant, mutation, input_
    ):
        """Mutations on another tenant's ids get NotFound and change nothing."""
        ids = await make_tree(other_tenant.admin, name="Theirs")
        doc = f"mutation($id: ID!) {{ {mutation}{input_} {{ __typename }} }}"
        assert (await tenant.admin(doc, {"id": ids["customer"]}))[mutation][
            "__typename"
        ] == "NotFound"
        theirs = await other_tenant.admin(
            READS["customer"].replace("{ id }", "{ businessName archived }"),
            {"id": ids["customer"]},
        )
        assert theirs["customer"] == {"businessName": "Theirs", "archived": False}

    async def test_cannot_attach_to_another_tenants_customer(self, tenant, other_tenant):
        """Creating a contact under tenant B's customer is NotFound."""
        ids = await make_tree(other_tenant.admin)
        data = await tenant.admin(
            CREATE_CONTACT, {"input": {"customerId": ids["customer"], "firstName": "X"}}
        )
        assert data["createContact"]["__typename"] == "NotFound"

    async def test_child_updates_across_tenants_are_not_found(self, tenant, other_tenant):
        """Contacts, facilities and assets of tenant B cannot be changed by A."""
        ids = await make_tree(other_tenant.admin)
        for kind, mutation, field in (
            ("contact", "updateContact", "firstName"),
            ("facility", "updateFacility", "name"),
            ("asset", "updateAsset", "kind"),
        ):
            doc = f'mutation($id: ID!) {{ {mutation}(id: $id, input: {{{field}: "X"}}) {{ __typename }} }}'
            assert (await tenant.admin(doc, {"id": ids[kind]}))[mutation][
                "__typename"
            ] == "NotFound"

    async def test_same_email_in_two_tenants_does_not_collide(self, tenant, other_tenant):
        """Customer email uniqueness never leaks across tenants."""
        for t in (tenant, other_tenant):
            data = await t.admin(
                CREATE_CUSTOMER, {"input": {"businessName": "X", "email": "same@x.example"}}
            )
            assert data["createCustomer"]["__typename"] == "Customer"
