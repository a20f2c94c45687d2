"""Sign-in, tokens, roles and capabilities through the HTTP API."""

from __future__ import annotations

import jwt
import pytest

from tests.api.queries import CREATE_CUSTOMER
from tests.conftest import LOGIN, PASSWORD, SECRET, Api

ME = "{ me { email role capabilities { syncByCustomer viewCredentials } } }"


class TestLogin:
    async def test_right_password_gives_a_token_that_works(self, tenant):
        """login returns a bearer token; `me` answers with it."""
        api = await tenant.login(tenant.admin_email)
        data = await api(ME)
        assert data["me"]["email"] == tenant.admin_email
        assert data["me"]["role"] == "ADMIN"

    async def test_wrong_password_is_a_typed_error(self, tenant, client):
        """A wrong password gets InvalidCredentials, not a token."""
        data = await Api(client)(LOGIN, {"email": tenant.admin_email, "password": "nope-nope-nope"})
        assert data["login"]["__typename"] == "InvalidCredentials"

    async def test_unknown_email_is_the_same_error(self, client):
        """An unknown email is indistinguishable from a wrong password."""
        data = await Api(client)(LOGIN, {"email": "nobody@example.com", "password": PASSWORD})
        assert data["login"]["__typename"] == "InvalidCredentials"

    async def test_email_is_case_insensitive(self, tenant, client):
        """Sign-in ignores the case of the email."""
        data = await Api(client)(LOGIN, {"email": tenant.admin_email.upper(), "password": PASSWORD})
        assert data["login"]["__typename"] == "LoginSuccess"


class TestUnauthenticated:
    @pytest.mark.parametrize("token", [None, "garbage", "Bearer"])
    async def test_no_data_without_a_valid_token(self, client, tenant, token):
        """Without a valid token every query gets UNAUTHENTICATED and no data."""
        body = (await Api(client, token).post("{ customers(first: 5) { totalCount } }")).json()
        assert body["data"] is None
        assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"

    async def test_expired_token_is_refused(self, client, tenant):
        """A token past its expiry is refused with a clear message."""
        token = jwt.encode(
            {"sub": "00000000-0000-0000-0000-000000000000", "org": str(tenant.org_id), "exp": 1},
            SECRET,
            algorithm="HS256",
        )
        errors = await Api(client, token).errors(ME)
        assert errors[0]["extensions"]["code"] == "UNAUTHENTICATED"
        assert "expired" in errors[0]["message"]

    async def test_forged_signature_is_refused(self, client, tenant):
        """A token signed with another key is refused."""
        token = jwt.encode(
            {"sub": "x", "org": str(tenant.org_id), "exp": 2**31},
            "other-key" * 4,
            algorithm="HS256",
        )
        errors = await Api(client, token).errors(ME)
        assert errors[0]["extensions"]["code"] == "UNAUTHENTICATED"

    async def test_deactivated_user_token_stops_working(self, tenant):
        """Deactivating a user revokes their existing tokens at once."""
        tech = await tenant.add_user("TECHNICIAN")
        me = await tech("{ me { id } }")
        data = await tenant.admin(
            """mutation($id: ID!) { setUserActive(userId: $id, active: false) {
                 __typename ... on User { active } } }""",
            {"id": me["me"]["id"]},
        )
        assert data["setUserActive"] == {"__typename": "User", "active": False}
        errors = await tech.errors("{ me { id } }")
        assert errors[0]["extensions"]["code"] == "UNAUTHENTICATED"


class TestPermissions:
    async def test_admin_sets_capabilities(self, tenant):
        """setUserPermissions changes what `me` reports for that user."""
        tech = await tenant.add_user("TECHNICIAN")
        user_id = (await tech("{ me { id } }"))["me"]["id"]
        data = await tenant.admin(
            """mutation($id: ID!) { setUserPermissions(userId: $id,
                 capabilities: {syncByCustomer: true, viewCredentials: true}) {
                 __typename ... on User { capabilities { syncByCustomer viewCredentials editCredentials } } } }""",
            {"id": user_id},
        )
        caps = data["setUserPermissions"]["capabilities"]
        assert caps == {"syncByCustomer": True, "viewCredentials": True, "editCredentials": False}
        assert (await tech(ME))["me"]["capabilities"]["syncByCustomer"] is True

    async def test_technician_cannot_manage_users(self, tenant):
        """Only admins create users or change permissions."""
        tech = await tenant.add_user("TECHNICIAN")
        user_id = (await tech("{ me { id } }"))["me"]["id"]
        data = await tech(
            """mutation($id: ID!) { setUserPermissions(userId: $id, capabilities: {syncByCustomer: true}) {
                 __typename } }""",
            {"id": user_id},
        )
        assert data["setUserPermissions"]["__typename"] == "Forbidden"
        errors = await tech.errors("{ users { email } }")
        assert [e["extensions"]["code"] for e in errors] == ["FORBIDDEN"], errors

    async def test_technician_edits_customers(self, tenant):
        """Technicians create and edit customers."""
        tech = await tenant.add_user("TECHNICIAN")
        data = await tech(CREATE_CUSTOMER, {"input": {"businessName": "Tech Made"}})
        assert data["createCustomer"]["__typename"] == "Customer"

    async def test_duplicate_user_email_is_refused(self, tenant):
        """A second user with the same email (any case) gets Duplicate."""
        doc = """mutation($input: CreateUserInput!) { createUser(input: $input) { __typename } }"""
        variables = {
            "input": {"email": tenant.admin_email.upper(), "name": "X", "password": PASSWORD}
        }
        assert (await tenant.admin(doc, variables))["createUser"]["__typename"] == "Duplicate"

    async def test_short_password_is_a_validation_error(self, tenant):
        """Passwords under 10 characters are refused with a field error."""
        doc = """mutation($input: CreateUserInput!) { createUser(input: $input) {
                   __typename ... on ValidationError { fieldErrors { field } } } }"""
        data = await tenant.admin(
            doc, {"input": {"email": "a@b.example", "name": "X", "password": "short"}}
        )
        assert data["createUser"]["fieldErrors"] == [{"field": "password"}]
