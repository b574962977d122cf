"""Commits in the order offered (gateway/intake/in_order.py): the turns alone, then the
pipeline on a real store, where a reply that overtook its original would open a ticket
of its own."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.intake.in_order import InOrder
from gateway.intake.pipeline import Pipeline
from routing.config import GatewayConfig, load_config
from routing.verdicts import Accepted
from store.blobs import FileBlobStore
from store.db import create_writer_engine
from store.models import metadata
from store.writer import Writer
from tests.mail import make_mail
from tests.test_stages import _raw

CONFIG = """
[gateway]
data_dir = "var"
hostname = "gw.acme.test"
dns_resolver = "none"
[[tenants]]
slug = "acme"
addresses = ["support@acme.test"]
tag_prefix = "ACME"
"""


def test_turns_pass_in_the_order_asked_however_the_messages_end() -> None:
    """A message that ends early (refused before its commit) passes its turn only once
    the ones ahead of it have: the one behind it must not overtake those."""

    async def go() -> list[int]:
        order = InOrder()
        turns = [order.turn() for _ in range(4)]
        queued: list[int] = []

        async def message(i: int, ends_early: bool, delay: float) -> None:
            await asyncio.sleep(delay)
            if ends_early:
                turns[i].passed()
                return
            await turns[i].reached()
            queued.append(i)
            turns[i].passed()

        await asyncio.gather(
            message(0, False, 0.05),  # slowest to reach its commit
            message(1, True, 0.0),  # refused at once
            message(2, False, 0.0),
            message(3, False, 0.01),
        )
        return queued

    assert asyncio.run(go()) == [0, 2, 3]


def test_a_cancelled_waiter_neither_breaks_the_chain_nor_cancels_the_turn_ahead() -> None:
    async def go() -> tuple[bool, list[str]]:
        order = InOrder()
        first, second, third = order.turn(), order.turn(), order.turn()
        seen: list[str] = []

        async def waits(turn, name: str) -> None:  # type: ignore[no-untyped-def]
            try:
                await turn.reached()
                seen.append(name)
            finally:
                turn.passed()

        w2 = asyncio.ensure_future(waits(second, "second"))
        w3 = asyncio.ensure_future(waits(third, "third"))
        await asyncio.sleep(0.01)
        w2.cancel()  # the pipeline's timeout, say
        await asyncio.gather(w2, return_exceptions=True)
        await asyncio.sleep(0.01)
        early = "third" in seen  # must still wait for the first
        first.passed()
        await asyncio.wait_for(w3, 5)
        return early, seen

    early, seen = asyncio.run(go())
    assert not early and seen == ["third"]


def test_waiting_for_a_turn_does_not_use_up_the_messages_deadline() -> None:
    async def go() -> bool:
        order = InOrder()
        ahead, mine = order.turn(), order.turn()
        asyncio.get_running_loop().call_later(0.3, ahead.passed)
        async with asyncio.timeout(0.1) as deadline:
            await mine.reached(deadline)
            left = deadline.when()
            assert left is not None
            return left - asyncio.get_running_loop().time() > 0.05

    assert asyncio.run(go())


@pytest.mark.parametrize("in_order", [True, False])
def test_a_reply_drained_beside_its_slower_original_threads_into_its_ticket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_order: bool
) -> None:
    """The original is held back on its way (a pause in its parse: no real part can be
    made to run slow for one message only, so this one delay is the test's own); the
    reply behind it is ready first. With turns, the reply's commit still comes after the
    original's and finds its ticket by In-Reply-To. Without them (the control, which
    shows the pause does let the reply overtake) it opens a ticket of its own."""
    path = tmp_path / "gateway.toml"
    path.write_text(CONFIG, encoding="utf-8")
    config: GatewayConfig = load_config(path)
    original = make_mail(subject="Printer jammed", message_id="<orig-1@client.test>")
    reply = make_mail(
        subject="Re: Printer jammed",
        body="And now it smokes.",
        message_id="<reply-1@client.test>",
        headers={"In-Reply-To": "<orig-1@client.test>", "References": "<orig-1@client.test>"},
    )
    engine = create_writer_engine(f"sqlite:///{tmp_path / 'gw.db'}")
    metadata.create_all(engine)
    writer = Writer(engine)
    pipeline = Pipeline(config, writer, FileBlobStore(tmp_path / "blobs"), scanner=None)
    real_parse = pipeline._parse

    async def slow_original(data: bytes, *args, **kwargs):  # type: ignore[no-untyped-def]
        if data == original:
            await asyncio.sleep(0.3)
        return await real_parse(data, *args, **kwargs)

    monkeypatch.setattr(pipeline, "_parse", slow_original)

    async def go() -> list[object]:
        order = InOrder() if in_order else None
        try:
            return await asyncio.gather(
                *(
                    pipeline.process(_raw(d, source="imap"), turn=order.turn() if order else None)
                    for d in (original, reply)
                )
            )
        finally:
            await writer.close()

    first, second = asyncio.run(go())
    engine.dispose()
    assert isinstance(first, Accepted) and isinstance(second, Accepted), (first, second)
    refs = [first.stored[0].ticket_ref, second.stored[0].ticket_ref]
    if in_order:
        assert refs[0] == refs[1]
        assert second.stored[0].thread_by != "new"
    else:
        assert refs[0] != refs[1], "the pause did not let the reply overtake: no proof"
