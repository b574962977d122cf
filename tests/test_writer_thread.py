"""The writer's thread takes its next batch itself (store/writer.py).

A batch whose COMMIT has ended is followed by the units queued meanwhile without the
event loop's next turn: the loop is held here (a blocking wait on the loop's own
thread) while the second batch must commit. With the loop handing each batch over,
the second batch waits for the loop and the test fails. Also: a batch's results
reach their callers, a cancelled caller's unit is not run, and ``close`` runs what
was queued before it and refuses what comes after.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from sqlalchemy.engine import Connection, Engine

from store.errors import StoreUnavailable
from store.writer import Writer

WAIT = 10.0  # seconds: a bound on a hang, not a measure of speed


def test_the_next_batch_commits_while_the_loop_is_busy(store_engine: Engine) -> None:
    first_in, let_first_go = threading.Event(), threading.Event()

    def first(conn: Connection) -> str:
        first_in.set()
        assert let_first_go.wait(WAIT)
        return "first"

    def second(conn: Connection) -> str:
        return "second"

    async def go() -> tuple[bool, list[str]]:
        writer = Writer(store_engine)
        try:
            one = asyncio.ensure_future(writer.submit(first))
            await asyncio.sleep(0)
            assert first_in.wait(WAIT)  # the first batch is in its transaction
            two = asyncio.ensure_future(writer.submit(second))
            await asyncio.sleep(0)  # queued behind it
            # Now hold the loop: release the first batch and wait, without a turn of the
            # loop, until the writer has committed the second.
            let_first_go.set()
            deadline = asyncio.get_running_loop().time() + WAIT
            committed = False
            while not committed and asyncio.get_running_loop().time() < deadline:
                committed = writer.units == 2
                threading.Event().wait(0.005)
            return committed, [await one, await two]
        finally:
            await writer.close()

    committed, results = asyncio.run(go())
    assert committed, "the second batch waited for the event loop's turn"
    assert results == ["first", "second"]


def test_a_cancelled_callers_unit_is_not_run_and_close_finishes_the_queue(
    store_engine: Engine,
) -> None:
    hold, held = threading.Event(), threading.Event()
    ran: list[str] = []

    def holding(conn: Connection) -> str:
        held.set()
        assert hold.wait(WAIT)
        ran.append("holding")
        return "holding"

    def unit(name: str) -> Callable[[Connection], str]:
        def work(conn: Connection) -> str:
            ran.append(name)
            return name

        return work

    async def go() -> tuple[list[object], object]:
        writer = Writer(store_engine)
        first = asyncio.ensure_future(writer.submit(holding))
        await asyncio.sleep(0)
        assert held.wait(WAIT)
        gone = asyncio.ensure_future(writer.submit(unit("gone")))
        kept = asyncio.ensure_future(writer.submit(unit("kept")))
        await asyncio.sleep(0)
        gone.cancel()
        hold.set()
        closing = asyncio.ensure_future(writer.close())
        await asyncio.sleep(0)
        try:
            await writer.submit(unit("late"))
            late: object = None
        except StoreUnavailable as exc:
            late = exc
        await closing
        return [await first, await kept], late

    results, late = asyncio.run(go())
    assert results == ["holding", "kept"]
    assert ran == ["holding", "kept"], ran
    assert isinstance(late, StoreUnavailable)


def test_a_failing_batch_reports_each_units_own_outcome(store_engine: Engine) -> None:
    def ok(conn: Connection) -> int:
        return 1

    def bad(conn: Connection) -> int:
        raise ValueError("this unit's own fault")

    async def go() -> list[object]:
        writer = Writer(store_engine)
        try:
            return await asyncio.gather(
                writer.submit(ok), writer.submit(bad), writer.submit(ok), return_exceptions=True
            )
        finally:
            await writer.close()

    done = asyncio.run(go())
    assert done[0] == 1 and done[2] == 1
    assert isinstance(done[1], ValueError)
