"""The outbox worker sends a backlog over a few reused connections and marks it in
batches; a delivered mail leaves no "error" behind (the server's 250 is not one).

Real SMTP both ways: the tenant's account is tests/smtp_sink.py (STARTTLS, AUTH),
whose successful logins count the connections the worker opened.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from routing.config import load_config
from store import repos
from store.db import create_writer_engine
from tests.daemon import Daemon
from tests.smtp_sink import Sink
from tests.test_outbound import _daemon

N = 12


def _mail(i: int) -> bytes:
    return (
        f"From: support@acme.test\r\nTo: c{i}@client.test\r\nSubject: [ACME-{i}] hi\r\n"
        f"Message-ID: <batch.{i}@gw.test>\r\nAuto-Submitted: auto-replied\r\n\r\nhello\r\n"
    ).encode()


def test_a_backlog_goes_over_few_connections_and_leaves_no_errors(tmp_path: Path) -> None:
    account = Sink(tmp_path).start()
    account.refuse["gone@client.test"] = "550 5.1.1 no such user"
    try:
        d = _daemon(tmp_path, account)
        d.start()  # the schema
        d.stop()
        engine = create_writer_engine(load_config(d.config).database_url)
        with engine.begin() as conn:  # a backlog, as after an outage of the account
            rows = [
                ("ack", None, f"<batch.{i}@gw.test>", "", [f"c{i}@client.test"], _mail(i))
                for i in range(N - 1)
            ]
            rows.append(
                ("ack", None, "<batch.x@gw.test>", "", ["cx@client.test", "gone@client.test"],
                 _mail(99))
            )  # fmt: skip
            repos.enqueue_many(conn, "acme", rows)
        engine.dispose()
        d.start()
        try:
            got = account.wait_for(lambda r: True, count=N, timeout=60)
            assert len(got) == N
            # four connections at most (the worker's concurrency), not one per mail
            assert 1 <= account.logins <= 4, account.logins
            status = _wait_sent(d)
            assert status["sent"] == N
            errors = {r["message_id"]: r["last_error"] for r in status["rows"]}
            assert errors.pop("<batch.x@gw.test>").startswith("partly refused: gone@client.test")
            assert set(errors.values()) == {None}  # no "250 2.0.0 queued" as an error
            shown = d.cli("status").stdout.decode()
            assert "queued" not in shown and "partly refused" in shown, shown
        finally:
            d.stop()
    finally:
        account.stop()


def _wait_sent(d: Daemon) -> dict[str, Any]:
    """The outbox once every row is marked (the sink has the mail a moment before)."""
    rows: list[Any] = []
    for _ in range(600):
        rows = d.query("SELECT message_id, status, last_error FROM outbox")
        if all(r["status"] == "sent" for r in rows):
            return {"sent": len(rows), "rows": rows}
        time.sleep(0.05)
    raise AssertionError(rows)


def test_lanes_share_the_free_connections_by_tenant() -> None:
    """One tenant's backlog fills every free connection; several tenants each get at
    least one, about their share; a lane keeps the claim order."""
    from outbound.delivery import _lanes

    def rows(tenant: str, n: int, start: int = 0) -> list[dict[str, Any]]:
        return [{"tenant": tenant, "id": start + i} for i in range(n)]

    lanes = _lanes(rows("acme", 80), 4)
    assert [len(lane) for lane in lanes] == [20, 20, 20, 20]
    assert [r["id"] for r in lanes[0]] == list(range(0, 80, 4))
    lanes = _lanes(rows("acme", 30) + rows("globex", 2, 100) + rows("initech", 1, 200), 4)
    by = {lane[0]["tenant"]: 0 for lane in lanes}
    for lane in lanes:
        by[lane[0]["tenant"]] += 1
        assert len({r["tenant"] for r in lane}) == 1
    assert by == {"acme": 4, "globex": 1, "initech": 1}
    assert sorted(r["id"] for lane in lanes for r in lane) == [*range(30), 100, 101, 200]
    assert _lanes([], 4) == []
