"""Big mail takes turns between its parse and its commit; small mail never waits.

From its parse to its commit the daemon holds a message twice over: its raw bytes
(kept to be stored) and every attachment as decoded (scanned, then stored beside
them). Thirty-two senders of 10 MB mail at once held thirty-two decoded copies, and
clamd scanned all of them at once, each scan slowed by the thirty-one others (on a
loaded machine some ran into the scan deadline and were deferred). Two cores gain
nothing from six big parses or scans over two: the writer commits one batch at a
time anyway. So messages of ``floor`` bytes and more share ``budget`` bytes (their
raw sizes) from the parse to the commit, first come first served; one bigger than
the budget goes alone. The raw bytes of a waiting message are held already (the
SMTP session read them), so the wait costs no memory; what it saves is the decoded
copies and the parse workers' and clamd's work on them all at once (figure 6 of
BENCHMARKS.md). The wait is inside the pipeline's timeout, as the parse is.

Postfix bounds its queue manager's in-memory recipients and its cleanup processes
the same way: by a count the machine can serve, not by how many clients knock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

__all__ = ["BUDGET", "FLOOR", "BigMail"]

#: The raw bytes of big mail between parse and commit at once: six 10 MB messages, which
#: keeps the parse workers, clamd and the writer busy.
BUDGET = 64 << 20
#: Smaller mail does not take a turn (figure 1's mail is ~1 KB; a photo is a few MB).
FLOOR = 1 << 20


class BigMail:
    """The turns. One per pipeline, used on its event loop only."""

    def __init__(self, budget: int = BUDGET, floor: int = FLOOR) -> None:
        self.budget = budget
        self.floor = floor
        self.held = 0  # raw bytes of the big messages having their turn
        self.peak = 0  # the most ever held at once (tests/test_big_mail.py)
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def waiting(self) -> int:
        return sum(1 for _, f in self._waiting if not f.done())

    @contextlib.asynccontextmanager
    async def turn(self, size: int) -> AsyncIterator[None]:
        """Until the message of ``size`` raw bytes may go on; held until the block ends."""
        if size < self.floor:
            yield
            return
        await self._acquire(size)
        try:
            yield
        finally:
            self._release(size)

    async def _acquire(self, size: int) -> None:
        if not self._waiting and self._fits(size):
            self._take(size)
            return
        entry = (size, asyncio.get_running_loop().create_future())
        self._waiting.append(entry)
        try:
            await entry[1]
        except BaseException:  # cancelled (the pipeline's timeout, a shutdown)
            if entry[1].done() and not entry[1].cancelled():
                self._release(size)  # given its turn as it was cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiting.remove(entry)
                self._wake()  # the one behind it may fit now
            raise

    def _fits(self, size: int) -> bool:
        return self.held == 0 or self.held + size <= self.budget

    def _take(self, size: int) -> None:
        self.held += size
        self.peak = max(self.peak, self.held)

    def _release(self, size: int) -> None:
        self.held -= size
        self._wake()

    def _wake(self) -> None:
        """First come first served: a big one at the head is not overtaken by a smaller
        one behind it, or a stream of 2 MB mail could keep a 40 MB one waiting forever."""
        while self._waiting:
            size, fut = self._waiting[0]
            if fut.done():  # cancelled while waiting
                self._waiting.popleft()
                continue
            if not self._fits(size):
                return
            self._waiting.popleft()
            self._take(size)
            fut.set_result(None)
