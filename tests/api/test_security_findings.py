"""The hardening issue's low findings, each through the public API where it can be reached:
portal users follow their customer, proxy headers only from configured proxies, no bound
values in raw-path errors, no query-string tokens in logs, metric labels bounded by the
schema, user emails across tenants, per-tenant reveal windows."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.exc import DBAPIError, IntegrityError
from websockets.exceptions import ConnectionClosed

from db import raw
from db.commands.users import EMAIL_UNAVAILABLE
from db.engine import Database
from db.queries.users import create_user
from server.cli import uvicorn_options
from server.logging import RedactQueryStrings, format_exception, redact_query_strings
from server.settings import Settings
from tests.api.credential_queries import REPORT, REVEAL, add_portal_user, make_credential, reveal
from tests.api.queries import ARCHIVE_CUSTOMER, DELETE_CUSTOMER, REENABLE_CUSTOMER, make_customer
from tests.api.test_rate_limits import client_from, unique_address
from tests.api.ws_client import Socket
from tests.conftest import (
    LOGIN,
    PASSWORD,
    PASSWORD_HASH,
    Api,
    ServerProcess,
    Tenant,
    spawn_server,
    stop_server,
)

ME = "query Me { me { id email } }"
CREATE_USER = """mutation($input: CreateUserInput!) { createUser(input: $input) {
  __typename ... on UserError { code message } ... on ValidationError { fieldErrors { field message } } } }"""
SET_ACTIVE = """mutation($id: ID!, $active: Boolean!) { setUserActive(userId: $id, active: $active) {
  __typename ... on User { active } ... on ValidationError { fieldErrors { field message } } } }"""
CUSTOMER_DETAIL = """query($id: ID!) { customer(id: $id) { id businessName } }"""


async def login_typename(client: httpx.AsyncClient, email: str) -> str:
    """The __typename of a sign-in with the test password."""
    data = await Api(client)(LOGIN, {"email": email, "password": PASSWORD})
    return str(data["login"]["__typename"])


async def unauthenticated(api: Api, query: str, variables: dict[str, str] | None = None) -> bool:
    """Whether the request is refused as UNAUTHENTICATED."""
    body = (await api.post(query, variables)).json()
    return any(e.get("extensions", {}).get("code") == "UNAUTHENTICATED" for e in body["errors"])


async def portal_of(tenant: Tenant) -> tuple[dict, Api, str, str]:
    """A customer, a signed-in portal user of it, that user's email and id."""
    customer = await make_customer(tenant.admin)
    portal = await add_portal_user(tenant, customer["id"])
    me = (await portal(ME))["me"]
    return customer, portal, me["email"], me["id"]


