"""Operation limits (issue #7 part 1): each refused one step past its setting, with its code."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest

import resolvers.users
from db.engine import Database
from server.app import create_app
from server.settings import Settings
from tests.conftest import Api, Tenant

Client = Callable[..., Any]


@asynccontextmanager
async def app_with(settings: Settings, db: Database, **overrides: Any) -> AsyncIterator[Api]:
    """An in-process app with some settings changed, as ``tenant``'s admin would call it."""
    app = create_app(settings.model_copy(update=overrides), database=db)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://fieldsync.test") as c:
        yield Api(c)


def codes(body: dict[str, Any]) -> list[str]:
    """The `extensions.code` of every error of a response."""
    return [(e.get("extensions") or {}).get("code") for e in body.get("errors") or []]


async def as_admin(api: Api, tenant: Tenant, query: str, **variables: Any) -> dict[str, Any]:
    """POST ``query`` with the tenant admin's token through ``api``'s client."""
    response = await Api(api.client, tenant.admin.token).post(query, variables)
    return response.json()  # type: ignore[no-any-return]


def _chain(fields: int) -> str:
    """A selection ``fields`` fields deep: customers > edges > node > contacts > customer..."""
    levels = ["customers(first: 1)", "edges", "node"]
    alternating = ["contacts", "customer"]
    names = (levels + alternating * fields)[: fields - 1]
    return " { ".join(names) + " { id" + " }" * (fields - 1)


class TestDefaults:
    def test_defaults_are_the_documented_ones(self) -> None:
        """The defaults documented in docs/operations.md."""
        s = Settings(secret_key="x")
        assert (s.max_query_depth, s.max_aliases, s.max_query_tokens) == (12, 30, 5000)
        assert (s.max_query_cost, s.cost_default_list_size, s.max_page_size) == (1_000_000, 10, 100)
        assert s.introspection is True
        assert s.field_suggestions is False


class TestDepth:
    async def test_at_the_limit_passes_one_past_is_refused(self, settings, db, tenant) -> None:
        """QUERY_TOO_DEEP one level past `max_query_depth` (levels below the root field)."""
        async with app_with(settings, db, max_query_depth=5) as api:
            ok = await as_admin(api, tenant, "{ " + _chain(6) + " }")
            assert "errors" not in ok, ok
            deep = await as_admin(api, tenant, "{ " + _chain(7) + " }")
        assert codes(deep) == ["QUERY_TOO_DEEP"], deep
        assert "data" not in deep or deep["data"] is None


class TestAliases:
    async def test_at_the_limit_passes_one_past_is_refused(self, settings, db, tenant) -> None:
        """TOO_MANY_ALIASES one alias past `max_aliases`."""
        async with app_with(settings, db, max_aliases=3) as api:
            ok = await as_admin(api, tenant, "{ a: __typename b: __typename c: __typename }")
            assert "errors" not in ok, ok
            many = await as_admin(
                api, tenant, "{ a: __typename b: __typename c: __typename d: __typename }"
            )
        assert codes(many) == ["TOO_MANY_ALIASES"], many


class TestTokens:
    async def test_at_the_limit_passes_one_past_is_refused(self, settings, db, tenant) -> None:
        """QUERY_TOO_LARGE one token past `max_query_tokens` (`{ a b }` is 4 tokens)."""
        async with app_with(settings, db, max_query_tokens=4) as api:
            ok = await as_admin(api, tenant, "{ __typename __typename }")
            assert "errors" not in ok, ok
            big = await as_admin(api, tenant, "{ __typename __typename __typename }")
        assert codes(big) == ["QUERY_TOO_LARGE"], big


CUSTOMERS = "{ customers(first: %d) { edges { node { id } } } }"  # cost 1 + 3 * first
NESTED = "{ customers(first: %d) { edges { node { contacts { id } } } } }"


