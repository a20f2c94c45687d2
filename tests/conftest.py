"""Fixtures: a real PostgreSQL (DATABASE_URL's server, else the embedded one), migrated
once per run; the app in-process over httpx; a fresh tenant per test; a live server."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, make_url, text

from db.auth import hash_password
from db.engine import Database, create_engine, to_async_url
from db.migrate import upgrade
from db.seed import create_org_with_admin
from server.app import create_app
from server.settings import Settings

SECRET = "test-secret-key-" + "x" * 32
PASSWORD = "correct-horse-battery"
# Master keys of the credential key ring (fixed, test-only): new data keys use the first.
TEST_KEYS = {
    name: base64.b64encode(hashlib.sha256(f"fieldsync test key {name}".encode()).digest()).decode()
    for name in ("test-a", "test-b")
}
MASTER_KEYS = ",".join(f"{name}:{key}" for name, key in TEST_KEYS.items())
ACTIVE_KEY_ID = "test-a"
# Hashing is deliberately slow; tests reuse one hash for every user they create.
PASSWORD_HASH = hash_password(PASSWORD)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh database for this run on the chosen server, dropped afterwards.

    The embedded server lives in its own temporary directory, not under pytest's basetemp:
    pytest prunes old basetemps, and a concurrent run would delete a live data directory.
    """
    embedded_dir: Path | None = None
    if os.environ.get("DATABASE_URL"):
        server_url = os.environ["DATABASE_URL"]
    else:
        from server.embedded import start_embedded

        embedded_dir = Path(tempfile.mkdtemp(prefix="fieldsync-test-pg-"))
        server_url = start_embedded(embedded_dir)
    base = make_url(server_url)
    name = f"fieldsync_test_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        engine = create_engine(to_async_url(base.render_as_string(False)), pool_size=1)
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(sql))
        await engine.dispose()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    url = base.set(database=name).render_as_string(False)
    upgrade(url, app_role="fieldsync_app", app_password=None)
    yield url
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    if embedded_dir is not None:
        from server.embedded import stop_embedded

        stop_embedded(embedded_dir)
        shutil.rmtree(embedded_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    """Settings pointing at the test database."""
    return Settings(
        database_url=database_url,
        secret_key=SECRET,
        graphiql=True,
        master_keys=MASTER_KEYS,
        active_key_id=ACTIVE_KEY_ID,
        # Every in-process request comes from one address (127.0.0.1): per-address limits
        # would count the whole suite; tests/api/test_rate_limits.py tests them with their own.
        login_rate_per_address=1_000_000,
        reveal_rate_per_address_per_minute=1_000_000,
    )


@pytest.fixture(scope="session")
async def db(settings: Settings) -> AsyncIterator[Database]:
    """The app-role pool (RLS applies), shared by the run."""
    assert settings.database_url is not None
    database = Database.connect(
        settings.database_url, app_role=settings.app_role, app_password=None, pool_size=5
    )
    yield database
    await database.close()


@dataclass
class StatementCounter:
    """Counts SQL statements the app sends (for N+1 assertions)."""

    count: int = 0
    statements: list[str] = field(default_factory=list)

    def reset(self) -> None:
        """Start counting from zero."""
        self.count = 0
        self.statements.clear()


@pytest.fixture(scope="session")
def statements(db: Database) -> StatementCounter:
    """Statement counter attached to the app pool."""
    counter = StatementCounter()

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        counter.count += 1
        counter.statements.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", before)
    return counter


@pytest.fixture(scope="session")
async def client(settings: Settings, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    """The app in-process over HTTP."""
    app = create_app(settings, database=db)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://fieldsync.test") as c:
        yield c


@dataclass
class Api:
    """Sends GraphQL over HTTP as one user."""

    client: httpx.AsyncClient
    token: str | None = None

    async def post(self, query: str, variables: dict[str, Any] | None = None) -> httpx.Response:
        """Raw POST."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return await self.client.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )

    async def __call__(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """Execute and return ``data``; fails the test on any GraphQL error."""
        response = await self.post(query, variables)
        body = response.json()
        assert "errors" not in body, body["errors"]
        assert response.status_code == 200, body
        return body["data"]  # type: ignore[no-any-return]

    async def errors(
        self, query: str, variables: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Execute expecting errors; returns them."""
        body = (await self.post(query, variables)).json()
        assert body.get("errors"), body
        return body["errors"]  # type: ignore[no-any-return]


LOGIN = """mutation($email: String!, $password: String!) {
  login(email: $email, password: $password) {
    __typename ... on LoginSuccess { token } ... on InvalidCredentials { message } } }"""


@dataclass
class Tenant:
    """A fresh tenant with an admin signed in."""

    org_id: uuid.UUID
    admin_email: str
    admin: Api
    client: httpx.AsyncClient

    async def login(self, email: str, password: str = PASSWORD) -> Api:
        """Sign in another user of this tenant."""
        data = await Api(self.client)(LOGIN, {"email": email, "password": password})
        assert data["login"]["__typename"] == "LoginSuccess", data
        return Api(self.client, data["login"]["token"])

    async def add_user(self, role: str = "TECHNICIAN", **caps: bool) -> Api:
        """Create a user through the API and sign them in."""
        email = f"{role.lower()}-{uuid.uuid4().hex[:8]}@example.com"
        data = await self.admin(
            """mutation($input: CreateUserInput!) { createUser(input: $input) {
                 __typename ... on UserError { message } } }""",
            {
                "input": {
                    "email": email,
                    "name": "User",
                    "password": PASSWORD,
                    "role": role,
                    "capabilities": caps or None,
                }
            },
        )
        assert data["createUser"]["__typename"] == "User", data
        return await self.login(email)


async def new_tenant(db: Database, client: httpx.AsyncClient) -> Tenant:
    """Create a tenant and sign its admin in."""
    email = f"admin-{uuid.uuid4().hex[:10]}@example.com"
    org_id = await create_org_with_admin(
        db, org_name="Test Dealer", email=email, password_hash=PASSWORD_HASH
    )
    anon = Api(client)
    data = await anon(LOGIN, {"email": email, "password": PASSWORD})
    return Tenant(
        org_id=org_id, admin_email=email, admin=Api(client, data["login"]["token"]), client=client
    )


@pytest.fixture
async def tenant(db: Database, client: httpx.AsyncClient) -> Tenant:
    """A fresh tenant per test: no test sees another's rows."""
    return await new_tenant(db, client)


@pytest.fixture
async def other_tenant(db: Database, client: httpx.AsyncClient) -> Tenant:
    """A second, unrelated tenant."""
    return await new_tenant(db, client)


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    """A `fieldsync serve` process on 127.0.0.1."""

    url: str
    admin_email: str
    admin_password: str
    process: subprocess.Popen[bytes]


@pytest.fixture(scope="session")
def live_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A real server process on the test database, stopped by its pid at the end."""
    email = f"live-admin-{uuid.uuid4().hex[:8]}@example.com"
    workdir = tmp_path_factory.mktemp("live")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "server",
            "create-admin",
            "--email",
            email,
            "--password",
            PASSWORD,
            "--org-name",
            "Live Dealer",
        ],
        env=server_env(database_url, workdir),
        check=True,
        capture_output=True,
    )
    server = spawn_server(database_url, workdir)
    yield LiveServer(
        url=server.url, admin_email=email, admin_password=PASSWORD, process=server.process
    )
    stop_server(server)


@dataclass
class ServerProcess:
    """A `fieldsync serve` process started by a test fixture (stopped by its pid)."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def ws_url(self) -> str:
        """The graphql-transport-ws endpoint."""
        return self.url.replace("http://", "ws://", 1) + "/graphql"

    def output(self) -> str:
        """What the server logged so far (for failure messages)."""
        return self.log.read_text(errors="replace")


def server_env(
    database_url: str, workdir: Path, extra_env: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of a server process (and its CLI commands) on the test database."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "FIELDSYNC_SECRET_KEY": SECRET,
        "FIELDSYNC_MASTER_KEYS": MASTER_KEYS,
        "FIELDSYNC_ACTIVE_KEY_ID": ACTIVE_KEY_ID,
        "FIELDSYNC_DATA_DIR": str(workdir),
        **(extra_env or {}),
    }


def spawn_server(
    database_url: str, workdir: Path, extra_env: dict[str, str] | None = None
) -> ServerProcess:
    """Start `fieldsync serve` on 127.0.0.1 and wait until it is ready."""
    port = free_port()
    env = server_env(database_url, workdir, extra_env)
    log = workdir / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "server", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = ServerProcess(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{server.url}/readyz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_server(server)
    pytest.fail(f"server did not become ready:\n{server.output()}")


def stop_server(server: ServerProcess) -> None:
    """SIGTERM the server by its pid (graceful), SIGKILL if it hangs."""
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=5)


# Short intervals so the subscription tests see re-checks and listener recovery quickly.
LIVE_TEST_ENV = {
    "FIELDSYNC_LIVE_RECHECK_SECONDS": "0.5",
    "FIELDSYNC_LISTENER_HEALTH_SECONDS": "1",
    "FIELDSYNC_WS_INIT_TIMEOUT_SECONDS": "2",
    "FIELDSYNC_WS_SEND_BUFFER_BYTES": "262144",
    "FIELDSYNC_WS_PING_SECONDS": "1",
}


@pytest.fixture(scope="session")
def server_pair(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two server processes (instances A and B) on the same test database."""
    a = spawn_server(database_url, tmp_path_factory.mktemp("instance-a"), LIVE_TEST_ENV)
    try:
        b = spawn_server(database_url, tmp_path_factory.mktemp("instance-b"), LIVE_TEST_ENV)
    except BaseException:
        stop_server(a)
        raise
    yield a, b
    stop_server(b)
    stop_server(a)


JS_DIR = Path(__file__).parent / "js"


@pytest.fixture(scope="session")
def js_packages() -> Path:
    """tests/js with its npm packages (graphql-ws, graphql-http, @apollo/client) installed
    from the lock file."""
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node, "Node.js 20+ is needed for the JavaScript client tests"
    assert npm, "npm is needed to install their packages"
    wanted = ("graphql-ws", "graphql-http", "@apollo/client", "graphql-schema-linter")
    if not all((JS_DIR / "node_modules" / name).is_dir() for name in wanted):
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=JS_DIR,
            check=True,
            capture_output=True,
            timeout=300,
        )
    return JS_DIR
