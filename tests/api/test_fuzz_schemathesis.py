"""Schemathesis fuzzing of every query and mutation of schema.graphql against a live server.

Each operation gets `FIELDSYNC_FUZZ_EXAMPLES` generated documents (default 15), sent with
the bearer token of a fresh tenant's admin. A response fails the run when its status is
5xx, its body is not a GraphQL JSON object, or any error lacks `extensions.code` or has
code `INTERNAL_SERVER_ERROR` (an unexpected exception the server masked).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import graphql
import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.core.result import Err, Ok
from schemathesis.graphql import nodes

from db.engine import Database
from db.seed import create_org_with_admin
from tests.api.queries import make_tree
from tests.conftest import LOGIN, PASSWORD, PASSWORD_HASH, Api, LiveServer

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schema.graphql"
EXAMPLES_PER_OPERATION = int(os.environ.get("FIELDSYNC_FUZZ_EXAMPLES", "15"))
# The whole run's time budget, shared out evenly: each operation gets at least one document
# and stops at its share's end (keeps CI bounded on slow or busy machines).
TIME_BUDGET_SECONDS = float(os.environ.get("FIELDSYNC_FUZZ_BUDGET_SECONDS", "60"))


def _field(name: str, value: graphql.ValueNode) -> graphql.ObjectFieldNode:
    return graphql.ObjectFieldNode(name=graphql.NameNode(value=name), value=value)


def _json_value(depth: int = 2) -> st.SearchStrategy[graphql.ValueNode]:
    leaves: st.SearchStrategy[graphql.ValueNode] = st.one_of(
        st.integers(-(2**31), 2**31 - 1).map(nodes.Int),
        st.text(max_size=20).map(nodes.String),
        st.booleans().map(nodes.Boolean),
        st.just(graphql.NullValueNode()),
    )
    if depth == 0:
        return leaves
    inner = _json_value(depth - 1)
    return st.one_of(
        leaves,
        st.lists(inner, max_size=3).map(nodes.List),
        st.dictionaries(st.from_regex(r"[a-zA-Z_]{1,8}", fullmatch=True), inner, max_size=3).map(
            lambda d: nodes.Object([_field(k, v) for k, v in d.items()])
        ),
    )


# Custom scalars of schema.graphql: values of the right shape (positive fuzzing).
schemathesis.graphql.scalar("Date", st.dates().map(lambda d: nodes.String(d.isoformat())))
schemathesis.graphql.scalar(
    "DateTime",
    st.datetimes(timezones=st.just(dt.UTC)).map(lambda d: nodes.String(d.isoformat())),
)
schemathesis.graphql.scalar("JSON", _json_value())
schemathesis.graphql.scalar(
    "VersionVector",
    st.dictionaries(
        st.from_regex(r"[a-z_][a-z0-9_]{0,11}", fullmatch=True),
        st.integers(0, 2**31 - 1),
        max_size=3,
    ).map(lambda d: nodes.Object([_field(k, nodes.Int(v)) for k, v in d.items()])),
)

# A file arrives only as a multipart part; in a JSON document an Upload can only be null.
schemathesis.graphql.scalar("Upload", st.just(nodes.Null))

SCHEMA = schemathesis.graphql.from_path(SCHEMA_PATH)


ONE_OF_VIOLATION = re.compile(
    r"^(Field '\w+\.\w+' must be non-null\.|OneOf Input Object '\w+' must specify exactly one key\.)$"
)


@dataclass
class FuzzStats:
    """What the run sent and what failed."""

    operations: int = 0
    requests: int = 0
    # Documents the server refused in validation (hypothesis-graphql ignores @oneOf, so it
    # sometimes sends a RecordPatch with a null member): not executed, nothing to judge.
    rejected_by_validation: int = 0
    failures: list[str] = field(default_factory=list)


def is_validation_error(error: dict[str, Any]) -> bool:
    """A document error (parse/validation, before execution): no `path`, no code, a location."""
    return "path" not in error and not error.get("extensions") and bool(error.get("locations"))


def problems(response: requests.Response) -> list[str]:
    """Why a response breaks the contract: 5xx, not GraphQL JSON, or an unmasked/internal error.

    Execution errors must carry `extensions.code` other than INTERNAL_SERVER_ERROR. Only
    @oneOf violations may be refused in validation; any other validation error is a failure.
    """
    if response.status_code >= 500:
        return [f"HTTP {response.status_code}: {response.text[:300]}"]
    try:
        body = response.json()
    except ValueError:
        return [f"HTTP {response.status_code}, not JSON: {response.text[:300]}"]
    if not isinstance(body, dict) or not ({"data", "errors"} & body.keys()):
        return [f"HTTP {response.status_code}, not a GraphQL response: {response.text[:300]}"]
    found = []
    for error in body.get("errors") or []:
        code = (error.get("extensions") or {}).get("code")
        if is_validation_error(error) and ONE_OF_VIOLATION.match(error.get("message", "")):
            continue
        if not code:
            found.append(f"error without extensions.code: {error}")
        elif code == "INTERNAL_SERVER_ERROR":
            found.append(f"INTERNAL_SERVER_ERROR (unexpected exception): {error}")
    return found


def fuzz_operation(
    operation: Any,
    url: str,
    session: requests.Session,
    headers: dict[str, str],
    stats: FuzzStats,
    deadline: float,
) -> None:
    """Send up to EXAMPLES_PER_OPERATION generated documents of one operation; record problems."""
    seen: set[str] = set()
    sent = [0]

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        # CI sends the same documents every run; FIELDSYNC_FUZZ_RANDOM=1 explores new ones.
        derandomize=not os.environ.get("FIELDSYNC_FUZZ_RANDOM"),
    )
    def run(case: Any) -> None:
        if sent[0] and time.monotonic() > deadline:
            return
        sent[0] += 1
        response = case.call(base_url=url, session=session, headers=headers, timeout=30)
        stats.requests += 1
        if response.status_code < 500 and _all_one_of_violations(response):
            stats.rejected_by_validation += 1
        for problem in problems(response):
            key = f"{operation.label}: {problem[:120]}"
            if key not in seen:
                seen.add(key)
                stats.failures.append(f"{operation.label}: {problem}\n  body: {case.body}")

    run()


def _all_one_of_violations(response: requests.Response) -> bool:
    try:
        errors = response.json().get("errors") or []
    except (ValueError, AttributeError):
        return False
    return bool(errors) and all(
        is_validation_error(e) and ONE_OF_VIOLATION.match(e.get("message", "")) for e in errors
    )


@pytest.fixture
async def fuzz_token(db: Database, live_server: LiveServer) -> str:
    """A fresh tenant on the live server with one customer tree; its admin's bearer token."""
    email = f"fuzz-admin-{uuid.uuid4().hex[:10]}@example.com"
    await create_org_with_admin(
        db, org_name="Fuzz Dealer", email=email, password_hash=PASSWORD_HASH
    )
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as http:
        data = await Api(http)(LOGIN, {"email": email, "password": PASSWORD})
        token: str = data["login"]["token"]
        await make_tree(Api(http, token), "Fuzz Customer")
    return token