class TestPortalUsersFollowTheirCustomer:
    """Finding a: a portal user's access ends with their customer (deleted or archived)."""

    async def test_deleting_the_customer_ends_sign_in_and_tokens(self, tenant: Tenant) -> None:
        """After deleteCustomer the portal user's token is refused and sign-in fails."""
        customer, portal, email, _ = await portal_of(tenant)
        deleted = await tenant.admin(DELETE_CUSTOMER, {"id": customer["id"]})
        assert deleted["deleteCustomer"]["__typename"] == "DeletedRecord", deleted
        assert await unauthenticated(portal, ME)
        # The compiled read of customer(id:) checks the same user row.
        assert await unauthenticated(portal, CUSTOMER_DETAIL, {"id": customer["id"]})
        assert await login_typename(tenant.client, email) == "InvalidCredentials"

    async def test_archiving_the_customer_ends_access_until_an_admin_restores_it(
        self, tenant: Tenant
    ) -> None:
        """Archive deactivates the portal user; re-enabling the customer lets an admin
        activate them again, and not before."""
        customer, portal, email, user_id = await portal_of(tenant)
        archived = await tenant.admin(ARCHIVE_CUSTOMER, {"id": customer["id"]})
        assert archived["archiveCustomer"]["archived"] is True
        assert await unauthenticated(portal, ME)
        assert await login_typename(tenant.client, email) == "InvalidCredentials"

        refused = await tenant.admin(SET_ACTIVE, {"id": user_id, "active": True})
        assert refused["setUserActive"]["__typename"] == "ValidationError", refused
        assert refused["setUserActive"]["fieldErrors"][0]["field"] == "active"

        await tenant.admin(REENABLE_CUSTOMER, {"id": customer["id"]})
        assert await login_typename(tenant.client, email) == "InvalidCredentials"
        restored = await tenant.admin(SET_ACTIVE, {"id": user_id, "active": True})
        assert restored["setUserActive"] == {"__typename": "User", "active": True}
        assert await login_typename(tenant.client, email) == "LoginSuccess"
        # The old token stays revoked: deactivation bumped its epoch.
        assert await unauthenticated(portal, ME)

    async def test_no_portal_user_for_an_archived_customer(self, tenant: Tenant) -> None:
        """createUser refuses a portal user of an archived customer."""
        customer = await make_customer(tenant.admin)
        await tenant.admin(ARCHIVE_CUSTOMER, {"id": customer["id"]})
        email = f"portal-{uuid.uuid4().hex[:8]}@example.com"
        data = await tenant.admin(
            CREATE_USER,
            {
                "input": {
                    "email": email,
                    "name": "P",
                    "password": PASSWORD,
                    "role": "PORTAL",
                    "customerId": customer["id"],
                }
            },
        )
        assert data["createUser"]["__typename"] == "ValidationError", data
        assert data["createUser"]["fieldErrors"][0]["field"] == "customerId"

    async def test_other_users_are_untouched(self, tenant: Tenant) -> None:
        """Archiving a customer leaves technicians and other customers' portal users alone."""
        customer, _, _, _ = await portal_of(tenant)
        _, other_portal, _, _ = await portal_of(tenant)
        tech = await tenant.add_user("TECHNICIAN")
        await tenant.admin(ARCHIVE_CUSTOMER, {"id": customer["id"]})
        assert (await other_portal(ME))["me"]
        assert (await tech(ME))["me"]
        assert (await tenant.admin(ME))["me"]


def proxied_server(database_url: str, workdir: Path, **env: str) -> Iterator[ServerProcess]:
    """A `fieldsync serve` process with a one-reveal-per-address window."""
    process = spawn_server(
        database_url, workdir, {"FIELDSYNC_REVEAL_RATE_PER_ADDRESS_PER_MINUTE": "1", **env}
    )
    yield process
    stop_server(process)


