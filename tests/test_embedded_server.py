"""`fieldsync serve --demo` on the embedded PostgreSQL: starts from nothing, keeps its data
across restarts, and stops the database when the server stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

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
        if k not in ("DATABASE_URL", "FIELDSYNC_MASTER_KEYS", "FIELDSYNC_SECRET_KEY")
    }
    env["FIELDSYNC_DATA_DIR"] = str(data_dir)
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
        data_dir = tmp_path / "state"
        log_path = tmp_path / "serve.log"
        with log_path.open("wb") as log:
            process, _ = serve(data_dir, log)
            stop(process)
            time.sleep(1)
            assert postgres_processes(data_dir) == []
            process, port = serve(data_dir, log)
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz").json()
                assert ready == {
                    "status": "ready",
                    "database": "ok",
                    "migration": ready["migration"],
                }
            finally:
                stop(process)
        text = log_path.read_text()
        assert "Demo tenant seeded" in text
        assert "demo seed skipped" in text
        time.sleep(1)
        assert postgres_processes(data_dir) == []
