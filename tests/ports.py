"""The one free-port helper the test servers and the benchmarks share."""

from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port() -> int:
    """A 127.0.0.1 port that was free a moment ago; the server binds it itself, and the
    race with another process taking it meanwhile is accepted (a start then fails loudly)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
