"""Commits in the order offered, with the work before them running side by side.

A mailbox's messages are committed in their folder's order: a reply must find the
ticket its predecessor made, as on one SMTP session. That needs only each commit to
be queued at the writer after its predecessor's: the writer runs its units in the
order queued, and a later unit of a batch sees what an earlier one wrote or held
(store/writer.py, store/deferred.py). Nothing else about a message waits on the one
before it, so a drained batch's parses, scans, DNS checks and blob staging run
together, and its commits share the writer's transactions and fsyncs as concurrent
SMTP sessions' do, instead of one transaction, one fsync and one wake-up a message
(figure 4 of BENCHMARKS.md). ``gateway import`` runs its window of a mailbox's history
the same way, in the import's order (gateway/ops/importer.py).

A turn passes when its message's commit is queued, or when the message ends without
one (refused, deferred, a fault), but never before the turn ahead of it: a message
refused early must not let the one behind it overtake the one before it.
"""

from __future__ import annotations

import asyncio

__all__ = ["InOrder", "Turn"]


class Turn:
    """One message's place: ``reached`` before queueing its commit, ``passed`` after it
    (or once the message ends without one; more than once is harmless)."""

    __slots__ = ("_before", "_mine")

    def __init__(self, before: asyncio.Future[None] | None, mine: asyncio.Future[None]) -> None:
        self._before = before
        self._mine = mine

    async def reached(self, deadline: asyncio.Timeout | None = None) -> None:
        """Until every message ahead has queued its commit or ended. ``deadline`` (the
        message's own timeout) is stopped meanwhile: the wait is bounded by those ahead,
        each by its own deadline, and a message that only waited its turn is not late."""
        before = self._before
        if before is None or before.done():
            return
        loop = asyncio.get_running_loop()
        when = deadline.when() if deadline is not None else None
        left = None if when is None else max(0.0, when - loop.time())
        if deadline is not None and left is not None:
            deadline.reschedule(None)
        try:
            # Shielded: a waiter cancelled must not cancel the turn ahead, which the
            # messages behind this one wait on too.
            await asyncio.shield(before)
        finally:
            if deadline is not None and left is not None:
                deadline.reschedule(loop.time() + left)

    def passed(self) -> None:
        before, mine = self._before, self._mine
        if mine.done():
            return
        if before is None or before.done():
            mine.set_result(None)
        else:  # ended before its turn: the ones behind still wait for those ahead
            before.add_done_callback(lambda _f: None if mine.done() else mine.set_result(None))


class InOrder:
    """The turns of one run of messages, in the order asked for (on one event loop)."""

    def __init__(self) -> None:
        self._last: asyncio.Future[None] | None = None

    def turn(self) -> Turn:
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        turn = Turn(self._last, mine)
        self._last = mine
        return turn