def test_schemathesis_fuzz_finds_no_server_errors(live_server: LiveServer, fuzz_token: str) -> None:
    """Generated valid documents for every query and mutation never get a 5xx, a non-GraphQL
    body, an error without `extensions.code`, or an INTERNAL_SERVER_ERROR."""
    url = f"{live_server.url}/graphql"
    headers = {"Authorization": f"Bearer {fuzz_token}"}
    stats = FuzzStats()
    started = time.monotonic()
    session = requests.Session()
    results = list(SCHEMA.get_all_operations())
    invalid = [r.err() for r in results if isinstance(r, Err)]
    assert not invalid, invalid
    operations = [r.ok() for r in results if isinstance(r, Ok)]
    assert len(operations) > 40, [op.label for op in operations]

    for done, operation in enumerate(operations, start=1):
        stats.operations += 1
        deadline = started + TIME_BUDGET_SECONDS * done / len(operations)
        fuzz_operation(operation, url, session, headers, stats, deadline)

    print(
        f"\nschemathesis fuzz: {stats.operations}/{len(operations)} operations, "
        f"{stats.requests} requests ({stats.rejected_by_validation} refused as @oneOf "
        f"violations), {len(stats.failures)} distinct failures, "
        f"{time.monotonic() - started:.1f}s"
    )
    assert stats.requests >= len(operations), stats
    assert not stats.failures, "\n".join(stats.failures)


