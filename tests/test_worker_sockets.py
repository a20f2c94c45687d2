"""Each worker listens on a socket of its own: connections spread over the workers."""

from __future__ import annotations

import pickle
import socket
import subprocess
import sys
import time

import httpx
import psutil  # type: ignore[import-untyped]
import pytest

from server.worker_sockets import reserve, reuse_port_supported
from tests.conftest import server_env, spawn_server, stop_server

pytestmark = pytest.mark.skipif(not reuse_port_supported(), reason="needs SO_REUSEPORT")


class TestReservedPort:
    """The supervisor's socket holds the port; each unpickled copy is a worker's listener."""

    def test_an_unpickled_reservation_is_a_listener_of_its_own(self) -> None:
        """Pickled over to a worker, the reservation becomes a new socket listening there."""
        reserved = reserve("127.0.0.1", 0)
        port = reserved.getsockname()[1]
        first = pickle.loads(pickle.dumps(reserved))  # noqa: S301 - our own socket
        second = pickle.loads(pickle.dumps(reserved))  # noqa: S301 - our own socket
        try:
            assert first.fileno() != second.fileno() != reserved.fileno()
            assert first.getsockname()[1] == second.getsockname()[1] == port
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass  # accepted by the kernel into one of the two listeners' queues
        finally:
            for sock in (first, second, reserved):
                sock.close()

    def test_a_taken_port_is_refused_at_once(self) -> None:
        """A port another program listens on (without SO_REUSEPORT) cannot be reserved."""
        with socket.socket() as other:
            other.bind(("127.0.0.1", 0))
            other.listen()
            with pytest.raises(OSError, match="in use"):
                reserve("127.0.0.1", other.getsockname()[1])

    def test_a_port_held_by_another_servers_workers_is_refused(self) -> None:
        """Another multi-worker server's listeners carry SO_REUSEPORT too: the kernel would
        let a second reservation share their port and split the connections, so it is
        refused."""
        first = reserve("127.0.0.1", 0)
        port = first.getsockname()[1]
        listener = pickle.loads(pickle.dumps(first))  # noqa: S301 - our own socket
        try:
            with pytest.raises(OSError, match="in use"):
                reserve("127.0.0.1", port)
            first.close()  # the supervisor gone, its worker still listening
            with pytest.raises(OSError, match="in use"):
                reserve("127.0.0.1", port)
        finally:
            listener.close()
            first.close()
        reserve("127.0.0.1", port).close()  # free again once both are closed


def test_keep_alive_connections_spread_over_the_workers(database_url, tmp_path) -> None:
    """Twenty keep-alive clients of a two-worker server do not all land on one worker."""
    server = spawn_server(database_url, tmp_path, {"FIELDSYNC_WORKERS": "2"})
    clients = [httpx.Client(base_url=server.url, timeout=10) for _ in range(20)]
    try:
        for client in clients:
            assert client.get("/healthz").status_code == 200
        port = int(server.url.rsplit(":", 1)[1])
        deadline = time.monotonic() + 10
        while True:
            workers = psutil.Process(server.process.pid).children(recursive=True)
            per_worker = {
                w.pid: sum(
                    1
                    for c in w.net_connections(kind="tcp")
                    if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port
                )
                for w in workers
            }
            if sum(per_worker.values()) == len(clients) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        served = sorted(n for n in per_worker.values() if n)
        # By hash, all twenty on one of two workers has a chance of 2 in 2**20.
        assert sum(served) == len(clients), per_worker
        assert len(served) == 2, per_worker
    finally:
        for client in clients:
            client.close()
        stop_server(server)


def test_a_taken_port_stops_the_server_with_a_clear_message(database_url, tmp_path) -> None:
    """`serve --workers 2` on a port in use exits 1 and says which address it could not take."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        command = [sys.executable, "-m", "server", "serve", "--host", "127.0.0.1"]
        result = subprocess.run(
            [*command, "--port", str(port), "--workers", "2"],
            env=server_env(database_url, tmp_path),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"Cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr


def test_a_second_multi_worker_server_on_the_same_port_is_refused(database_url, tmp_path) -> None:
    """Two `serve --workers 2` on one port: the second exits 1 instead of taking a share of
    the first one's connections."""
    first = spawn_server(database_url, tmp_path, {"FIELDSYNC_WORKERS": "2"})
    try:
        port = first.url.rsplit(":", 1)[1]
        result = subprocess.run(
            [sys.executable, "-m", "server", "serve", "--host", "127.0.0.1", "--port", port],
            env={**server_env(database_url, tmp_path / "second"), "FIELDSYNC_WORKERS": "2"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 1, result.stdout + result.stderr
        assert f"Cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
        assert httpx.get(f"{first.url}/healthz", timeout=10).status_code == 200
    finally:
        stop_server(first)
