"""The tools frontend teams run accept the committed schema.graphql (issue #20, point 3).

tests/frontend is a small npm project (its lock committed) holding realistic frontend
documents: the customer list, detail (with its paged children), search, a mutation
selecting every member of its result union, the sync dashboard and a fragment on ``Node``.
Here GraphQL Code Generator (client preset, ``strictScalars`` with the scalar map
clients/frontend/scalars.json) generates their types, ``tsc --noEmit --strict`` compiles
frontend code using them (``new Date(customer.updatedAt)``), the Relay compiler compiles
Relay documents (paginated ``@connection`` on ``Query.customers`` and on a customer's and a
facility's children, ``@refetchable`` on a ``Node`` fragment) with the same scalar map, and
the shipped Apollo ``possibleTypes`` (clients/frontend/possible-types.json) are the ones
the schema gives.

To regenerate the shipped possibleTypes after a schema change:
``cd tests/frontend && npm ci && npm run codegen && cp src/gql/possible-types.json
../../clients/frontend/``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from graphql import GraphQLScalarType, build_schema, specified_scalar_types

ROOT = Path(__file__).resolve().parents[2]
FRONTEND = ROOT / "tests" / "frontend"
CLIENTS = ROOT / "clients" / "frontend"
SCALARS = CLIENTS / "scalars.json"
POSSIBLE_TYPES = CLIENTS / "possible-types.json"
SDL = ROOT / "schema.graphql"
TOOLS = (
    "@graphql-codegen/cli",
    "@graphql-codegen/client-preset",
    "@graphql-codegen/fragment-matcher",
    "relay-compiler",
    "typescript",
)
# Custom scalars with no published specification: their description is the specification.
UNSPECIFIED = frozenset({"VersionVector"})


def run(*command: str) -> subprocess.CompletedProcess[str]:
    """A tool of tests/frontend, run there; fails the test with its output."""
    done = subprocess.run(
        [str(FRONTEND / "node_modules" / ".bin" / command[0]), *command[1:]],
        cwd=FRONTEND,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def frontend() -> Path:
    """tests/frontend with its packages installed from the lock (once: kept afterwards)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js and npm run the frontend tools")
    if not all((FRONTEND / "node_modules" / name).is_dir() for name in TOOLS):
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=FRONTEND,
            check=True,
            capture_output=True,
            timeout=300,
        )
    return FRONTEND


@pytest.fixture(scope="module")
def generated(frontend: Path) -> Path:
    """The codegen output for the documents (src/gql, not committed)."""
    run("graphql-codegen", "--config", "codegen.cjs")
    return frontend / "src" / "gql"


def custom_scalars() -> dict[str, GraphQLScalarType]:
    schema = build_schema(SDL.read_text())
    return {
        name: t
        for name, t in schema.type_map.items()
        if isinstance(t, GraphQLScalarType) and name not in specified_scalar_types
    }


def test_every_custom_scalar_is_described_specified_and_mapped() -> None:
    """A description saying its wire form, ``@specifiedBy`` where a specification exists,
    and a TypeScript type in the shipped map (no scalar is `unknown` or `any`)."""
    mapping = json.loads(SCALARS.read_text())
    scalars = custom_scalars()
    assert set(mapping) == set(scalars)
    for name, scalar in scalars.items():
        assert (scalar.description or "").strip(), name
        if name not in UNSPECIFIED:
            assert (scalar.specified_by_url or "").startswith("https://"), name
        assert mapping[name] not in ("any", "unknown"), name
    assert mapping["DateTime"] == "string"


def test_codegen_types_compile_under_strict_typescript(generated: Path) -> None:
    """The client preset generates every document (the schema accepts them all: unions
    and Node selected member by member), and frontend code using the results compiles
    with `tsc --noEmit --strict`."""
    types = (generated / "graphql.ts").read_text()
    row = re.search(r"export type CustomerRowFragment = \{(.*?)\};", types)
    assert row is not None
    assert "updatedAt: string" in row.group(1)
    assert "version: Record<string, number>" in types
    run("tsc", "--noEmit", "--strict", "-p", "tsconfig.json")


def test_the_shipped_possible_types_are_the_schemas(generated: Path) -> None:
    """clients/frontend/possible-types.json is what fragment-matcher makes of the schema:
    every union and interface with every member (the three records new to Node too)."""
    fresh = json.loads((generated / "possible-types.json").read_text())
    assert json.loads(POSSIBLE_TYPES.read_text()) == fresh, (
        "clients/frontend/possible-types.json is stale: see this module's docstring"
    )
    nodes = set(fresh["possibleTypes"]["Node"])
    assert {"CredentialAccess", "ExternalSource", "ImportBatch", "Customer", "Asset"} <= nodes


def test_the_relay_compiler_accepts_the_schema_and_paginated_documents(frontend: Path) -> None:
    """Relay compiles ``@connection`` on Query.customers, Customer.contactsConnection,
    facilitiesConnection, credentialsConnection and Facility.assetsConnection, and
    ``@refetchable`` fragments on Customer, Facility and Node, mapping the scalars."""
    config = json.loads((frontend / "relay.config.json").read_text())
    assert config["customScalarTypes"] == json.loads(SCALARS.read_text())
    artifacts = frontend / "relay" / "__generated__"
    if artifacts.is_dir():
        shutil.rmtree(artifacts)
    run("relay-compiler")
    listed = (artifacts / "CustomerList_query.graphql.ts").read_text()
    assert "readonly updatedAt: string;" in listed
    assert "readonly version: Record<string, number>;" in listed
    refetch = (artifacts / "NodeCardRefetchQuery.graphql.ts").read_text()
    assert "node(id: $id)" in refetch
    for name in ("Contacts", "Facilities", "Credentials", "Assets"):
        assert (artifacts / f"CustomerChildren{name}PaginationQuery.graphql.ts").is_file(), name
