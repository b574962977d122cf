"""Page views are audited exactly once each, though written in batches (view_log.py).

A burst of client views, concurrent over keep-alive-less HTTP, then more views
and at once a clean stop (SIGTERM): after each, the store holds one
``web.ticket_viewed`` row per answered view, no fewer (a buffer dropped at
shutdown) and no more (a batch written twice). The agents' desk's views go
through the same buffer (``desk.ticket_viewed``). Real daemon, real HTTP; runs
on both engines.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from gateway.web.view_log import ViewLog
from routing.config import load_config
from store import access, repos
from store.db import create_writer_engine
from store.writer import Writer
from tests.daemon import Daemon
from tests.mail import make_mail
from tests.pg_harness import session_cluster, use_postgresql
from tests.test_migrations import _migrate

CLIENT = "carol@client.test"
AGENT = "alice@acme.test"
VIEWED = "SELECT count(*) FROM audit_events WHERE action = ?"


def _session(d: Daemon, address: str, realm: str) -> str:
    """A session made with the store's own code, as the magic-link login does."""
    token = secrets.token_urlsafe(32)
    engine = create_writer_engine(load_config(d.config).database_url)
    with engine.begin() as conn:
        digest = hashlib.sha256((realm + token).encode()).hexdigest()
        access.new_session(conn, "acme", address, digest, repos.now(), timedelta(days=1))
    engine.dispose()
    return token


def _views(url: str, cookie: str, n: int) -> list[int]:
    def one(_: int) -> int:
        req = urllib.request.Request(url, headers={"Cookie": cookie})
        with urllib.request.urlopen(req, timeout=30) as r:
            r.read()
            return int(r.status)

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(n)))


def test_views_are_audited_once_each_after_a_burst_and_a_clean_stop(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "gw", http_extra="insecure_cookies = true").start()
    try:
        code, reply = d.send(make_mail(subject="Printer jammed"), sender=CLIENT)
        assert code == 250
        ref = d.ref(reply)
        base = f"http://127.0.0.1:{d.http_port}"
        client = f"gw_session={_session(d, CLIENT, '')}"
        agent = f"gw_agent={_session(d, AGENT, 'agent|')}"

        # A burst: every answered view has its row once the buffer is flushed.
        assert _views(f"{base}/t/acme/tickets/{ref}", client, 120) == [200] * 120
        assert _views(f"{base}/a/acme/t/{ref}", agent, 30) == [200] * 30
        assert d.count_reaching(VIEWED, 120, "web.ticket_viewed") == 120
        assert d.count_reaching(VIEWED, 30, "desk.ticket_viewed") == 30

        # More views and a clean stop at once: the stop writes what is buffered.
        assert _views(f"{base}/t/acme/tickets/{ref}", client, 80) == [200] * 80
        assert _views(f"{base}/a/acme/t/{ref}", agent, 20) == [200] * 20
    finally:
        assert d.stop() == 0
    assert d.query(VIEWED, "web.ticket_viewed")[0][0] == 200
    assert d.query(VIEWED, "desk.ticket_viewed")[0][0] == 50
    rows = d.query(
        "SELECT DISTINCT actor, ticket_id FROM audit_events WHERE action LIKE '%.ticket_viewed'"
    )
    ticket = d.query("SELECT id FROM tickets WHERE ref = ?", ref)[0][0]
    assert sorted(tuple(r) for r in rows) == sorted([(CLIENT, ticket), (AGENT, ticket)])


def test_the_buffer_is_bounded_and_keeps_what_a_failed_write_did_not_take(
    tmp_path: Path,
) -> None:
    """A full buffer makes the next view wait for a write (never more than ``limit``
    rows held), and rows a failed write did not take stay, in order, for the next."""
    if use_postgresql():
        cluster = session_cluster()
        url = cluster.url(cluster.new_database("views"))
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'g.db'}"
    _migrate(url)
    engine = create_writer_engine(url)
    count = text("SELECT count(*) FROM audit_events WHERE action = 'web.ticket_viewed'")

    async def go() -> None:
        writer = Writer(engine)
        views = ViewLog(writer, interval=3600, limit=4)  # only a full buffer or close writes
        for i in range(10):
            await views.add("acme", "web.ticket_viewed", actor=f"c{i}@x.test", ticket_id=None)
            assert len(views.rows) <= 4
        assert views.written == 8  # two full buffers, each written by the view that met it

        failing = ViewLog(Writer(engine), interval=3600, limit=100)
        await failing.add("acme", "web.ticket_viewed", actor="late@x.test", ticket_id=None)
        await failing.writer.close()  # a writer that takes nothing more
        with pytest.raises(Exception, match="shutting down"):
            await failing.flush()
        assert [r["actor"] for r in failing.rows] == ["late@x.test"]  # kept
        await failing.close()  # stops its flusher; the row is logged as lost, not raised

        await views.close()
        assert views.written == 10 and not views.rows
        await writer.close()

    asyncio.run(go())
    engine = create_writer_engine(url)
    with engine.connect() as conn:
        assert conn.execute(count).scalar_one() == 10
        actors = conn.execute(text("SELECT actor FROM audit_events ORDER BY id")).scalars()
        assert list(actors) == [f"c{i}@x.test" for i in range(10)]
    engine.dispose()
