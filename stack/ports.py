"""TCP port helpers for the local servers.

Every server here listens on 127.0.0.1 only: the stack is for one machine, and binding the loopback
address keeps it off the network. Ports are never the well-known ones (5432, 6379): this dev machine
already runs PostgreSQL and Redis there, and a user's fresh machine may run something else.
"""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


class PortInUseError(RuntimeError):
    """A port that the caller asked for by number is already taken."""


def free_port(host: str = LOOPBACK) -> int:
    """A port that is free right now, chosen by the kernel (bind to port 0).

    There is a window between closing this socket and the server binding the port in which another
    process could take it; process.py retries with a new port when a start fails that way.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def ensure_port_free(port: int, host: str = LOOPBACK) -> None:
    """Raise PortInUseError when something already listens on host:port.

    SO_REUSEADDR mirrors what the servers themselves set: a socket left in TIME_WAIT by a previous
    run of the same server does not count as taken, but a live listener does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise PortInUseError(
                f"port {port} on {host} is already in use ({exc.strerror}); pick another port or "
                "leave it unset to get a free one"
            ) from exc


def port_accepts(port: int, host: str = LOOPBACK, timeout: float = 0.2) -> bool:
    """True when a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
