"""Ports on 127.0.0.1 for the local broker: find a free one, or say who holds a taken one."""

from __future__ import annotations

import contextlib
import socket

import psutil

from rayml.errors import PortInUseError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_owner(port: int) -> str | None:
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
                if conn.pid:
                    with contextlib.suppress(psutil.Error):
                        proc = psutil.Process(conn.pid)
                        return f"pid {conn.pid}, {proc.name()}"
                return "another process"
    return None


def ensure_port_free(port: int) -> None:
    """Raise :class:`PortInUseError` if 127.0.0.1:``port`` cannot be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the broker binds (Java sets SO_REUSEADDR): connections of a broker that just
        # stopped, lingering in TIME_WAIT, don't hold the port; a live listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise PortInUseError(port, _port_owner(port)) from exc