@pytest.fixture
def direct_server(database_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    """A server with default proxy settings."""
    yield from proxied_server(database_url, tmp_path)


@pytest.fixture
def behind_proxy(database_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    """A server that trusts a proxy on the loopback network."""
    yield from proxied_server(database_url, tmp_path, FIELDSYNC_TRUSTED_PROXIES="127.0.0.0/8")


async def reveal_from(
    server: ServerProcess, token: str, credential_id: str, forwarded: str
) -> dict:
    """revealCredentialPassword over real HTTP with an X-Forwarded-For header."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        response = await http.post(
            "/graphql",
            json={"query": REVEAL, "variables": {"id": credential_id}},
            headers={"Authorization": f"Bearer {token}", "X-Forwarded-For": forwarded},
        )
    return response.json()["data"]["revealCredentialPassword"]  # type: ignore[no-any-return]


async def logged_addresses(tenant: Tenant) -> list[str]:
    """Client addresses of the tenant's access log, oldest first."""
    data = await tenant.admin(REPORT, {"first": 10})
    edges = data["credentialAccessReport"]["edges"]
    return [e["node"]["clientAddress"] for e in reversed(edges)]


class TestProxyHeaders:
    """Finding b: X-Forwarded-For is believed only from FIELDSYNC_TRUSTED_PROXIES."""

    async def test_by_default_the_peer_address_is_logged_and_limited(
        self, direct_server: ServerProcess, tenant: Tenant
    ) -> None:
        """Without a configured proxy a forged header changes neither the access log nor
        the per-address window."""
        customer = await make_customer(tenant.admin)
        cred = await make_credential(tenant.admin, {"customerId": customer["id"]}, password="pw")
        token = tenant.admin.token
        assert token is not None
        first = await reveal_from(direct_server, token, cred["id"], unique_address())
        assert first["__typename"] == "RevealedPassword", first
        second = await reveal_from(direct_server, token, cred["id"], unique_address())
        assert second["__typename"] == "RateLimited", second
        assert await logged_addresses(tenant) == ["127.0.0.1"]

    async def test_a_configured_proxy_is_believed(
        self, behind_proxy: ServerProcess, tenant: Tenant
    ) -> None:
        """With the proxy in FIELDSYNC_TRUSTED_PROXIES the forwarded client is the client."""
        customer = await make_customer(tenant.admin)
        cred = await make_credential(tenant.admin, {"customerId": customer["id"]}, password="pw")
        token = tenant.admin.token
        assert token is not None
        addresses = [unique_address(), unique_address()]
        for address in addresses:
            revealed = await reveal_from(behind_proxy, token, cred["id"], address)
            assert revealed["__typename"] == "RevealedPassword", revealed
        assert await logged_addresses(tenant) == addresses

    def test_serve_trusts_no_proxy_by_default(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """`serve` turns uvicorn's proxy headers off unless proxies are configured, even
        with uvicorn's own FORWARDED_ALLOW_IPS in the environment."""
        monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")
        options = uvicorn_options(Settings(), host="127.0.0.1", port=8000)
        assert options["proxy_headers"] is False
        assert options["forwarded_allow_ips"] == []
        configured = Settings(trusted_proxies=" 10.0.0.1, 192.168.0.0/16 ,::1")
        options = uvicorn_options(configured, host="127.0.0.1", port=8000)
        assert options["proxy_headers"] is True
        assert options["forwarded_allow_ips"] == ["10.0.0.1/32", "192.168.0.0/16", "::1/128"]

    def test_a_bad_proxy_address_stops_start_up(self) -> None:
        """A value that is not an address or network is an error, not "trust nobody"."""
        with pytest.raises(ValueError, match="not an IP address"):
            Settings(trusted_proxies="proxy.internal")


class TestRawPathErrors:
    """Finding c: errors of the asyncpg statements carry no bound value."""

    async def test_a_unique_violation_names_the_index_but_no_value(
        self, db: Database, tenant: Tenant
    ) -> None:
        """A duplicate email on the raw path: the error (and its traceback) names the index,
        not the email or the password hash."""
        email = tenant.admin_email
        with pytest.raises(IntegrityError) as caught:
            async with db.tenant(tenant.org_id) as conn:
                await raw.execute(
                    conn,
                    "INSERT INTO users (org_id, id, email, name, password_hash, role)"
                    " VALUES ($1, $2, $3, 'x', $4, 'TECHNICIAN')",
                    tenant.org_id,
                    uuid.uuid4(),
                    email.upper(),
                    PASSWORD_HASH,
                )
        text = "".join(traceback.format_exception(caught.value))
        assert "uq_users_email" in str(caught.value.orig)
        assert "uq_users_email" in text
        for value in (email, email.upper(), PASSWORD_HASH, str(tenant.org_id)):
            assert value not in text
            assert value.lower() not in text.lower()
        assert caught.value.params is None

    async def test_a_data_error_hides_the_value(self, db: Database, tenant: Tenant) -> None:
        """Server-side and client-side conversion errors hide the value they quote."""
        secret = "tok-" + uuid.uuid4().hex
        for sql in ("SELECT $1::text::int", "SELECT $1::uuid"):
            with pytest.raises(DBAPIError) as caught:
                async with db.tenant(tenant.org_id) as conn:
                    await raw.fetch(conn, sql, secret)
            text = "".join(traceback.format_exception(caught.value))
            assert secret not in text
            assert "(value hidden)" in text

    async def test_logged_tracebacks_have_no_value(self, db: Database, tenant: Tenant) -> None:
        """What gets logged (the traceback as the log configuration renders it) holds no
        value, on the raw path and on the SQLAlchemy engine's, whose error chains asyncpg's.
        (Under row-level security PostgreSQL already leaves the key out of DETAIL; the
        owner's connections do not have that protection, see the next test.)"""
        secret = "tok-" + uuid.uuid4().hex
        with pytest.raises(DBAPIError) as raw_error:
            async with db.tenant(tenant.org_id) as conn:
                await raw.fetch(conn, "SELECT 1 / 0 WHERE $1::text IS NOT NULL", secret)
        logged = format_exception(
            (type(raw_error.value), raw_error.value, raw_error.value.__traceback__)
        )
        assert "division by zero" in logged
        assert secret not in logged

        email = tenant.admin_email.upper()
        with pytest.raises(IntegrityError) as engine_error:
            async with db.tenant(tenant.org_id) as conn:
                await create_user(
                    conn,
                    org_id=tenant.org_id,
                    email=email,
                    name="x",
                    password_hash=PASSWORD_HASH,
                    role="TECHNICIAN",
                )
        exc = engine_error.value
        logged = format_exception((type(exc), exc, exc.__traceback__))
        assert "uq_users_email" in logged
        assert email.lower() not in logged.lower()
        assert PASSWORD_HASH not in logged

    def test_tracebacks_are_scrubbed_of_detail_and_quoted_input(self) -> None:
        """The log's exception formatter drops DETAIL values and quoted bad input."""
        try:
            try:
                raise ValueError('invalid input syntax for type uuid: "tok-secret"')
            except ValueError as inner:
                raise RuntimeError(
                    'duplicate key value violates unique constraint "uq_users_email"\n'
                    "DETAIL:  Key (lower(email))=(someone@example.com) already exists."
                ) from inner
        except RuntimeError as exc:
            logged = format_exception((type(exc), exc, exc.__traceback__))
        assert "uq_users_email" in logged
        assert "DETAIL:  (hidden)" in logged
        assert "invalid input syntax for type uuid: (value hidden)" in logged
        assert "someone@example.com" not in logged
        assert "tok-secret" not in logged


class TestQueryStringTokensInLogs:
    """Finding d: a token in a query string never reaches a log line."""

    async def test_a_websocket_token_in_the_url_is_logged_redacted(
        self, direct_server: ServerProcess, tenant: Tenant
    ) -> None:
        """`/graphql?token=...` is refused, and uvicorn's handshake line shows no token."""
        token = tenant.admin.token
        assert token is not None
        socket = await Socket.open(f"{direct_server.ws_url}?token={token}&x=1", init=False)
        await socket.send({"type": "connection_init", "payload": {}})
        with pytest.raises((ConnectionClosed, asyncio.TimeoutError)):
            await socket.recv(5)
        deadline = time.monotonic() + 5
        while "token=[redacted]" not in direct_server.output():
            assert time.monotonic() < deadline, direct_server.output()
            await asyncio.sleep(0.1)
        output = direct_server.output()
        assert token not in output
        assert token.split(".")[-1] not in output
        assert "/graphql?token=[redacted]&x=[redacted]" in output

    def test_uvicorn_access_lines_keep_their_shape(self) -> None:
        """The filter redacts uvicorn's access-log arguments one by one (its formatter
        unpacks them)."""
        record = logging.LogRecord(
            "uvicorn.access",
            logging.INFO,
            __file__,
            1,
            '%s - "%s %s HTTP/%s" %d',
            ("127.0.0.1:5000", "GET", "/graphql?query=%7Bme%7D&token=abc.def", "1.1", 200),
            None,
        )
        assert RedactQueryStrings().filter(record)
        assert record.getMessage() == (
            '127.0.0.1:5000 - "GET /graphql?query=[redacted]&token=[redacted] HTTP/1.1" 200'
        )

    def test_text_without_a_query_is_unchanged(self) -> None:
        """Only what follows a `?` changes."""
        assert redact_query_strings("no query here") == "no query here"
        assert redact_query_strings("/graphql?") == "/graphql?"
        assert redact_query_strings("GET /a?secret b") == "GET /a?[redacted] b"


def requests_by_operation(body: str) -> dict[tuple[str, str], float]:
    """fieldsync_graphql_requests_total by (operation, type)."""
    return {
        (s.labels["operation"], s.labels["type"]): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
        if s.name == "fieldsync_graphql_requests_total"
    }


class TestMetricLabels:
    """Finding e: the operation label is bounded by the schema, not by callers."""

    async def test_fresh_operation_names_do_not_evict_real_ones(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        """205 unauthenticated requests with fresh names leave `me` labelled `me`."""
        before = requests_by_operation((await client.get("/metrics")).text)
        prefix = "Fresh" + uuid.uuid4().hex[:8]
        for n in range(205):
            await client.post("/graphql", json={"query": f"query {prefix}{n} {{ __typename }}"})
        await tenant.admin(ME)
        after = requests_by_operation((await client.get("/metrics")).text)
        assert after[("me", "query")] == before.get(("me", "query"), 0) + 1
        assert after[("__typename", "query")] >= before.get(("__typename", "query"), 0) + 205
        assert not [label for label, _ in after if label.startswith(prefix)]
        assert after.get(("other", "query"), 0) == before.get(("other", "query"), 0)

    async def test_labels_are_root_fields_or_a_fixed_word(
        self, client: httpx.AsyncClient, tenant: Tenant
    ) -> None:
        """Several root fields count as `multiple`; a document that does not validate (an
        unknown field, whatever its name) as `invalid`."""
        before = requests_by_operation((await client.get("/metrics")).text)
        await tenant.admin("query Both { me { id } users { id } }")
        await client.post("/graphql", json={"query": "query X { unknownField" + "a" * 50 + " }"})
        after = requests_by_operation((await client.get("/metrics")).text)
        assert after[("multiple", "query")] == before.get(("multiple", "query"), 0) + 1
        assert after[("invalid", "query")] == before.get(("invalid", "query"), 0) + 1
        assert not [label for label, _ in after if label.startswith("unknownField")]


class TestUserEmailsAcrossTenants:
    """Finding f: createUser says no more than "this address cannot be used"."""

    async def test_taken_elsewhere_reads_like_taken_here(
        self, tenant: Tenant, other_tenant: Tenant
    ) -> None:
        """An email of another tenant's user and one of this tenant's get the same answer,
        which names neither the address nor where it is used."""
        answers = []
        for email in (other_tenant.admin_email, tenant.admin_email):
            data = await tenant.admin(
                CREATE_USER,
                {"input": {"email": email.upper(), "name": "X", "password": PASSWORD}},
            )
            answers.append(data["createUser"])
        assert (
            answers[0]
            == answers[1]
            == {
                "__typename": "Duplicate",
                "code": "DUPLICATE",
                "message": EMAIL_UNAVAILABLE,
            }
        )
        assert other_tenant.admin_email not in EMAIL_UNAVAILABLE


class TestRevealWindowPerTenant:
    """Finding g: the per-address reveal window is counted per tenant."""

    async def test_one_tenant_does_not_use_up_anothers_window(
        self, settings: Settings, db: Database, tenant: Tenant, other_tenant: Tenant
    ) -> None:
        """Tenant A exhausting an address's window leaves tenant B's reveals from that
        address alone."""
        creds = []
        for t in (tenant, other_tenant):
            customer = await make_customer(t.admin)
            creds.append(
                await make_credential(t.admin, {"customerId": customer["id"]}, password="pw")
            )
        overrides = {"reveal_rate_per_address_per_minute": 1, "reveal_rate_per_minute": 10}
        async with client_from(settings, db, unique_address(), **overrides) as c:
            a, b = Api(c, tenant.admin.token), Api(c, other_tenant.admin.token)
            assert (await reveal(a, creds[0]["id"]))["__typename"] == "RevealedPassword"
            assert (await reveal(a, creds[0]["id"]))["__typename"] == "RateLimited"
            assert (await reveal(b, creds[1]["id"]))["__typename"] == "RevealedPassword"