@pytest.mark.parametrize(
    ("document", "variables"),
    [
        (
            """mutation($v: String!) { registerDevice(input: {name: "p", appVersion: $v}) {
               __typename ... on ValidationError { fieldErrors { field } } } }""",
            {"v": "1.0\x00"},
        ),
        (
            """mutation($v: String!) { registerDevice(input: {name: $v}) {
               __typename ... on ValidationError { fieldErrors { field } } } }""",
            {"v": "phone\x00"},
        ),
    ],
)
async def test_nul_in_device_text_is_a_validation_error(tenant, document, variables):
    """A NUL character in a device's text fields (found by the fuzzer: PostgreSQL text cannot
    hold it) is a ValidationError, not an INTERNAL_SERVER_ERROR."""
    data = await tenant.admin(document, variables)
    assert data["registerDevice"]["__typename"] == "ValidationError", data


async def test_nul_in_report_device_is_a_validation_error(tenant):
    """reportDevice refuses a NUL in appVersion as a ValidationError."""
    device = (
        await tenant.admin(
            'mutation { registerDevice(input: {name: "p"}) { ... on Device { id } } }'
        )
    )["registerDevice"]["id"]
    data = await tenant.admin(
        """mutation($d: ID!) { reportDevice(deviceId: $d, input: {appVersion: "2\\u0000"}) {
           __typename } }""",
        {"d": device},
    )
    assert data["reportDevice"]["__typename"] == "ValidationError", data


@pytest.mark.parametrize(
    ("mutation", "document"),
    [
        ("createCustomer", 'createCustomer(input: {businessName: "A", lastName: $v})'),
        ("createContact", "createContact(input: {customerId: $c, firstName: $v})"),
        ("createFacility", "createFacility(input: {customerId: $c, name: $v})"),
        (
            "updateCustomer",
            "updateCustomer(id: $c, input: {addresses: [{type: BILL_TO, line1: $v}]})",
        ),
        ("createCredential", 'createCredential(input: {customerId: $c, name: "R", notes: $v})'),
    ],
)
async def test_nul_in_record_text_is_a_validation_error(tenant, mutation, document):
    """A NUL in any record text field (PostgreSQL cannot store it) is a ValidationError naming
    the field, never an INTERNAL_SERVER_ERROR."""
    customer = (await make_tree(tenant.admin))["customer"]
    uses_c = "$c" in document
    data = await tenant.admin(
        f"""mutation($v: String!{", $c: ID!" if uses_c else ""}) {{ {document} {{
           __typename ... on ValidationError {{ fieldErrors {{ field message }} }} }} }}""",
        {"v": "x\x00y", **({"c": customer} if uses_c else {})},
    )
    result = data[mutation]
    assert result["__typename"] == "ValidationError", result
    assert "must not contain NUL characters" in {e["message"] for e in result["fieldErrors"]}


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(
            'mutation($v: String!) { login(email: $v, password: "x") { __typename } }',
            id="login",
        ),
        pytest.param(
            'mutation($v: String!) { createUser(input: {email: "u@example.com", name: $v,'
            ' password: "long-enough-password", role: TECHNICIAN}) { __typename } }',
            id="createUser",
        ),
        pytest.param(
            "query($v: String!) { customers(first: 5, filter: {search: $v}) { totalCount } }",
            id="customers-search",
        ),
        pytest.param(
            "query($v: String!) { contacts(first: 5, search: $v) { totalCount } }",
            id="contacts-search",
        ),
        pytest.param(
            "query($v: String!) { credentials(first: 5, search: $v) { totalCount } }",
            id="credentials-search",
        ),
        pytest.param(
            "query($v: String!) { customers(first: 5, filter: {email: $v}) { totalCount } }",
            id="customers-email",
        ),
        pytest.param(
            "query($v: String!) { customers(first: 5, after: $v) { totalCount } }", id="cursor"
        ),
        pytest.param("query($v: ID!) { node(id: $v) { id } }", id="node-id"),
    ],
)
async def test_nul_in_other_inputs_is_not_a_server_error(tenant, document):
    """NUL characters in logins, users, searches, email filters, cursors and ids get a result
    (a search matches nothing: stored text cannot hold NUL) or a coded error, never an
    INTERNAL_SERVER_ERROR."""
    body = (await tenant.admin.post(document, {"v": "x\x00y"})).json()
    codes = [(e.get("extensions") or {}).get("code") for e in body.get("errors") or []]
    assert all(codes), body
    assert "INTERNAL_SERVER_ERROR" not in codes, body
