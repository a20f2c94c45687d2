"""`fieldsync serve` stopped at any moment of its start-up leaks nothing.

Every instance on the embedded PostgreSQL registers its pid in the server's handle file;
the last one to exit stops the database. An instance stopped while starting must still
leave that file (its exit handlers run), so that when the last live instance exits the
database stops. A second server on a busy port stops before touching the database.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server.embedded import handle_pids
from tests.conftest import free_port
from tests.test_embedded_server import postgres_processes

START_TIMEOUT = 150


def embedded_env(data_dir: Path) -> dict[str, str]:
    """The environment of a laptop without configuration: embedded PostgreSQL, demo keys."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "DATABASE_URL",
            "FIELDSYNC_MASTER_KEYS",
            "FIELDSYNC_ACTIVE_KEY_ID",
            "FIELDSYNC_SECRET_KEY",
            "XDG_RUNTIME_DIR",
        )
    }
    env["FIELDSYNC_DATA_DIR"] = str(data_dir)
    env["COLUMNS"] = "250"
    return env


class Instance:
    """A `fieldsync serve --demo` process writing to its own log."""

    def __init__(self, data_dir: Path, log: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "server", "serve", "--demo", "--port", str(self.port)],
                env=embedded_env(data_dir),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = START_TIMEOUT) -> None:
        """Until ``text`` shows in the log (fails if the process exits first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.process.poll() is not None:
                pytest.fail(f"exited before {text!r}:\n{self.output()}")
            time.sleep(0.05)
        self.kill()
        pytest.fail(f"no {text!r} within {timeout}s:\n{self.output()}")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        url = f"http://127.0.0.1:{self.port}/readyz"
        while time.monotonic() < deadline:
            try:
                if httpx.get(url, timeout=1).json().get("status") == "ready":
                    return
            except (httpx.HTTPError, ValueError):
                pass
            if self.process.poll() is not None:
                pytest.fail(f"server exited:\n{self.output()}")
            time.sleep(0.3)
        self.kill()
        pytest.fail(f"server not ready:\n{self.output()}")

    def terminate(self, timeout: float = 90) -> int:
        """SIGTERM by pid and wait for the exit; its code."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"did not exit after SIGTERM:\n{self.output()}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def wait_until_stopped(data_dir: Path, timeout: float = 30) -> list[object]:
    """The PostgreSQL processes of ``data_dir`` still running after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not postgres_processes(data_dir):
            return []
        time.sleep(0.3)
    return list(postgres_processes(data_dir))


def kill_postgres(data_dir: Path) -> None:
    """Clean-up after a failed test: the test's own PostgreSQL, found by its data dir."""
    for proc in postgres_processes(data_dir):
        proc.kill()


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data directory outside pytest's basetemp, which a concurrent pytest run re-modes
    (0700) and prunes: the embedded server, run as its own user, would lose access."""
    root = Path(tempfile.mkdtemp(prefix="fieldsync-signals-"))
    try:
        yield root / "state"
    finally:
        kill_postgres(root / "state")
        shutil.rmtree(root, ignore_errors=True)


class TestStopDuringStartup:
    def test_first_instance_stopped_while_starting_the_database_stops_it(self, data_dir, tmp_path):
        """SIGTERM while the only instance creates and starts its PostgreSQL: the start
        completes, the instance exits through its exit handlers and stops the database."""
        try:
            first = Instance(data_dir, tmp_path / "first.log")
            first.wait_for("Starting embedded PostgreSQL")
            time.sleep(1)  # into initdb / pg_ctl start, which take seconds
            code = first.terminate()
            assert code == 0, first.output()
            assert wait_until_stopped(data_dir) == []
            assert handle_pids(data_dir) == []
        finally:
            kill_postgres(data_dir)

    def test_instances_stopped_at_each_point_of_start_up_release_the_database(
        self, data_dir, tmp_path
    ):
        """With one instance serving, others are stopped at several points of their
        start-up (importing, attaching, migrating, printing the demo accounts, starting
        uvicorn): none stays in the handle file, and when the serving one exits the
        database stops."""
        try:
            serving = Instance(data_dir, tmp_path / "serving.log")
            serving.wait_ready()
            assert handle_pids(data_dir) == [serving.process.pid]
            points = [
                ("importing", None),
                ("attaching", "Attaching to the running embedded PostgreSQL"),
                ("seed check", "demo seed skipped"),
                ("announcing", "fieldsync on http"),
            ]
            for name, marker in points:
                other = Instance(data_dir, tmp_path / f"{name}.log")
                if marker is None:
                    time.sleep(0.2)
                else:
                    other.wait_for(marker)
                code = other.terminate()
                # Stopped before the CLI set its handlers (still importing), a process
                # dies of the signal; it holds nothing then.
                assert code in (0, -signal.SIGTERM), other.output()
                assert other.process.pid not in handle_pids(data_dir), (name, other.output())
                assert postgres_processes(data_dir), f"database stopped by {name}"
            assert handle_pids(data_dir) == [serving.process.pid]
            assert serving.terminate() == 0
            assert wait_until_stopped(data_dir) == [], serving.output()
        finally:
            kill_postgres(data_dir)

    def test_a_second_server_on_a_busy_port_stops_before_starting_anything(
        self, data_dir, tmp_path
    ):
        """Bind first, then announce: on a taken port the server says so and exits 1
        without starting a database, migrating or printing its URL."""
        import socket

        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            port = taken.getsockname()[1]
            second = Instance(data_dir, tmp_path / "second.log", port=port)
            try:
                code = second.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                second.kill()
                pytest.fail(second.output())
        text = second.output()
        assert code == 1, text
        assert f"Cannot listen on 127.0.0.1:{port}" in text
        for absent in ("fieldsync on http", "startup complete", "embedded PostgreSQL"):
            assert absent not in text
        assert postgres_processes(data_dir) == []


class StoppedError(Exception):
    """What the test's SIGTERM handler raises."""


def start_receiving(signals: int, reached: list[str]) -> None:
    """A start of the embedded server that receives ``signals`` SIGTERMs meanwhile."""
    from server.embedded import deferred_exit_signals

    with deferred_exit_signals():
        for _ in range(signals):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
        reached.append(f"end of the start after {signals}")


class TestDeferredExitSignals:
    def test_one_signal_waits_for_the_start_and_a_second_stops_at_once(self):
        """While the embedded server starts, a first SIGTERM is delivered when the start is
        done; a second one (a start that hangs) is delivered immediately."""

        def stop(signum: int, frame: object) -> None:
            raise StoppedError

        previous = signal.signal(signal.SIGTERM, stop)
        try:
            reached: list[str] = []
            with pytest.raises(StoppedError):
                start_receiving(1, reached)
            with pytest.raises(StoppedError):
                start_receiving(2, reached)
            assert reached == ["end of the start after 1"]
            assert signal.getsignal(signal.SIGTERM) is stop
        finally:
            signal.signal(signal.SIGTERM, previous)
