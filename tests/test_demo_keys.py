"""The demo tenant from first start to real keys.

`serve --demo` seeds credentials (public and internal, encrypted with the public demo
key); a server started with a real FIELDSYNC_MASTER_KEYS still reads them; leaving the
demo key is one command, `fieldsync rotate-keys`, that needs no value from the source;
afterwards a server with nothing but the real key reveals every password.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import make_url, text

from db.engine import create_engine, to_async_url
from tests.conftest import LOGIN, Api, free_port

REAL_KEY = base64.b64encode(hashlib.sha256(b"fieldsync test: a real key").digest()).decode()
CREDENTIALS = """{ credentials(first: 20) { totalCount edges { node { id name isPublic
  hasPassword } } } }"""
REVEAL = """mutation($id: ID!) { revealCredentialPassword(id: $id) { __typename
  ... on RevealedPassword { password } ... on UserError { code message } } }"""


@pytest.fixture
def fresh_database(database_url: str) -> Iterator[str]:
    """An empty database of its own (demo seeding needs one; rotation reads all tenants)."""
    base = make_url(database_url).set(database="postgres")
    name = f"fieldsync_demo_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        engine = create_engine(to_async_url(base.render_as_string(False)), pool_size=1)
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(sql))
        await engine.dispose()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    yield base.set(database=name).render_as_string(False)
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def cli_env(url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FIELDSYNC_") and k != "DATABASE_URL"
    }
    return {
        **env,
        "DATABASE_URL": url,
        "FIELDSYNC_DATA_DIR": str(data_dir),
        "COLUMNS": "250",
        # Each step reveals every credential again: more than 10 a minute in all.
        "FIELDSYNC_REVEAL_RATE_PER_MINUTE": "1000",
        **extra,
    }


class Server:
    """A `fieldsync serve` process, stopped by its pid."""

    def __init__(self, env: dict[str, str], log: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "server", "serve", "--port", str(self.port), *args],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.3)
        self.stop()
        pytest.fail(f"server did not become ready:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


async def reveal_all(url: str, email: str, password: str) -> dict[str, tuple[bool, str]]:
    """Every credential's name -> (public, revealed password) as the admin."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        login = await Api(client)(LOGIN, {"email": email, "password": password})
        assert login["login"]["__typename"] == "LoginSuccess", login
        admin = Api(client, login["login"]["token"])
        listed = await admin(CREDENTIALS)
        found = {}
        for edge in listed["credentials"]["edges"]:
            node = edge["node"]
            result = (await admin(REVEAL, {"id": node["id"]}))["revealCredentialPassword"]
            assert result["__typename"] == "RevealedPassword", (node["name"], result)
            found[node["name"]] = (node["isPublic"], result["password"])
        return found


def test_demo_credentials_then_leave_the_demo_key_with_one_command(fresh_database, tmp_path):
    """Seeded credentials reveal; with a real key configured they still do (the demo key
    is kept readable, with a warning); `rotate-keys` re-wraps them without being given
    the demo key; then a server with only the real key reveals them all."""
    data_dir = tmp_path / "state"
    demo = Server(cli_env(fresh_database, data_dir), tmp_path / "demo.log", "--demo")
    try:
        seeded_log = demo.output()
        match = re.search(r"admin@demo\.fieldsync\.dev  password: (\S+)", seeded_log)
        assert match, seeded_log
        admin_password = match.group(1)
        before = asyncio.run(reveal_all(demo.url, "admin@demo.fieldsync.dev", admin_password))
    finally:
        demo.stop()
    assert len(before) == 4
    assert sorted(public for public, _ in before.values()) == [False, False, True, True]
    assert all(password.startswith("demo-") for _, password in before.values())

    real = {"FIELDSYNC_MASTER_KEYS": f"k1:{REAL_KEY}"}
    online = Server(cli_env(fresh_database, data_dir, **real), tmp_path / "online.log", "--demo")
    try:
        warning = " ".join(online.output().split())
        assert "4 credential password(s) are still encrypted with the public demo key" in warning
        assert "fieldsync rotate-keys --to k1" in warning
        assert "DEMO MODE" not in warning
        accounts = asyncio.run(reveal_all(online.url, "admin@demo.fieldsync.dev", admin_password))
        assert accounts == before
        rotated = subprocess.run(
            [sys.executable, "-m", "server", "rotate-keys"],
            env=cli_env(fresh_database, data_dir, **real),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert rotated.returncode == 0, rotated.stderr
        said = " ".join(rotated.stderr.split())
        assert "Re-wrapped 4 credential(s) with key 'k1'" in said
        assert "No credential uses the demo key 'demo-not-secret' any more" in said
        # Online: the running server reads the re-wrapped passwords at once.
        assert asyncio.run(reveal_all(online.url, "admin@demo.fieldsync.dev", admin_password)) == (
            before
        )
    finally:
        online.stop()

    secret = (data_dir / "secret_key").read_text().strip()
    final = Server(
        cli_env(fresh_database, data_dir, FIELDSYNC_SECRET_KEY=secret, **real),
        tmp_path / "final.log",
    )
    try:
        assert "demo key" not in final.output()
        after = asyncio.run(reveal_all(final.url, "admin@demo.fieldsync.dev", admin_password))
    finally:
        final.stop()
    assert after == before