class TestCost:
    async def test_first_multiplies_child_cost(self, settings, db, tenant) -> None:
        """QUERY_TOO_COSTLY when `first` makes the estimate one item past the limit."""
        async with app_with(settings, db, max_query_cost=31) as api:
            ok = await as_admin(api, tenant, CUSTOMERS % 10)
            assert "errors" not in ok, ok
            costly = await as_admin(api, tenant, CUSTOMERS % 11)
        assert codes(costly) == ["QUERY_TOO_COSTLY"], costly
        assert costly["errors"][0]["extensions"]["cost"] == 34
        assert "too costly" in costly["errors"][0]["message"]

    async def test_a_variable_counts_as_the_page_cap(self, settings, db, tenant) -> None:
        """`first: $n` is estimated at `max_page_size` items (its run-time bound)."""
        query = "query($n: Int!) { customers(first: $n) { edges { node { id } } } }"
        async with app_with(settings, db, max_query_cost=1 + 3 * 100, max_page_size=100) as api:
            assert "errors" not in await as_admin(api, tenant, query, n=1)
        async with app_with(settings, db, max_query_cost=3 * 100, max_page_size=100) as api:
            assert codes(await as_admin(api, tenant, query, n=1)) == ["QUERY_TOO_COSTLY"]

    async def test_the_default_admits_the_client_tree(self, tenant) -> None:
        """The heaviest client query (tests/api/test_dataloaders.py TREE) fits the default."""
        from tests.api.test_dataloaders import TREE

        await tenant.admin(TREE, {"first": 100})
        deeper = TREE.replace(
            "assets { id", "assets { id facility { assets { id customFields { key } } }"
        )
        assert codes((await tenant.admin.post(deeper, {"first": 100})).json()) == [
            "QUERY_TOO_COSTLY"
        ]

    async def test_nested_lists_multiply(self, settings, db, tenant) -> None:
        """A list without `first` counts `cost_default_list_size` items per parent item."""
        # customers: 1 + 2 * (edges: 1 + node: 1 + contacts: 4 * (1 + id: 1)) = 1 + 2 * 10
        async with app_with(settings, db, max_query_cost=21, cost_default_list_size=4) as api:
            assert "errors" not in await as_admin(api, tenant, NESTED % 2)
            assert codes(await as_admin(api, tenant, NESTED % 3)) == ["QUERY_TOO_COSTLY"]


class TestPagination:
    async def test_first_past_the_cap_is_refused(self, tenant, settings) -> None:
        """`first` one past `max_page_size` is BAD_USER_INPUT; at the cap it passes."""
        cap = settings.max_page_size
        await tenant.admin(CUSTOMERS % cap)
        errors = await tenant.admin.errors(CUSTOMERS % (cap + 1))
        assert errors[0]["extensions"]["code"] == "BAD_USER_INPUT"

    async def test_a_huge_first_gets_the_range_not_a_cost(self, tenant, settings) -> None:
        """`first: 1000000` (nested lists too) is answered like `first: 500`: the range."""
        cap = settings.max_page_size
        for first in (500, 1_000_000, 2**31 - 1):
            for query in (CUSTOMERS, NESTED):
                errors = await tenant.admin.errors(query % first)
                assert [e["extensions"]["code"] for e in errors] == ["BAD_USER_INPUT"], errors
                assert errors[0]["message"] == f"`first` must be between 1 and {cap}", errors


