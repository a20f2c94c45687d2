"""Benchmark helpers: a throw-away database, a live `fieldsync serve` process, a GraphQL
client over HTTP and an RSS sampler for the server's processes.

Everything binds 127.0.0.1; everything started here is stopped by its pid (server) or
dropped by name (database) in ``finally`` blocks of the callers' context managers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil  # type: ignore[import-untyped]
from sqlalchemy import make_url, text

from db.auth import hash_password
from db.engine import Database, create_engine, to_async_url
from db.migrate import upgrade
from db.seed import create_org_with_admin, ensure_demo_fields

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
APP_ROLE = "fieldsync_app"
ROOT = Path(__file__).resolve().parent.parent

LOGIN = """mutation($email: String!, $password: String!) {
  login(email: $email, password: $password) {
    __typename ... on LoginSuccess { token } ... on InvalidCredentials { message } } }"""

# The documents of tests/api/sync_client.py (same selections, wrapped).
REGISTER = """mutation($input: RegisterDeviceInput!) { registerDevice(input: $input) {
  __typename ... on Device { id replicaId selectionMode } ... on UserError { message } } }"""

PULL = """query($d: ID!, $since: String, $limit: Int!) {
  pull(deviceId: $d, since: $since, limit: $limit) {
  checkpoint hasMore reset
  changes { entity recordId customerId op version data } } }"""

PUSH = """mutation($d: ID!, $changes: [ChangeInput!]!) {
  pushChanges(deviceId: $d, changes: $changes) {
  __typename
  ... on PushResult { reregisterRequired results {
      clientMutationId entity recordId outcome version conflictId
      conflicts { field serverValue clientValue } fieldErrors { field message } message replayed } }
  ... on UserError { code message } } }"""


def log(message: str) -> None:
    """Progress on stderr, figures go to stdout."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def base_url() -> str:
    """The owner URL of the PostgreSQL server to benchmark on."""
    return os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL


