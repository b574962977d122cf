"""Big mail's turns (gateway/intake/big_mail.py): the order, the budget, one bigger than
the budget alone, and a waiter cancelled by the pipeline's timeout gives nothing away."""

from __future__ import annotations

import asyncio

from gateway.intake.big_mail import BigMail

MiB = 1 << 20


async def _hold(big: BigMail, size: int, name: str, log: list[str], until: asyncio.Event) -> None:
    async with big.turn(size):
        log.append(name)
        await until.wait()


def test_first_come_first_served_within_the_budget_and_a_bigger_one_alone() -> None:
    async def go() -> list[list[str]]:
        big = BigMail(budget=10 * MiB, floor=MiB)
        log: list[str] = []
        gates = {n: asyncio.Event() for n in "abcde"}
        sizes = {"a": 6 * MiB, "b": 4 * MiB, "c": 12 * MiB, "d": 2 * MiB, "e": 2 * MiB}
        tasks = []
        for n in "abcde":
            tasks.append(asyncio.ensure_future(_hold(big, sizes[n], n, log, gates[n])))
            await asyncio.sleep(0)
        seen = []
        await asyncio.sleep(0.01)
        seen.append(list(log))  # a and b fill the budget; c waits, and d and e behind it
        gates["a"].set()
        await asyncio.sleep(0.01)
        seen.append(list(log))  # c (bigger than the budget) goes only when nothing is held
        gates["b"].set()
        await asyncio.sleep(0.01)
        seen.append(list(log))
        assert big.held == 12 * MiB and big.waiting == 2
        gates["c"].set()
        await asyncio.sleep(0.01)
        seen.append(list(log))
        gates["d"].set()
        gates["e"].set()
        await asyncio.gather(*tasks)
        assert big.held == 0 and big.peak == 12 * MiB
        return seen

    assert asyncio.run(go()) == [
        ["a", "b"],
        ["a", "b"],
        ["a", "b", "c"],
        ["a", "b", "c", "d", "e"],
    ]


def test_small_mail_never_waits() -> None:
    async def go() -> bool:
        big = BigMail(budget=2 * MiB, floor=MiB)
        gate = asyncio.Event()
        log: list[str] = []
        first = asyncio.ensure_future(_hold(big, 2 * MiB, "big", log, gate))
        second = asyncio.ensure_future(_hold(big, 2 * MiB, "big2", log, gate))
        await asyncio.sleep(0.01)
        async with asyncio.timeout(1):
            async with big.turn(MiB - 1):
                went = big.waiting == 1
        gate.set()
        await asyncio.gather(first, second)
        return went

    assert asyncio.run(go())


def test_a_waiter_cancelled_leaves_its_place_and_one_given_its_turn_passes_it_on() -> None:
    async def go() -> tuple[int, int, list[str]]:
        big = BigMail(budget=4 * MiB, floor=MiB)
        gate = asyncio.Event()
        log: list[str] = []
        holder = asyncio.ensure_future(_hold(big, 2 * MiB, "holder", log, gate))
        await asyncio.sleep(0)
        # Does not fit beside the holder and waits; the one behind it would fit but keeps
        # its place in the line. The first one's timeout strikes: the one behind it goes.
        async def impatient() -> None:
            async with asyncio.timeout(0.01), big.turn(3 * MiB):
                log.append("impatient")

        with_timeout = asyncio.ensure_future(impatient())
        await asyncio.sleep(0)
        assert big.waiting == 1
        behind = asyncio.ensure_future(_hold(big, 2 * MiB, "behind", log, asyncio.Event()))
        await asyncio.sleep(0.05)
        assert with_timeout.done() and isinstance(with_timeout.exception(), TimeoutError)
        assert log == ["holder", "behind"] and big.held == 4 * MiB
        gate.set()
        await asyncio.sleep(0.01)
        held_after = big.held  # "behind" has its turn and holds it
        # Given its turn and cancelled before it ran: the turn is passed on, not kept.
        late = asyncio.ensure_future(_hold(big, 3 * MiB, "late", log, asyncio.Event()))
        await asyncio.sleep(0)
        behind.cancel()  # releases 2 MiB: "late" is handed the turn ...
        await asyncio.sleep(0)
        late.cancel()  # ... and cancelled before it resumes
        await asyncio.gather(holder, behind, late, return_exceptions=True)
        return held_after, big.held, log

    held_after, held_at_end, log = asyncio.run(go())
    assert held_after == 2 * MiB
    assert held_at_end == 0
    assert log == ["holder", "behind"]
