"""GraphiQL's ready-made admin operations (server/static/graphiql/examples): each one is
valid against the committed schema, runs as an admin against a real server without
errors, and is offered by the served page."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
from graphql import OperationDefinitionNode, build_schema, parse, validate

from server.graphiql import admin_examples
from tests.conftest import LOGIN, Api

SCHEMA = Path(__file__).resolve().parents[2] / "schema.graphql"
CREATE_SOURCE = """mutation {
  createExternalSource(input: {name: "Examples ledger", mapping: [
    {column: "No", field: "externalId"}, {column: "Company", field: "businessName"}]}) {
    __typename ... on ExternalSource { id } } }"""


def operation_names(query: str) -> list[str]:
    """The named operations of a document, in order."""
    return [
        d.name.value
        for d in parse(query).definitions
        if isinstance(d, OperationDefinitionNode) and d.name is not None
    ]


def test_there_are_examples_for_the_admins_daily_questions():
    """Devices behind or stale, open conflicts, the access report, the window's counts."""
    names = {name for e in admin_examples() for name in operation_names(e.query)}
    assert {
        "DevicesBehindOrStale",
        "OpenConflicts",
        "CredentialAccessReport",
        "ExternalSources",
        "SyncWindowCounts",
    } <= names
    for example in admin_examples():
        assert example.title
        assert not example.title.startswith("#")


def test_every_example_is_valid_against_the_committed_schema():
    """No typo or stale field: validated against schema.graphql."""
    schema = build_schema(SCHEMA.read_text())
    for example in admin_examples():
        errors = validate(schema, parse(example.query))
        assert errors == [], (example.title, [e.message for e in errors])


async def test_every_example_runs_as_an_admin_against_a_real_server(live_server):
    """Each operation of each example, with its own variables (a real source id where it
    asks for one), answers data and no errors on a `fieldsync serve` process."""
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as client:
        login = await Api(client)(
            LOGIN, {"email": live_server.admin_email, "password": live_server.admin_password}
        )
        admin = Api(client, login["login"]["token"])
        created = await admin(CREATE_SOURCE)
        source_id = created["createExternalSource"]["id"]
        ran = []
        for example in admin_examples():
            variables = dict(example.variables)
            if "sourceId" in variables:
                variables["sourceId"] = source_id
            for name in operation_names(example.query):
                response = await client.post(
                    "/graphql",
                    json={"query": example.query, "variables": variables, "operationName": name},
                    headers={"Authorization": f"Bearer {admin.token}"},
                )
                body = response.json()
                assert response.status_code == 200, (name, body)
                assert "errors" not in body, (name, body["errors"])
                assert body["data"], (name, body)
                ran.append(name)
                if name == "SyncWindowCounts":
                    counts = body["data"]["syncWindow"]["counts"]
                    assert {c["category"] for c in counts} >= {"CONFLICT", "NEW_LOCAL"}
        assert "SyncWindowCounts" in ran


async def test_the_served_page_offers_the_examples(live_server):
    """GraphiQL's page carries every example (as tabs and in the Examples menu), and the
    bare address redirects to it."""
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as client:
        page = await client.get("/graphql", headers={"Accept": "text/html"})
        assert page.status_code == 200
        config_text = re.search(
            r'<script id="fs-config" type="application/json">(.*?)</script>', page.text
        )
        assert config_text is not None
        config = json.loads(config_text.group(1))
        assert [e["title"] for e in config["examples"]] == [e.title for e in admin_examples()]
        assert [e["query"] for e in config["examples"]] == [e.query for e in admin_examples()]
        assert 'id="fs-examples"' in page.text
        home = await client.get("/", headers={"Accept": "text/html"})
        assert home.status_code == 307
        assert home.headers["location"] == "/graphql"
