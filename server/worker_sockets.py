"""One listening socket per worker process, so the kernel spreads connections over them.

uvicorn's workers share one listening socket, and each worker's event loop accepts every
pending connection whenever it wakes. Clients that keep connections open (browsers, a
proxy's upstream pool, a load generator) then end up wherever the wake-ups put them: ten
keep-alive connections split 10/0, 8/2 or 5/5 between two workers from one run to the
next, and a worker holding most of them makes its requests wait while the other idles.

With ``SO_REUSEPORT`` every worker listens on a socket of its own and the kernel assigns
each new connection to one of them by a hash of its addresses. The supervisor only binds
(without listening) to hold the port and to fail early if it is taken; the socket it hands
to each worker is re-created in that worker, as the worker's own listener, when the
spawned process unpickles it (``ReservedPort.__reduce__``).

``SO_REUSEPORT`` also lets any other process of the same user bind the port with the option
set, e.g. a second multi-worker server started by mistake, which would then silently get a
share of the connections. So the reservation first binds the port once without the option,
which fails while anybody else holds it.
"""

from __future__ import annotations

import socket
from typing import Any

LISTEN_BACKLOG = 2048  # uvicorn's default


def reuse_port_supported() -> bool:
    """Whether this platform has ``SO_REUSEPORT`` (Linux, BSDs, macOS)."""
    return hasattr(socket, "SO_REUSEPORT")


class ReservedPort(socket.socket):
    """The supervisor's bound, non-listening socket; a worker's own listener once pickled
    over to it."""

    def __reduce__(self) -> tuple[Any, ...]:
        host, port = self.getsockname()[:2]
        return (worker_listener, (int(self.family), host, port))


def _reusable(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)


def _claim(family: socket.AddressFamily, host: str, port: int) -> int:
    """Bind ``host:port`` without ``SO_REUSEPORT`` and let it go again: raises ``OSError``
    if another socket holds it, with the option or without. Returns the port bound (port 0
    picks one)."""
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR only forgives connections of an earlier run still in TIME_WAIT.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        return int(probe.getsockname()[1])


def reserve(host: str, port: int) -> ReservedPort:
    """Bind ``host:port`` for the workers to share (raises ``OSError`` if it is taken, also
    by another server's workers)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    free_port = _claim(family, host, port)
    sock = ReservedPort(family, socket.SOCK_STREAM)
    try:
        _reusable(sock)
        sock.bind((host, free_port))
    except OSError:
        sock.close()
        raise
    return sock


def worker_listener(family: int, host: str, port: int) -> socket.socket:
    """A worker's own listening socket on the reserved address."""
    sock = socket.socket(socket.AddressFamily(family), socket.SOCK_STREAM)
    try:
        _reusable(sock)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock
