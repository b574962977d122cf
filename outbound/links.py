"""The outbox's connections kept open from one lane to the next (issue 21).

When the outbox keeps up, a lane (outbound/delivery.py) is one to three mails,
and each lane opened its own connection and said QUIT after it: TCP, EHLO (on a
real account STARTTLS and AUTH too) for every couple of mails, the greater part
of the send worker's time per mail. Now a lane's connection, when the lane is
done, waits here for the next lane to the same account (the same
``OutboundAccount``, our hostname and timeout: a reloaded config with another
password gets a new one), in either place it is held (in this process, or in the
send worker behind a ``RemoteConnection``: the worker keeps its connection as
long as the daemon keeps the stand-in). A connection idle for ``IDLE`` seconds,
or that has carried ``MAX_MAILS`` mails (servers limit mails per connection), is
closed with QUIT; so is a lane's that failed or was cancelled. One server that
closed an idle connection first costs nothing: ``AccountConnection`` opens it again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable

from outbound.sender import AccountConnection, Link
from routing.config import OutboundAccount

__all__ = ["IDLE", "MAX_MAILS", "IdleLinks"]

IDLE = 10.0  # seconds a connection waits for the next lane before QUIT
MAX_MAILS = 100  # mails one connection carries before it is closed and another opened

Connect = Callable[[OutboundAccount | None, str, float], Link]


class IdleLinks:
    """The lanes' connections: ``take`` one for a lane, ``give_back`` (or ``drop``) after."""

    def __init__(self) -> None:
        # A lane's new connection: here, or in the daemon's send worker (gateway/sending/).
        self.connect: Connect = AccountConnection
        self._idle: dict[Hashable, list[tuple[Link, float]]] = {}
        self._carried: dict[int, int] = {}  # id(link) -> mails sent over it
        self._closing: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None

    def take(self, account: OutboundAccount | None, hostname: str, timeout: float) -> Link:
        """An idle connection to ``account``, else a new one (not opened until used)."""
        idle = self._idle.get((account, hostname, timeout))
        if idle:
            return idle.pop()[0]
        return self.connect(account, hostname, timeout)

    def give_back(
        self,
        link: Link,
        account: OutboundAccount | None,
        hostname: str,
        timeout: float,
        mails: int,
    ) -> None:
        """The lane is done and ``link`` is sound: kept for the next lane (or closed)."""
        carried = self._carried.get(id(link), 0) + mails
        if account is None or carried >= MAX_MAILS:
            self.drop(link)
            return
        self._carried[id(link)] = carried
        self._idle.setdefault((account, hostname, timeout), []).append((link, time.monotonic()))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(IDLE, self._sweep)

    def drop(self, link: Link) -> None:
        """QUIT on ``link`` in the background (a lane that failed or was cancelled)."""
        self._carried.pop(id(link), None)
        task = asyncio.get_running_loop().create_task(link.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """QUIT on every idle connection, and wait for all closing ones."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        idle, self._idle = self._idle, {}
        for links in idle.values():
            for link, _since in links:
                self.drop(link)
        while self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def _sweep(self) -> None:
        self._timer = None
        stale = time.monotonic() - IDLE
        for key, links in list(self._idle.items()):
            for link, since in [e for e in links if e[1] <= stale]:
                links.remove((link, since))
                self.drop(link)
            if not links:
                del self._idle[key]
        if self._idle:  # the youngest idle one's turn comes later
            self._timer = asyncio.get_running_loop().call_later(IDLE / 2, self._sweep)
