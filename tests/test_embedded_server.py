"""`fieldsync serve --demo` on the embedded PostgreSQL: starts from nothing, keeps its data
across restarts (printing the demo accounts again), and stops the database when the
server stops. Stops during start-up: tests/test_startup_signals.py."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from tests.conftest import free_port


def postgres_processes(data_dir) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if proc.info["name"] == "postgres" and str(data_dir) in cmdline:
            found.append(proc)
    return found


def serve(data_dir, log):
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "DATABASE_URL",
            "FIELDSYNC_MASTER_KEYS",
            "FIELDSYNC_SECRET_KEY",
            # As in containers and ssh sessions: the embedded server must not warn about it.
            "XDG_RUNTIME_DIR",
        )
    }
    env["FIELDSYNC_DATA_DIR"] = str(data_dir)
    env["COLUMNS"] = "250"  # rich wraps at 80 columns otherwise
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--demo", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).json()["status"] == "ready":
                return process, port
        except (httpx.HTTPError, ValueError):
            pass
        assert process.poll() is None, "server exited"
        time.sleep(0.3)
    process.kill()
    raise AssertionError("server did not become ready")


def stop(process) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)


class TestEmbeddedServe:
    def test_demo_serves_restarts_and_stops_its_database(self, tmp_path):
        """The first run seeds the demo tenant; a restart keeps the data and skips the seed;
        stopping the server stops its PostgreSQL."""
        # Outside pytest's basetemp: a concurrent pytest run re-modes it (0700) and prunes
        # it, and the embedded server runs as its own user.
        root = Path(tempfile.mkdtemp(prefix="fieldsync-embedded-"))
        try:
            self.demo_serves_restarts_and_stops(root / "state", tmp_path)
        finally:
            for proc in postgres_processes(root / "state"):
                proc.kill()
            shutil.rmtree(root, ignore_errors=True)

    def demo_serves_restarts_and_stops(self, data_dir: Path, tmp_path: Path) -> None:
        log_path = tmp_path / "serve.log"
        with log_path.open("wb") as log:
            process, _ = serve(data_dir, log)
            stop(process)
            time.sleep(1)
            assert postgres_processes(data_dir) == []
            first_run = log_path.read_text()
            process, port = serve(data_dir, log)
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz").json()
                assert ready == {
                    "status": "ready",
                    "database": "ok",
                    "migration": ready["migration"],
                }
                # The bare address sends a browser to GraphiQL.
                home = httpx.get(f"http://127.0.0.1:{port}/", follow_redirects=False)
                assert home.status_code == 307
                assert home.headers["location"] == "/graphql"
            finally:
                stop(process)
        text = log_path.read_text()
        second_run = text[len(first_run) :]
        assert "Demo tenant seeded: 200 customers" in first_run
        assert "4 credentials (2 public, 2 internal" in first_run
        assert "Starting embedded PostgreSQL" in first_run
        assert "demo seed skipped" in second_run
        # The accounts (same passwords) again: nothing changed them since seeding.
        seeded = re.findall(r"(\S+@demo\.fieldsync\.dev)  password: (\S+)", first_run)
        assert len(seeded) == 3
        for email, password in seeded:
            assert f"{email}  password: {password}" in second_run
        assert "fieldsync reset-password EMAIL" in second_run
        for noise in ("RuntimeDirWarning", "XDG_RUNTIME_DIR", "SeedCounts("):
            assert noise not in text
        time.sleep(1)
        assert postgres_processes(data_dir) == []
