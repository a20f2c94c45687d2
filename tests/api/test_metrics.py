"""Observability (issue #7 part 6): Prometheus `/metrics`, log context, no secrets in logs."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from websockets.exceptions import ConnectionClosed

from db.engine import Database
from tests.api.sync_client import Device
from tests.api.ws_client import Socket, ids_in
from tests.conftest import (
    LIVE_TEST_ENV,
    LOGIN,
    ServerProcess,
    Tenant,
    new_tenant,
    spawn_server,
    stop_server,
)

PUSH_NAMED = """mutation PushSome($d: ID!, $c: [ChangeInput!]!) {
  pushChanges(deviceId: $d, changes: $c) { __typename ... on PushResult { results { outcome } } } }"""


def samples(body: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition text, keyed by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def value(
    scraped: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """One sample's value (0 when absent)."""
    return scraped.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    """A server process (debug logs: nothing secret may show even there)."""
    process = spawn_server(
        database_url, tmp_path, {**LIVE_TEST_ENV, "FIELDSYNC_LOG_LEVEL": "debug"}
    )
    yield process
    stop_server(process)


@pytest.fixture
async def http(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    """HTTP to the server process."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        yield client


async def scrape(http: httpx.AsyncClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """GET /metrics and parse it."""
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


async def test_metrics_after_requests_pushes_and_a_subscription(server, http, db: Database):
    """Operations by name and type, push outcomes, open subscriptions, fan-out lag, pool use."""
    tenant: Tenant = await new_tenant(db, http)
    writer = await Device(await tenant.add_user("TECHNICIAN")).register()
    reader = await Device(await tenant.add_user("TECHNICIAN")).register()
    socket = await Socket.open(server.ws_url, reader.api.token)
    await socket.subscribe("s", reader.id)
    await socket.collect("s", lambda bs: len(bs) >= 1)  # caught up
    changes = [
        writer.change("customer", str(uuid.uuid4()), {"businessName": f"M{i}"}, base=None)
        for i in range(2)
    ]
    body = (await writer.api.post(PUSH_NAMED, {"d": writer.id, "c": changes})).json()
    outcomes = [r["outcome"] for r in body["data"]["pushChanges"]["results"]]
    assert outcomes == ["APPLIED", "APPLIED"]
    # A replay of the first: outcomes are counted as returned.
    await writer.api.post(PUSH_NAMED, {"d": writer.id, "c": changes[:1]})
    batches = await socket.collect("s", lambda bs: len(ids_in(bs)) >= 2)
    assert ids_in(batches) == [c["recordId"] for c in changes]
    await tenant.admin("query Me { me { id } }")

    scraped = await scrape(http)
    # Labelled by root field, whatever the client named the operation (PushSome, Me).
    assert (
        value(scraped, "fieldsync_graphql_requests_total", operation="pushChanges", type="mutation")
        == 2
    )
    assert value(scraped, "fieldsync_graphql_requests_total", operation="me", type="query") == 1
    assert (
        value(scraped, "fieldsync_graphql_requests_total", operation="login", type="mutation") >= 1
    )
    assert value(scraped, "fieldsync_graphql_request_seconds_count", operation="pushChanges") == 2
    assert value(scraped, "fieldsync_graphql_request_seconds_sum", operation="pushChanges") > 0
    assert value(scraped, "fieldsync_push_outcomes_total", outcome="APPLIED") >= 3
    assert value(scraped, "fieldsync_subscriptions_open") == 1
    assert value(scraped, "fieldsync_fanout_lag_seconds_count") >= 1
    assert value(scraped, "fieldsync_db_pool_size") >= 1
    # The worker's event-loop lag is sampled every 100 ms from start-up.
    assert value(scraped, "fieldsync_event_loop_lag_seconds_count") >= 1
    assert (
        0 <= value(scraped, "fieldsync_db_pool_in_use") <= value(scraped, "fieldsync_db_pool_size")
    )

    await socket.close()
    deadline = time.monotonic() + 10
    while value(await scrape(http), "fieldsync_subscriptions_open") != 0:
        assert time.monotonic() < deadline, "the subscription gauge did not drop"
        await asyncio.sleep(0.1)


async def test_operation_names_are_bounded_labels(client):
    """A client cannot mint label values: the label is the root field, and an operation
    that does not run (here: its name is not in the document) counts as "invalid"."""
    await client.post("/graphql", json={"query": "query { __typename }"})
    await client.post("/graphql", json={"query": "query { __typename }", "operationName": "x y"})
    scraped = samples((await client.get("/metrics")).text)
    assert (
        value(scraped, "fieldsync_graphql_requests_total", operation="__typename", type="query")
        >= 1
    )
    assert (
        value(scraped, "fieldsync_graphql_requests_total", operation="invalid", type="unknown") >= 1
    )


async def test_log_lines_carry_request_id_and_operation(tenant, monkeypatch):
    """An unexpected error is logged with the request id and the operation name."""
    device = await Device(await tenant.add_user("TECHNICIAN")).register()

    def boom(_outcomes: object) -> None:
        raise RuntimeError("metrics store unavailable")

    monkeypatch.setattr("server.metrics.count_push_outcomes", boom)
    change = device.change("customer", str(uuid.uuid4()), {"businessName": "L"}, base=None)
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as logs:
        response = await tenant.client.post(
            "/graphql",
            json={"query": PUSH_NAMED, "variables": {"d": device.id, "c": [change]}},
            headers={"Authorization": f"Bearer {device.api.token}", "X-Request-Id": "req-42"},
        )
    assert response.json()["errors"][0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    [line] = [entry for entry in logs if entry["event"] == "unexpected error"]
    assert line["request_id"] == "req-42"
    assert line["operation"] == "PushSome"


async def test_database_errors_do_not_carry_bound_values(db: Database):
    """Statement parameters (password hashes, tokens, customer data) stay out of errors."""
    secret = "param-secret-" + uuid.uuid4().hex
    with pytest.raises(DBAPIError) as raised:
        async with db.unscoped() as conn:
            await conn.execute(text("SELECT CAST(:p AS integer)"), {"p": secret})
    assert secret not in str(raised.value)
    assert secret not in repr(raised.value)


async def test_tokens_and_passwords_never_reach_the_log(server, http, db: Database):
    """Error paths fed a token or a password: the server's log holds neither."""
    tenant: Tenant = await new_tenant(db, http)
    password = "Wrong-Pass-" + uuid.uuid4().hex
    forged = "eyJhbGciOiJIUzI1NiJ9.forged-" + uuid.uuid4().hex + ".sig"
    valid = tenant.admin.token
    assert valid is not None
    # A failed login, a forged token, a malformed body holding a password, a bad document
    # and a failing write with a valid token, a WebSocket init with a forged token.
    await http.post(
        "/graphql",
        json={"query": LOGIN, "variables": {"email": tenant.admin_email, "password": password}},
    )
    await http.post(
        "/graphql", json={"query": "{ me { id } }"}, headers={"Authorization": f"Bearer {forged}"}
    )
    await http.post(
        "/graphql", content=f'{{"query": "{password}', headers={"content-type": "application/json"}
    )
    await http.post(
        "/graphql",
        json={"query": "{ me { id nope } }", "variables": {"password": password}},
        headers={"Authorization": f"Bearer {valid}"},
    )
    await http.post(
        "/graphql",
        json={"query": PUSH_NAMED, "variables": {"d": "not-a-device", "c": []}},
        headers={"Authorization": f"Bearer {valid}"},
    )
    # Literals and variable values quoted by validation and coercion errors.
    await http.post(
        "/graphql",
        json={"query": f'mutation {{ login(email: "a@b.c", password: "{password}") {{ nope }} }}'},
    )
    await http.post(
        "/graphql",
        json={"query": "query($n: Int) { me { id } }", "variables": {"n": password}},
        headers={"Authorization": f"Bearer {valid}"},
    )
    with pytest.raises((AssertionError, ConnectionClosed)):
        await Socket.open(server.ws_url, forged)
    await asyncio.sleep(0.5)  # let the server flush its log lines
    logged = server.output()
    for secret in (password, forged, valid):
        assert secret not in logged
