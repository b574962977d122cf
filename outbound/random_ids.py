"""Random ids drawn from the kernel in blocks: queue ids, our Message-IDs, MIME boundaries.

Why not ``secrets.token_hex`` a call: each call is a ``getrandom`` system call, and
CPython lets go of the GIL around it. Cheap alone (~0.3 µs), but on the event loop
with the writer thread running, each let-go hands the GIL over and the loop waits to
have it back: figure 1's K=32 profile showed ``SystemRandom.randbytes`` at ~3% of the
daemon's busy samples for three or four calls a message. The bytes are the same
kernel CSPRNG's, drawn 4 KiB at a time; each is handed out once (a lock, since the
loop and the writer thread both draw), and a forked child starts with a fresh block,
never the parent's leftovers (``os.register_at_fork``).

Only for ids made many times a message. Secrets that guard a login (magic-link
tokens, sessions, CSRF) keep ``secrets`` a call: they are rare, and nothing of them
should sit in a buffer.
"""

from __future__ import annotations

import os
import threading

__all__ = ["random_hex"]

BLOCK = 4096


class _Pool:
    __slots__ = ("_at", "_block", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._block = b""
        self._at = 0

    def take(self, nbytes: int) -> bytes:
        with self._lock:
            at = self._at
            end = at + nbytes
            if end > len(self._block):
                self._block = os.urandom(max(BLOCK, nbytes))
                at, end = 0, nbytes
            self._at = end
            return self._block[at:end]

    def forget(self) -> None:
        """In a forked child: the parent's unused bytes would be handed out twice."""
        self._lock = threading.Lock()  # a lock held by another thread at the fork stays held
        self._block = b""
        self._at = 0


_pool = _Pool()
os.register_at_fork(after_in_child=_pool.forget)


def random_hex(nbytes: int) -> str:
    """``nbytes`` fresh random bytes as hex, as ``secrets.token_hex(nbytes)`` gives."""
    return _pool.take(nbytes).hex()