def machine() -> str:
    """Cores and load, printed with the figures: other processes skew a 2-core machine."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores, load average {load}"


def median(values: list[float]) -> float:
    """Median of a non-empty list."""
    return statistics.median(values)


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- database


async def _admin_sql(url: str, sql: str) -> None:
    engine = create_engine(to_async_url(url), pool_size=1)
    try:
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


@contextlib.contextmanager
def bench_database() -> Iterator[str]:
    """A fresh, migrated ``fieldsync_bench_<random>`` database; dropped (FORCE) at the end.

    Sync on purpose: alembic runs its own event loop, so call this outside ``asyncio.run``.
    """
    base = make_url(base_url())
    name = f"fieldsync_bench_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin_sql(base_url(), f'CREATE DATABASE "{name}"'))
    try:
        url = base.set(database=name).render_as_string(False)
        log(f"database {name} created; migrating")
        upgrade(url, app_role=APP_ROLE, app_password=None)
        yield url
    finally:
        asyncio.run(_admin_sql(base_url(), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        log(f"database {name} dropped")


PASSWORD = "bench-password-123"  # noqa: S105 - throw-away bench tenants


async def bench_tenant(db: Database, org_name: str = "Bench Dealer") -> tuple[uuid.UUID, str]:
    """A fresh tenant and its admin (password ``PASSWORD``); returns the org id and email.

    With the demo custom field definitions, as `fieldsync seed` makes them: seeded records
    carry values for them, and validation of later writes checks them.
    """
    email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
    org_id = await create_org_with_admin(
        db, org_name=org_name, email=email, password_hash=hash_password(PASSWORD)
    )
    async with db.tenant(org_id) as conn:
        await ensure_demo_fields(conn, org_id)
    return org_id, email


def app_database(url: str, pool_size: int = 4) -> Database:
    """The app-role pool (RLS applies), for seeding through the write path."""
    return Database.connect(url, app_role=APP_ROLE, app_password=None, pool_size=pool_size)


def asyncpg_dsn(url: str) -> str:
    """A plain libpq URL asyncpg accepts (no SQLAlchemy driver suffix)."""
    return make_url(url).set(drivername="postgresql").render_as_string(False)


# --------------------------------------------------------------------------- server


@dataclass
class Server:
    """A `python -m server serve` process on 127.0.0.1."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    workers: int

    @property
    def pid(self) -> int:
        """The uvicorn parent's pid."""
        return self.process.pid

    def processes(self) -> list[psutil.Process]:
        """The parent and its worker processes (what serves requests)."""
        try:
            parent = psutil.Process(self.pid)
            return [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def worker_pids(self) -> list[int]:
        """Pids that run the app: the workers, or the parent when there is one process."""
        procs = self.processes()
        # uvicorn's multiprocess supervisor spawns workers (and a resource tracker with
        # spawn start method); workers are the python children that hold a listening socket.
        children = [p for p in procs[1:] if _is_python(p) and "resource_tracker" not in _cmd(p)]
        return [p.pid for p in children] if self.workers > 1 and children else [self.pid]


def _cmd(p: psutil.Process) -> str:
    with contextlib.suppress(psutil.Error):
        return " ".join(p.cmdline())
    return ""


def _is_python(p: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return "python" in p.name().lower() or "python" in _cmd(p)
    return False


def server_env(url: str) -> dict[str, str]:
    """Environment of the server process: the bench database and fresh keys."""
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "FIELDSYNC_SECRET_KEY": secrets.token_hex(32),
        "FIELDSYNC_LOG_LEVEL": "warning",
        "FIELDSYNC_MASTER_KEYS": f"k1:{key}",
        "FIELDSYNC_HOST": "127.0.0.1",
    }
    env.pop("FIELDSYNC_ACTIVE_KEY_ID", None)
    return env


@contextlib.contextmanager
def running_server(url: str, workers: int = 2, *, timeout: float = 90) -> Iterator[Server]:
    """Start the server, wait for /readyz, and stop it by its pid at the end."""
    port = free_port()
    log_dir = Path(tempfile.mkdtemp(prefix="fieldsync-bench-"))
    env = server_env(url)
    env["FIELDSYNC_DATA_DIR"] = str(log_dir / "data")
    command = ["-m", "server", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with running_process(
        "server",
        [*command, "--workers", str(workers)],
        env=env,
        port=port,
        workers=workers,
        log_path=log_dir / "server.log",
        ready_path="/readyz",
        timeout=timeout,
    ) as server:
        yield server


@contextlib.contextmanager
def running_process(
    label: str,
    arguments: list[str],
    *,
    env: dict[str, str],
    port: int,
    workers: int,
    log_path: Path,
    ready_path: str,
    timeout: float,
) -> Iterator[Server]:
    """Run ``python ARGUMENTS`` serving on ``port``; wait until ``ready_path`` answers 200
    and every worker is up; stop it (and its workers) by its pid at the end."""
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, *arguments], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )
    server = Server(f"http://127.0.0.1:{port}", process, log_path, workers)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{label} exited ({process.returncode}):\n{log_path.read_text()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{server.url}{ready_path}", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{label} not ready after {timeout}s:\n{log_path.read_text()}")
            time.sleep(0.2)
        if workers > 1:
            # Wait until every worker is up (one answering is not enough).
            for _ in range(100):
                if len(server.worker_pids()) >= workers:
                    break
                time.sleep(0.1)
        log(f"{label} pid {process.pid} ready on {server.url} (workers: {server.worker_pids()})")
        yield server
    finally:
        stop_process(process)
        log(f"{label} pid {process.pid} stopped")


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """Terminate by pid, then kill after ``timeout``; also kills leftover workers."""
    if process.poll() is None:
        try:
            children = psutil.Process(process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                if child.is_running():
                    child.kill()


# --------------------------------------------------------------------------- client


class GraphQLError(RuntimeError):
    """The response carried GraphQL errors."""


@dataclass
class Timing:
    """Where one request's client-side time went."""

    request_s: float = 0.0  # send + wait + read body (server time, transfer)
    decode_s: float = 0.0  # orjson.loads of the body on the client
    response_bytes: int = 0


@dataclass
class Api:
    """GraphQL over HTTP as one user (orjson on both sides to keep client cost small)."""

    client: httpx.AsyncClient
    token: str | None = None
    last: Timing = field(default_factory=Timing)

    async def __call__(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """Execute and return ``data``; raises on GraphQL errors or a non-200 status."""
        headers = {"content-type": "application/json"}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        body = orjson.dumps({"query": query, "variables": variables or {}})
        started = time.perf_counter()
        response = await self.client.post("/graphql", content=body, headers=headers)
        content = response.content
        received = time.perf_counter()
        payload = orjson.loads(content)
        decoded = time.perf_counter()
        self.last = Timing(received - started, decoded - received, len(content))
        if payload.get("errors"):
            raise GraphQLError(str(payload["errors"])[:2000])
        if response.status_code != 200:
            raise GraphQLError(f"HTTP {response.status_code}: {content[:2000]!r}")
        return payload["data"]  # type: ignore[no-any-return]

    async def login(self, email: str, password: str) -> Api:
        """Sign in; keeps the token on this client."""
        data = await self(LOGIN, {"email": email, "password": password})
        if data["login"]["__typename"] != "LoginSuccess":
            raise GraphQLError(f"login failed: {data}")
        self.token = data["login"]["token"]
        return self

    async def register_device(self, name: str = "bench") -> dict[str, Any]:
        """A new device (ALL mode)."""
        data = await self(REGISTER, {"input": {"name": name, "platform": "bench"}})
        if data["registerDevice"]["__typename"] != "Device":
            raise GraphQLError(f"registerDevice failed: {data}")
        return data["registerDevice"]  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def api_client(server: Server) -> AsyncIterator[Api]:
    """An unauthenticated API client for the server (one keep-alive connection)."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    # Loopback benches measure the server, not the response coding: bench.phone_link
    # measures compression where it pays, on a shaped link.
    async with httpx.AsyncClient(
        base_url=server.url,
        timeout=httpx.Timeout(300),
        limits=limits,
        headers={"Accept-Encoding": "identity"},
    ) as client:
        yield Api(client)


# --------------------------------------------------------------------------- RSS


class RssSampler:
    """Samples the RSS of given pids every ``interval`` seconds in a thread."""

    def __init__(self, pids: list[int], interval: float = 0.01) -> None:
        self.pids = pids
        self.interval = interval
        self.procs = {pid: psutil.Process(pid) for pid in pids}
        self.before: dict[int, int] = {}
        self.peak: dict[int, int] = {}
        self.after: dict[int, int] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> dict[int, int]:
        values = {}
        for pid, proc in self.procs.items():
            with contextlib.suppress(psutil.Error):
                values[pid] = proc.memory_info().rss
        return values

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid, rss in self._rss().items():
                if rss > self.peak.get(pid, 0):
                    self.peak[pid] = rss
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self.before = self._rss()
        self.peak = dict(self.before)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.after = self._rss()

    def growth(self) -> dict[int, int]:
        """Peak minus before, per pid (bytes)."""
        return {pid: self.peak.get(pid, 0) - self.before.get(pid, 0) for pid in self.pids}

    def max_growth(self) -> tuple[int, int]:
        """(pid, bytes) of the process that grew most: the worker that served the pull."""
        growth = self.growth()
        pid = max(growth, key=lambda p: growth[p])
        return pid, growth[pid]


MB = 1024 * 1024


@contextlib.contextmanager
def py_spy(server: Server, directory: Path, name: str) -> Iterator[list[Path]]:
    """``py-spy record`` (folded stacks, 200 Hz) on every worker while the block runs.

    One py-spy per worker, stopped by its pid (SIGINT makes it write the file). Folded
    files open in speedscope and summarise with ``python -m bench.fold_report``. py-spy
    takes some CPU: on 2 cores a profiled run is slower than a measured one.
    """
    directory.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    outputs: list[Path] = []
    for pid in server.worker_pids():
        out = directory / f"{name}-worker-{pid}.folded.txt"
        outputs.append(out)
        procs.append(
            subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--pid",
                    str(pid),
                    "--rate",
                    "200",
                    "--format",
                    "raw",
                    "--output",
                    str(out),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    time.sleep(1.0)
    try:
        yield outputs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def mb(value: float) -> str:
    """Bytes as MiB."""
    return f"{value / MB:.1f} MiB"


Command = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


async def serve_commands(commands: dict[str, Command], close: Callable[[], Awaitable[Any]]) -> None:
    """A load-generating child process's loop: one JSON command a line on stdin (``{"op":
    ...}``), one JSON answer a line on stdout; ``exit`` (or the end of stdin) runs ``close``
    and ends it. The parent sends commands between phases, so no answer grows with a run."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 30)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout.buffer
    while True:
        line = await reader.readline()
        if not line:
            break
        command = orjson.loads(line)
        op = command["op"]
        if op == "exit":
            await close()
            out.write(orjson.dumps({"ok": True}) + b"\n")
            out.flush()
            break
        handler = commands.get(op)
        reply = await handler(command) if handler else {"error": f"unknown op {op}"}
        out.write(orjson.dumps(reply) + b"\n")
        out.flush()


async def close_sockets(clients: Sequence[Any], tasks: Iterable[asyncio.Task[Any]]) -> None:
    """End a load process's WebSocket clients: mark each ``done`` (its loop stops reading),
    close every ``ws`` gracefully and concurrently, then cancel and await ``tasks``."""
    for client in clients:
        client.done = True

    async def close_one(client: Any) -> None:
        if client.ws is not None:
            with contextlib.suppress(Exception):
                await client.ws.close()

    await asyncio.gather(*(close_one(c) for c in clients))
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
