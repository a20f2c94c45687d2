"""HTTP behaviour: health, readiness, GraphQL-over-HTTP status codes, masking."""

from __future__ import annotations

import pytest

from tests.conftest import Api

# What a spec-aware client sends: the new media type first, plain JSON as a fallback.
ACCEPT_GRAPHQL_RESPONSE = {"Accept": "application/graphql-response+json, application/json;q=0.9"}


class TestHealth:
    async def test_healthz(self, client):
        """/healthz answers while the process is up."""
        response = await client.get("/healthz")
        assert response.json() == {"status": "ok"}

    async def test_readyz_reports_database_and_migration(self, client):
        """/readyz checks the database and that migrations are current."""
        response = await client.get("/readyz")
        assert response.status_code == 200
        assert response.json()["status"] == "ready"

    async def test_request_id_is_echoed(self, client):
        """A request id comes back in X-Request-Id (given or generated)."""
        response = await client.get("/healthz", headers={"X-Request-Id": "abc123"})
        assert response.headers["x-request-id"] == "abc123"


class TestBadInput:
    async def test_malformed_query_gets_a_message_and_no_data(self, client):
        """Syntax errors get a message and no data (200 with application/json, as the
        GraphQL-over-HTTP spec allows for that media type), never a stack trace."""
        response = await client.post("/graphql", json={"query": "{ customers(first: "})
        body = response.json()
        assert response.status_code in (200, 400)
        assert body.get("data") is None
        assert "Syntax Error" in body["errors"][0]["message"]
        assert "Traceback" not in response.text

    async def test_wrong_argument_type_is_a_validation_error(self, tenant):
        """A string where an Int is expected is a validation error."""
        response = await tenant.admin.post('{ customers(first: "ten") { totalCount } }')
        assert response.status_code == 200
        assert "Int cannot represent" in response.json()["errors"][0]["message"]

    async def test_unknown_field_is_a_validation_error(self, tenant):
        """Unknown fields are reported without suggestions of hidden fields' data."""
        body = (await tenant.admin.post("{ customers(first: 1) { passwordHash } }")).json()
        assert "Cannot query field" in body["errors"][0]["message"]

    async def test_other_media_types_are_a_415(self, client):
        """A POST body that is not application/json is refused as Unsupported Media Type."""
        response = await client.post(
            "/graphql", content=b"{ __typename }", headers={"content-type": "application/graphql"}
        )
        assert response.status_code == 415
        assert response.json()["errors"][0]["message"]

    async def test_not_json_is_a_400(self, client):
        """A body that is not JSON is a 400 with a message."""
        response = await client.post(
            "/graphql", content=b"{nope", headers={"content-type": "application/json"}
        )
        assert response.status_code == 400

    @pytest.mark.parametrize("variables", [{"first": None}, {"first": -1}])
    async def test_bad_variables(self, tenant, variables):
        """Null or out-of-range page sizes are refused with a clear error."""
        body = (
            await tenant.admin.post(
                "query($first: Int!) { customers(first: $first) { totalCount } }", variables
            )
        ).json()
        assert body["errors"][0]["message"]
        assert "Traceback" not in str(body)

    async def test_unexpected_errors_are_masked(self, client, monkeypatch, tenant):
        """An unexpected exception reaches the client as INTERNAL_SERVER_ERROR only."""
        from resolvers import users

        async def boom(*args, **kwargs):
            raise RuntimeError("secret internals")

        monkeypatch.setattr(users.queries, "list_users", boom)
        # `users` loads through the patched function after auth
        body = (await tenant.admin.post("{ users { email } }")).json()
        error = body["errors"][0]
        assert error["message"] == "Internal server error"
        assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
        assert "secret internals" not in str(body)

    async def test_get_is_for_queries_only(self, client, tenant):
        """Mutations over GET are refused."""
        response = await client.get(
            "/graphql",
            params={"query": 'mutation { login(email: "a", password: "b") { __typename } }'},
            headers={"Authorization": f"Bearer {tenant.admin.token}"},
        )
        # The GraphQL-over-HTTP spec makes this a 405 naming the method that works.
        assert response.status_code == 405
        assert response.headers["allow"] == "POST"


class TestGraphQLResponseMediaType:
    """`Accept: application/graphql-response+json` gets the spec's status codes."""

    async def test_request_errors_are_400_without_data(self, client):
        """Parse and validation failures never executed: 400, no `data` entry."""
        for query in ("{ customers(first: ", "{ noSuchField }"):
            response = await client.post(
                "/graphql", json={"query": query}, headers=ACCEPT_GRAPHQL_RESPONSE
            )
            assert response.status_code == 400, response.text
            assert response.headers["content-type"].startswith("application/graphql-response+json")
            assert "data" not in response.json()

    async def test_execution_errors_stay_200_and_masked(self, client, monkeypatch, tenant):
        """Once execution ran it is a 200, with the per-query error codes unchanged."""
        from resolvers import users

        async def boom(*args, **kwargs):
            raise RuntimeError("secret internals")

        monkeypatch.setattr(users.queries, "list_users", boom)
        response = await client.post(
            "/graphql",
            json={"query": "{ users { email } }"},
            headers={**ACCEPT_GRAPHQL_RESPONSE, "Authorization": f"Bearer {tenant.admin.token}"},
        )
        assert response.status_code == 200
        body = response.json()
        assert body["data"] is None
        assert body["errors"][0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
        assert "secret internals" not in response.text

    async def test_plain_json_keeps_200(self, client):
        """Clients that only accept application/json see the legacy 200 behaviour."""
        response = await client.post(
            "/graphql", json={"query": "{ noSuchField }"}, headers={"Accept": "application/json"}
        )
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"


class TestAnonymousLogin:
    async def test_login_needs_no_token(self, client, tenant):
        """login works without a token; other fields do not."""
        anon = Api(client)
        data = await anon(
            """mutation { login(email: "x@y.example", password: "abcdefghijk") { __typename } }"""
        )
        assert data["login"]["__typename"] == "InvalidCredentials"