class TestTransport:
    async def test_batches_are_refused(self, tenant) -> None:
        """A JSON array of operations is refused: batching is off."""
        response = await tenant.client.post(
            "/graphql",
            json=[{"query": "{ __typename }"}, {"query": "{ __typename }"}],
            headers={"Authorization": f"Bearer {tenant.admin.token}"},
        )
        assert response.status_code == 400
        assert "data" not in response.text

    async def test_get_runs_queries_only(self, tenant) -> None:
        """GET runs a query; a mutation over GET is refused and not run."""
        headers = {"Authorization": f"Bearer {tenant.admin.token}", "Accept": "application/json"}
        ok = await tenant.client.get(
            "/graphql", params={"query": "{ __typename }"}, headers=headers
        )
        assert ok.status_code == 200
        assert ok.json()["data"] == {"__typename": "Query"}
        mutation = 'mutation { login(email: "a@b.c", password: "x") { __typename } }'
        refused = await tenant.client.get("/graphql", params={"query": mutation}, headers=headers)
        assert refused.status_code == 405, refused.text

    async def test_multipart_is_refused(self, tenant) -> None:
        """Only the import takes an upload: any other multipart operation is refused
        unexecuted, with or without the CSRF header."""
        for csrf in ({}, {"X-Fieldsync-CSRF": "1"}):
            for query in (
                "{ __typename }",
                'mutation { login(email: "a@b.c", password: "x") { __typename } }',
            ):
                response = await tenant.client.post(
                    "/graphql",
                    files={
                        "operations": (None, orjson.dumps({"query": query}).decode()),
                        "map": (None, "{}"),
                    },
                    headers={"Authorization": f"Bearer {tenant.admin.token}", **csrf},
                )
                assert response.status_code in (400, 415), response.text
                assert "__typename" not in response.text
                assert "data" not in response.json()

    async def test_the_import_upload_needs_the_csrf_header(self, tenant) -> None:
        """The import mutation accepts a multipart upload with `X-Fieldsync-CSRF` or
        `Apollo-Require-Preflight`, and refuses it unread without (a form could send it)."""
        created = await tenant.admin(
            """mutation { createExternalSource(input: {name: "Books", mapping: [
                 {column: "id", field: "externalId"}, {column: "name", field: "businessName"}]})
               { ... on ExternalSource { id } } }"""
        )
        source = created["createExternalSource"]["id"]
        query = """mutation($s: ID!, $f: Upload) { importExternalRecords(sourceId: $s, file: $f) {
                   __typename ... on ImportBatch { rows } } }"""
        operations = orjson.dumps({"query": query, "variables": {"s": source, "f": None}})

        async def upload(headers: dict[str, str], body: bytes) -> httpx.Response:
            return await tenant.client.post(
                "/graphql",
                data={"operations": operations.decode(), "map": '{"0": ["variables.f"]}'},
                files={"0": ("books.csv", body, "text/csv")},
                headers={"Authorization": f"Bearer {tenant.admin.token}", **headers},
            )

        refused = await upload({}, b"id,name\n1,Acme\n")
        assert refused.status_code == 400, refused.text
        assert "CSRF" in refused.text
        for header in ("X-Fieldsync-CSRF", "Apollo-Require-Preflight"):
            body = f"id,name\n1,Acme {header}\n".encode()
            accepted = await upload({header: "1"}, body)
            assert accepted.status_code == 200, accepted.text
            assert accepted.json()["data"]["importExternalRecords"] == {
                "__typename": "ImportBatch",
                "rows": 1,
            }

    async def test_a_multipart_body_past_the_limit_is_cut_off(self, settings, db, tenant) -> None:
        """A chunked upload (no Content-Length) that grows past the limit gets 413."""
        boundary = "fieldsync-test"
        query = (
            'mutation($f: Upload) { importExternalRecords(sourceId: "x", file: $f) { __typename } }'
        )
        operations = orjson.dumps({"query": query, "variables": {"f": None}}).decode()
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="operations"\r\n\r\n'
            f'{operations}\r\n--{boundary}\r\nContent-Disposition: form-data; name="map"'
            f'\r\n\r\n{{"0": ["variables.f"]}}\r\n--{boundary}\r\nContent-Disposition:'
            f' form-data; name="0"; filename="a.csv"\r\nContent-Type: text/csv\r\n\r\n'
        ).encode()

        async def body() -> AsyncIterator[bytes]:
            yield head
            for _ in range(40):  # 40 x 64 KB: past 1 KB + the 256 KB envelope allowance
                yield b"x" * 65536
            yield f"\r\n--{boundary}--\r\n".encode()

        async with app_with(settings, db, max_import_bytes=1024) as api:
            response = await api.client.post(
                "/graphql",
                content=body(),
                headers={
                    "Content-Type": f"multipart/form-data; boundary={boundary}",
                    "Authorization": f"Bearer {tenant.admin.token}",
                    "X-Fieldsync-CSRF": "1",
                },
            )
        assert response.status_code == 413, response.text


INTROSPECT = "{ __schema { queryType { name } } }"


class TestIntrospectionAndSuggestions:
    @pytest.mark.parametrize("enabled", [True, False])
    async def test_introspection_follows_the_setting(self, settings, db, tenant, enabled) -> None:
        """FIELDSYNC_INTROSPECTION=false refuses `__schema`; true answers it."""
        async with app_with(settings, db, introspection=enabled) as api:
            body = await as_admin(api, tenant, INTROSPECT)
        if enabled:
            assert body["data"]["__schema"]["queryType"]["name"] == "Query"
        else:
            assert body.get("errors")
            assert "introspection" in body["errors"][0]["message"].lower()
            assert not body.get("data")

    @pytest.mark.parametrize("enabled", [True, False])
    async def test_suggestions_follow_the_setting(self, settings, db, tenant, enabled) -> None:
        """ "Did you mean" hints leak field names: off unless FIELDSYNC_FIELD_SUGGESTIONS."""
        async with app_with(settings, db, field_suggestions=enabled) as api:
            body = await as_admin(api, tenant, "{ mee { id } }")
        message = body["errors"][0]["message"]
        assert "Cannot query field 'mee'" in message
        assert ("Did you mean" in message) is enabled


class TestMasking:
    async def test_unexpected_errors_are_masked(self, tenant, monkeypatch) -> None:
        """An unexpected exception is INTERNAL_SERVER_ERROR with no detail in the response."""

        async def broken(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("secret detail: connection string postgres://x")

        monkeypatch.setattr(resolvers.users.queries, "list_users", broken)
        response = await tenant.admin.post("{ users { id } }")
        body = response.json()
        assert codes(body) == ["INTERNAL_SERVER_ERROR"]
        assert body["errors"][0]["message"] == "Internal server error"
        assert "secret" not in response.text
        assert "RuntimeError" not in response.text
