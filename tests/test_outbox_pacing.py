"""The outbox worker's claims are paced: mail queued one message at a time (a lone
sender's acknowledgements) is claimed at most once per ``GATHER``, not once after each
lane, so the writer that the sender's next 250 waits on is not held by a claim per
message (outbound/delivery.py, bench/results/notes/pace21.md).

In process: a real Writer on the run's store (SQLite, or PostgreSQL with
GATEWAY_TEST_DB=postgresql), the real Delivery, and the tenant's account a real SMTP
server over loopback (tests/smtp_sink.py, STARTTLS and AUTH).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Connection, Engine

from outbound import delivery as delivery_mod
from outbound.delivery import GATHER, Delivery
from routing.config import load_config
from store import repos
from store.writer import Writer
from tests.smtp_sink import Sink

MAILS = 24
GAP = 0.005  # seconds between two queued mails: ~200 a second, a lone sender's pace


def _mail(i: int) -> bytes:
    return (
        f"From: support@acme.test\r\nTo: c{i}@client.test\r\nSubject: [ACME-{i}] hi\r\n"
        f"Message-ID: <pace.{i}@gw.test>\r\nAuto-Submitted: auto-replied\r\n\r\nhello\r\n"
    ).encode()


def test_mail_queued_one_at_a_time_is_claimed_at_most_once_per_gather(
    tmp_path: Path, store_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = Sink(tmp_path).start()
    try:
        home = tmp_path / "gw"
        (home / "var").mkdir(parents=True)
        (home / "gateway.toml").write_text(
            '[gateway]\ndata_dir = "var"\nhostname = "gw.test"\n'
            '[outbound]\npoll_interval = 30.0\n'
            '[[tenants]]\nslug = "acme"\naddresses = ["support@acme.test"]\n'
            + sink.account(home),
            encoding="utf-8",
        )
        config = load_config(home / "gateway.toml")
        claims: list[tuple[float, int, int]] = []  # (when, rows asked, rows got)
        real_claim = delivery_mod.claim

        def counted(conn: Connection, now: Any, limit: int, me: str, lease: float) -> Any:
            rows = real_claim(conn, now, limit, me, lease)
            claims.append((time.monotonic(), limit, len(rows)))
            return rows

        monkeypatch.setattr(delivery_mod, "claim", counted)

        async def go() -> int:
            writer = Writer(store_engine)
            worker = Delivery(config, writer)
            running = asyncio.create_task(worker.run())
            try:
                for i in range(MAILS):  # as the pipeline does after each commit
                    await writer.submit(
                        lambda conn, i=i: repos.enqueue_many(
                            conn, "acme",
                            [("ack", None, f"<pace.{i}@gw.test>", "", [f"c{i}@client.test"],
                              _mail(i))],
                        )
                    )  # fmt: skip
                    worker.wake()
                    await asyncio.sleep(GAP)
                for _ in range(1500):  # 30 s at most
                    if worker.sent >= MAILS:
                        break
                    await asyncio.sleep(0.02)
                return worker.sent
            finally:
                running.cancel()
                await asyncio.gather(running, return_exceptions=True)
                await writer.close()

        assert asyncio.run(go()) == MAILS
        assert len(sink.received) == MAILS
    finally:
        sink.stop()
    took = sum(got for _, _, got in claims)
    assert took == MAILS, claims
    # Never two claims near each other, unless the first filled its limit. Timed here as
    # the writer runs them, which may be later than the worker asked by the time a
    # queued unit ahead takes: so half of GATHER, where unpaced claims came ~1 ms apart.
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(claims) if a[2] < a[1]]
    assert min(gaps, default=GATHER) >= GATHER / 2, (gaps, claims)
    # Far fewer claims than mails: unpaced, each lane's end claimed the next mail alone.
    assert len(claims) <= MAILS // 3, claims
