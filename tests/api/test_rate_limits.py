"""Rate limits (issue #7 part 4): logins and reveals per email/user and per client address."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from db.engine import Database
from server.app import create_app
from server.settings import Settings
from tests.api.credential_queries import make_credential, reveal
from tests.api.queries import make_customer
from tests.conftest import PASSWORD, Api, Tenant

LOGIN = """mutation($email: String!, $password: String!) {
  login(email: $email, password: $password) {
    __typename
    ... on LoginSuccess { token }
    ... on UserError { code message }
    ... on RateLimited { retryAfterSeconds } } }"""


def unique_address() -> str:
    """An address no other test uses: windows are shared through the database."""
    n = uuid.uuid4().int
    return f"10.{n % 250}.{(n >> 8) % 250}.{(n >> 16) % 250 + 1}"


@asynccontextmanager
async def client_from(
    settings: Settings, db: Database, address: str, **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process app with ``overrides``, called from ``address``."""
    app = create_app(settings.model_copy(update=overrides), database=db)
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://fieldsync.test") as c:
        yield c


async def login(client: httpx.AsyncClient, email: str, password: str) -> dict[str, Any]:
    """The login result."""
    data = await Api(client)(LOGIN, {"email": email, "password": password})
    return data["login"]  # type: ignore[no-any-return]


class TestLoginPerEmail:
    async def test_failures_past_the_limit_are_refused(self, settings, db, tenant: Tenant) -> None:
        """`login_rate_per_email` failures pass; the next attempt (even right) is RATE_LIMITED."""
        async with client_from(settings, db, unique_address(), login_rate_per_email=3) as c:
            for _ in range(3):
                wrong = await login(c, tenant.admin_email, "wrong password")
                assert wrong["__typename"] == "InvalidCredentials"
            limited = await login(c, tenant.admin_email, PASSWORD)
            # Case and spaces do not make a new key.
            again = await login(c, f"  {tenant.admin_email.upper()} ", "wrong password")
        assert limited["__typename"] == "RateLimited", limited
        assert limited["code"] == "RATE_LIMITED"
        assert 1 <= limited["retryAfterSeconds"] <= settings.login_rate_window_seconds + 1
        assert again["__typename"] == "RateLimited"

    async def test_successes_do_not_count(self, settings, db, tenant: Tenant) -> None:
        """Signing in successfully more often than the limit is fine."""
        async with client_from(settings, db, unique_address(), login_rate_per_email=2) as c:
            results = [await login(c, tenant.admin_email, PASSWORD) for _ in range(4)]
            wrong = await login(c, tenant.admin_email, "wrong password")
        assert [r["__typename"] for r in results] == ["LoginSuccess"] * 4
        assert wrong["__typename"] == "InvalidCredentials"

    async def test_another_email_is_not_limited(self, settings, db, tenant: Tenant) -> None:
        """The per-email window is per email."""
        other = f"nobody-{uuid.uuid4().hex[:8]}@example.com"
        async with client_from(settings, db, unique_address(), login_rate_per_email=1) as c:
            assert (await login(c, other, "x"))["__typename"] == "InvalidCredentials"
            assert (await login(c, other, "x"))["__typename"] == "RateLimited"
            assert (await login(c, tenant.admin_email, PASSWORD))["__typename"] == "LoginSuccess"


class TestLoginPerAddress:
    async def test_failures_past_the_limit_are_refused(self, settings, db, tenant: Tenant) -> None:
        """Failures with many emails from one address: the one past the limit is refused."""
        address = unique_address()
        overrides = {"login_rate_per_address": 3, "login_rate_per_email": 100}
        async with client_from(settings, db, address, **overrides) as c:
            for _ in range(3):
                email = f"guess-{uuid.uuid4().hex[:8]}@example.com"
                assert (await login(c, email, "x"))["__typename"] == "InvalidCredentials"
            limited = await login(c, tenant.admin_email, PASSWORD)
        assert limited["__typename"] == "RateLimited"
        assert limited["code"] == "RATE_LIMITED"
        async with client_from(settings, db, unique_address(), **overrides) as c:
            assert (await login(c, tenant.admin_email, PASSWORD))["__typename"] == "LoginSuccess"


class TestRevealPerAddress:
    async def test_reveals_past_the_limit_are_refused(self, settings, db, tenant: Tenant) -> None:
        """Two users behind one address share its per-minute reveal window."""
        customer = await make_customer(tenant.admin)
        cred = await make_credential(tenant.admin, {"customerId": customer["id"]}, password="pw")
        tech = await tenant.add_user("TECHNICIAN", viewCredentials=True)
        overrides = {"reveal_rate_per_address_per_minute": 2, "reveal_rate_per_minute": 10}
        async with client_from(settings, db, unique_address(), **overrides) as c:
            admin, other = Api(c, tenant.admin.token), Api(c, tech.token)
            assert (await reveal(admin, cred["id"]))["__typename"] == "RevealedPassword"
            assert (await reveal(admin, cred["id"]))["__typename"] == "RevealedPassword"
            limited = await reveal(other, cred["id"])
        assert limited["__typename"] == "RateLimited", limited
        assert limited["code"] == "RATE_LIMITED"
        assert 1 <= limited["retryAfterSeconds"] <= 61
        assert "per address" in limited["message"]
        async with client_from(settings, db, unique_address(), **overrides) as c:
            assert (await reveal(Api(c, tech.token), cred["id"]))[
                "__typename"
            ] == "RevealedPassword"
