"""Several instances on one database: leases and outbox claims, at the store level.

The lease and takeover tests run on the store of the run (SQLite, or PostgreSQL with
GATEWAY_TEST_DB=postgresql). The SKIP LOCKED test always runs on the session's
PostgreSQL cluster: it is PostgreSQL's row locking that keeps two instances'
claims apart, and only a real server can show that a second claim passes over the
rows of an open first one instead of waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, insert, select, text
from sqlalchemy.engine import Connection, Engine

from outbound.outbox_rows import (
    claim,
    is_plain_retry,
    mark_retries,
    mark_sent,
    record,
    release_claims,
)
from outbound.sender import Attempt
from routing.config import GatewayConfig, load_config
from store import leases, repos
from store.db import create_engine, create_writer_engine, upgrade
from store.models import outbox
from store.writer import Work, Writer
from tests.daemon import Daemon
from tests.pg_harness import session_cluster, use_postgresql
from tests.test_migrations import _migrate
from tests.test_retention_plan import _plan, _record

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def _migrated(url: str) -> Engine:
    _migrate(url)
    return create_writer_engine(url)


def _url(tmp_path: Path, *, postgresql: bool) -> str:
    if postgresql:
        cluster = session_cluster()
        return cluster.url(cluster.new_database("inst"))
    return f"sqlite+aiosqlite:///{tmp_path / 'g.db'}"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    e = _migrated(_url(tmp_path, postgresql=use_postgresql()))
    yield e
    e.dispose()


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[Engine]:
    e = _migrated(_url(tmp_path, postgresql=True))
    yield e
    e.dispose()


def _queue(engine: Engine, n: int, *, apart: timedelta = timedelta(0)) -> None:
    """``n`` acknowledgements due from T0, each ``apart`` after the one before."""
    rows = [
        {
            "tenant": "acme",
            "ticket_id": None,
            "kind": "ack",
            "message_id": f"<m{i}@gw.test>",
            "mail_from": "",
            "rcpt_tos": json.loads('["c@x.test"]'),
            "body": b"x",
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": T0 + i * apart,
            "created_at": T0,
            "to_addr": "c@x.test",
        }
        for i in range(n)
    ]
    with engine.begin() as conn:
        conn.execute(insert(outbox), rows)


def test_a_lease_has_one_holder_and_passes_on_when_it_runs_out(engine: Engine) -> None:
    with engine.begin() as conn:
        assert leases.acquire(conn, "imap:acme:box", "a", T0, 30)
        assert not leases.acquire(conn, "imap:acme:box", "b", T0 + timedelta(seconds=10), 30)
        assert leases.acquire(conn, "imap:acme:box", "a", T0 + timedelta(seconds=20), 30)  # renew
        # a's renewal at +20 s holds until +50 s: b still waits at +45 s ...
        assert not leases.acquire(conn, "imap:acme:box", "b", T0 + timedelta(seconds=45), 30)
        assert leases.holders(conn)["imap:acme:box"][0] == "a"
        # ... and takes over once a is silent past it.
        assert leases.acquire(conn, "imap:acme:box", "b", T0 + timedelta(seconds=51), 30)
        assert not leases.acquire(conn, "imap:acme:box", "a", T0 + timedelta(seconds=52), 30)
        assert leases.holders(conn)["imap:acme:box"][0] == "b"
        # A clean stop releases: a gets it back at once, without waiting for it to run out.
        leases.release(conn, "imap:acme:box", "b")
        assert leases.acquire(conn, "imap:acme:box", "a", T0 + timedelta(seconds=53), 30)
        # Another name is another lease.
        assert leases.acquire(conn, "jobs:ops", "b", T0 + timedelta(seconds=53), 30)


@pytest.mark.parametrize("steps", [1, 3])
def test_a_stop_releases_the_lease_wherever_it_finds_the_holder(engine: Engine, steps: int) -> None:
    """Cancelled inside its very first check (the daemon told to stop just after it
    was ready), or later: the name is freed at once, never left to run out."""
    from gateway.ops.instance import hold

    async def go() -> None:
        writer = Writer(engine)
        try:
            await writer.submit(
                lambda c: leases.acquire(c, "instance:solo", "me", datetime.now(UTC), 30)
            )
            task = asyncio.create_task(
                hold(writer, "instance:solo", "me", 30, asyncio.Event().wait)
            )
            for _ in range(steps):
                await asyncio.sleep(0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            assert "instance:solo" not in await writer.submit(leases.holders)
        finally:
            await writer.close()

    asyncio.run(go())


@pytest.fixture
def config(tmp_path: Path) -> GatewayConfig:
    """A config for record's retry policy; no tenant is needed for a ``sent``."""
    (tmp_path / "gateway.toml").write_text(
        '[gateway]\nhostname = "gw.test"\n[[tenants]]\nslug = "acme"\n'
        'addresses = ["support@acme.test"]\n',
        encoding="utf-8",
    )
    return load_config(tmp_path / "gateway.toml")


def test_a_dead_instances_claims_are_taken_over_after_the_lease(
    engine: Engine, config: GatewayConfig
) -> None:
    _queue(engine, 3)
    with engine.begin() as conn:
        first = claim(conn, T0, 10, "a", 60)
    assert len(first) == 3
    with engine.begin() as conn:
        # b sees nothing while a's lease lasts, and its restart releases only its own.
        assert claim(conn, T0 + timedelta(seconds=59), 10, "b", 60) == []
        assert release_claims(conn, "b") == 0
        taken = claim(conn, T0 + timedelta(seconds=61), 10, "b", 60)
    assert sorted(r["id"] for r in taken) == sorted(r["id"] for r in first)
    with engine.begin() as conn:
        # a wakes up late: its answer no longer counts, b's claim stands.
        assert not record(conn, config, None, first[0], Attempt("sent"), "a")
        assert record(conn, config, None, taken[0], Attempt("sent"), "b")
        rows = {r.id: r for r in conn.execute(select(outbox))}
    assert rows[taken[0]["id"]].status == "sent" and rows[taken[0]["id"]].claimed_by is None
    assert {rows[r["id"]].claimed_by for r in taken[1:]} == {"b"}
    with engine.begin() as conn:  # b restarts: its own claims go back to pending at once
        assert release_claims(conn, "b") == 2


def test_claims_and_sent_marks_past_one_statements_ids_keep_only_their_own(
    engine: Engine,
) -> None:
    """A claim and a sent mark name their rows by fixed statements of a power-of-two
    size (store/direct.py, ``repos.ids_asked``): 150 rows are three statements' worth,
    a short list repeats its last id, and a row another instance took over is left as
    it has it and is not counted as sent."""
    _queue(engine, 151)
    with engine.begin() as conn:
        mine = claim(conn, T0, 150, "a", 60)
        theirs = claim(conn, T0 + timedelta(seconds=61), 1, "b", 60)  # a's lease ran out
    assert len(mine) == 150 and len({r["id"] for r in mine}) == 150
    assert all(r["status"] == "pending" and r["claimed_by"] is None for r in mine)
    assert isinstance(mine[0]["next_attempt_at"], datetime) and mine[0]["body"] == b"x"
    with engine.begin() as conn:
        sent = mark_sent(conn, [r["id"] for r in mine], "a")
        rows = {r.id: r for r in conn.execute(select(outbox))}
    lost = theirs[0]["id"]
    assert lost in {r["id"] for r in mine}  # the oldest due row: a's first, then b's
    assert sent == {r["id"] for r in mine} - {lost}
    assert {(rows[i].status, rows[i].attempts, rows[i].claimed_by) for i in sent} == {
        ("sent", 1, None)
    }
    assert (rows[lost].status, rows[lost].claimed_by) == ("sending", "b")
    (left,) = [r for r in rows.values() if r.id not in sent and r.id != lost]
    assert (left.status, left.claimed_by) == ("pending", None)  # past the limit: not claimed
    with engine.begin() as conn:  # three ids, asked as four (the last repeated)
        few = claim(conn, T0, 3, "c", 60)
        assert len(few) == 1 and few[0]["id"] == left.id
        assert mark_sent(conn, [left.id, left.id, left.id], "c") == {left.id}


def test_a_claim_takes_lapsed_and_due_rows_oldest_first_up_to_its_limit(engine: Engine) -> None:
    """The two halves of a claim (rows due, rows whose lease ran out) are asked apart
    (outbound/outbox_rows.py says why) and taken together by when they fell due: a row a
    dead instance held is not passed over for younger due rows, nor taken beyond the
    limit."""
    _queue(engine, 4, apart=timedelta(seconds=1))
    with engine.begin() as conn:
        ids = sorted(conn.execute(select(outbox.c.id)).scalars())
    with engine.begin() as conn:
        first = claim(conn, T0 + timedelta(seconds=10), 1, "a", 60)
    assert [r["id"] for r in first] == ids[:1]
    with engine.begin() as conn:  # a's lease ran out at +70 s
        taken = claim(conn, T0 + timedelta(seconds=71), 2, "b", 60)
        rows = {r.id: r for r in conn.execute(select(outbox))}
    assert [(r["id"], r["status"]) for r in taken] == [(ids[0], "sending"), (ids[1], "pending")]
    assert [(rows[i].status, rows[i].claimed_by) for i in ids] == [
        ("sending", "b"),
        ("sending", "b"),
        ("pending", None),
        ("pending", None),
    ]


def test_a_claim_reads_the_due_rows_in_order_from_the_index_whatever_the_backlog(
    engine: Engine,
) -> None:
    """After an outage the outbox holds thousands of due rows, and a claim takes 32 at a
    time. One statement with an OR of the claim's two halves made SQLite gather every due
    row and sort them (a temporary B-tree), and PostgreSQL do the same through a bitmap
    scan, which also revisits the index entries of every row sent since the last VACUUM:
    each claim cost the size of the backlog (12.5 ms a claim at 40,000 due rows on SQLite
    against 0.8; bench/results/notes/claim30.md). Each half alone walks the index of
    (status, next_attempt_at) and stops at the limit."""
    _queue(engine, 3000, apart=timedelta(milliseconds=1))
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE outbox")
    seen = _record(engine)
    with engine.begin() as conn:
        assert len(claim(conn, T0 + timedelta(hours=1), 32, "a", 60)) == 32
    reads = [(sql, params) for sql, params in seen if sql.lstrip().upper().startswith("SELECT")]
    assert reads
    with engine.begin() as conn:
        for sql, params in reads:
            plan = _plan(conn, sql, params)
            if engine.dialect.name == "postgresql":
                assert "Index Scan using ix_outbox_status_next_attempt_at" in plan, plan
                assert "Bitmap" not in plan, plan
            else:
                assert "USING INDEX ix_outbox_status_next_attempt_at" in plan, plan
                assert "TEMP B-TREE" not in plan and "MULTI-INDEX OR" not in plan, plan


def test_retries_are_marked_in_one_statement_each_row_its_own_and_only_if_still_ours(
    engine: Engine, config: GatewayConfig
) -> None:
    """A batch of temporary failures (an account down) is written by one UPDATE (one
    round trip on PostgreSQL), yet each row gets its own error and backed-off time, as
    ``record`` gives one, and a row another instance took over is left as it has it."""
    _queue(engine, 4)
    with engine.begin() as conn:
        mine = claim(conn, T0, 3, "a", 60)
        theirs = claim(conn, T0 + timedelta(seconds=61), 1, "b", 60)  # a's lease ran out
    lost = next(r for r in mine if r["id"] == theirs[0]["id"])
    now = T0 + timedelta(seconds=70)
    items = [(r, Attempt("retry", detail=f"451 busy {r['id']}"), config) for r in mine]
    assert all(is_plain_retry(config, r, a, now) for r, a, _ in items)
    too_old = now + timedelta(seconds=config.outbound.max_age)
    assert not is_plain_retry(config, mine[0], items[0][1], too_old)
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    with engine.begin() as conn:
        kept = mark_retries(conn, items, "a", now)
        rows = {r.id: r for r in conn.execute(select(outbox))}
    assert sum(s.lstrip().upper().startswith("UPDATE") for s in seen) == 1, seen
    assert kept == {r["id"] for r in mine} - {lost["id"]}
    for i in kept:
        r = rows[i]
        assert (r.status, r.attempts, r.claimed_by, r.claimed_until) == ("pending", 1, None, None)
        assert r.last_error == f"451 busy {i}"
        due = (
            r.next_attempt_at.replace(tzinfo=UTC)
            if r.next_attempt_at.tzinfo is None
            else r.next_attempt_at
        )
        # retry_base 30 s, jittered by 0.5-1.5
        assert now + timedelta(seconds=15) <= due <= now + timedelta(seconds=45), due
    untouched = rows[lost["id"]]
    assert (untouched.status, untouched.claimed_by, untouched.attempts) == ("sending", "b", 0)


def test_concurrent_claims_skip_each_others_rows_on_postgresql(pg: Engine) -> None:
    _queue(pg, 6)
    with pg.connect() as a, pg.connect() as b:
        ta = a.begin()
        mine = claim(a, T0, 4, "a", 60)  # a's transaction is still open: rows locked
        tb = b.begin()
        b.execute(text("SET LOCAL lock_timeout = '3s'"))  # waiting would fail, not hang
        theirs = claim(b, T0, 4, "b", 60)
        tb.commit()
        ta.commit()
    assert len(mine) == 4 and len(theirs) == 2
    assert not {r["id"] for r in mine} & {r["id"] for r in theirs}
    with pg.connect() as conn:
        owners = dict(conn.execute(select(outbox.c.id, outbox.c.claimed_by)).all())
    assert sorted(owners.values()) == ["a"] * 4 + ["b"] * 2


def test_instances_starting_together_migrate_one_after_the_other(tmp_path: Path) -> None:
    """Three instances' first start on one empty PostgreSQL database: all come up."""
    url = _url(tmp_path, postgresql=True)

    async def one() -> None:
        engine = create_engine(url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    async def together() -> None:
        async with asyncio.timeout(60):
            await asyncio.gather(one(), one(), one())

    asyncio.run(together())
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from store.db import MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    e = create_writer_engine(url)
    try:
        with e.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).all() == [(head,)]
    finally:
        e.dispose()


# --- one name, one live instance ---------------------------------------------------


def _twin(home: Path, url: str, lease: int = 3) -> Daemon:
    return Daemon(
        home, database_url=url, gateway_extra=f'instance = "twin"\nlease_seconds = {lease}'
    )


def _shared_url(tmp_path: Path) -> str:
    if use_postgresql():
        cluster = session_cluster()
        return cluster.url(cluster.new_database("twin"))
    return f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"


def test_a_second_live_instance_under_one_name_is_refused(tmp_path: Path) -> None:
    """Two live gateways under one name would release each other's outbox claims: the
    first runs on this host, so the second says at once that it is already running,
    with its pid, and exits 78 with one line (systemd does not restart it)."""
    url = _shared_url(tmp_path)
    first = _twin(tmp_path / "a", url).start()
    try:
        second = _twin(tmp_path / "b", url)
        proc = subprocess.run(
            [sys.executable, "-m", "gateway", "run", "--config", str(second.config)],
            cwd=second.home,
            env=second.env,
            capture_output=True,
            timeout=60,
        )
        assert proc.returncode == 78, proc.stderr
        lines = proc.stderr.decode().strip().splitlines()
        assert lines[-1].startswith("gateway: [gateway] instance 'twin' is in use"), lines
        assert "Traceback" not in proc.stderr.decode()
        assert first.proc is not None and first.proc.poll() is None  # the first goes on
        assert f"already running on this host as pid {first.proc.pid}" in lines[-1], lines
        assert '"instance.waiting"' not in proc.stderr.decode()  # no lease was waited out
    finally:
        first.stop()


def test_a_reused_pid_on_this_host_is_waited_out_not_taken_for_a_gateway(
    tmp_path: Path,
) -> None:
    """The holder's pid runs here, but not a gateway (the pid was reused after a
    crash): only the lease can tell, so it is waited out, then taken over."""
    url = _shared_url(tmp_path)
    other = subprocess.Popen(["sleep", "120"])
    try:
        engine = create_writer_engine(url)
        try:
            _migrate(url)
            with engine.begin() as conn:
                holder = f"{socket.gethostname()[:80]}:{other.pid}:00"
                # usually still held when the gateway starts, so it waits; held or
                # not by then, the gateway must not be refused
                leases.acquire(conn, "instance:twin", holder, datetime.now(UTC), 8)
        finally:
            engine.dispose()
        gw = _twin(tmp_path / "a", url).start()  # refused, it would raise here
        try:
            assert gw.proc is not None
            taken = gw.query("SELECT holder FROM leases WHERE name = 'instance:twin'")
            assert taken[0][0].split(":")[1] == str(gw.proc.pid)
            assert "already running" not in gw.log_text()
        finally:
            gw.stop()
    finally:
        other.kill()
        other.wait()


def test_a_restart_after_a_crash_takes_its_name_back_at_once(tmp_path: Path) -> None:
    """The predecessor's pid is gone on this host: no waiting out its lease. A holder
    on another host that stops renewing is waited out for one lease, then replaced."""
    url = _shared_url(tmp_path)
    # Leases far longer than a start on a loaded machine takes: "replaced at once"
    # must not pass (or fail) because the lease ran out while the gateway started.
    gw = _twin(tmp_path / "a", url, lease=20)
    try:
        gw.start()
        gw.kill()
        gw.start()
        assert '"instance.replacing"' in gw.log_text()
        assert '"instance.waiting"' not in gw.log_text()
        gw.stop()
        # A clean stop released the name; now pretend a host elsewhere held it and died.
        engine = create_writer_engine(url)
        try:
            with engine.begin() as conn:
                # long enough to be still held once the gateway has started on a busy machine
                leases.acquire(conn, "instance:twin", "elsewhere:1:00", datetime.now(UTC), 15)
        finally:
            engine.dispose()
        gw.start()
        log = gw.log_text()
        assert '"instance.waiting"' in log and "elsewhere:1:00" in log
        gw.stop()
    finally:
        gw.kill()  # a failed assertion must not leave a gateway running


# --- two instances numbering tickets for the same tenants ---------------------------


def _crossed_tickets(url: str) -> tuple[int, list[tuple[str, int]]]:
    """Two writers (two instances' worth) each number a ticket for tenant a and one for
    b, in opposite orders, meeting in the middle: with a counter row per tenant locked
    until the commit, the classic lock-order deadlock. On a new database, so the
    tenants' sequences are made on the way (by both at once)."""
    meet = threading.Barrier(2)

    def crossed(first: str, second: str) -> Work[None]:
        def work(conn: Connection) -> None:
            repos.new_ticket(conn, first, first.upper(), "crossed")
            with contextlib.suppress(threading.BrokenBarrierError):
                meet.wait(timeout=2)  # the other has numbered its first ticket now
            repos.new_ticket(conn, second, second.upper(), "crossed")

        return work

    async def go() -> int:
        writers = [Writer(create_writer_engine(url)) for _ in range(2)]
        try:
            await asyncio.gather(
                writers[0].submit(crossed("a", "b")), writers[1].submit(crossed("b", "a"))
            )
            return sum(w.retries for w in writers)
        finally:
            for w in writers:
                await w.close()

    retries = asyncio.run(go())
    engine = create_writer_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT tenant, number FROM tickets ORDER BY 1, 2"))
            return retries, [(r[0], r[1]) for r in rows]
    finally:
        engine.dispose()


def test_crossed_ticket_numbering_does_not_deadlock_on_postgresql(tmp_path: Path) -> None:
    """Numbers come from sequences, which hold no lock until the commit: the crossed
    units neither wait for each other nor deadlock (no one-second stall of
    deadlock_timeout, no retry), and no number is drawn twice or skipped."""
    cluster = session_cluster()
    url = cluster.url(cluster.new_database("cross"))
    _migrated(url).dispose()
    retries, rows = _crossed_tickets(url)
    assert rows == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
    assert retries == 0


@pytest.mark.parametrize("first", ["savepoint", "statement"])
def test_the_writer_runs_a_unit_again_on_a_new_connection_after_a_server_restart(
    tmp_path: Path, first: str
) -> None:
    """The writer's engine does not ping each connection before a batch (a round trip
    each on PostgreSQL): a unit whose pooled connection died meanwhile (the server
    restarted, here: every backend of the database terminated) runs again on a new
    one, whether its first statement goes through SQLAlchemy or straight to the driver
    (a savepoint), instead of answering the sender 451."""
    from store.db import Savepoint

    cluster = session_cluster()
    database = cluster.new_database("stale")
    url = cluster.url(database)
    _migrate(url)
    engine = create_writer_engine(url, pre_ping=False)

    def unit(conn: Connection) -> int:
        if first == "savepoint":
            sp = Savepoint(conn)
            n = int(conn.execute(text("SELECT 7")).scalar_one())
            sp.commit()
            return n
        return int(conn.execute(text("SELECT 7")).scalar_one())

    async def go() -> tuple[int, int, int]:
        writer = Writer(engine)
        try:
            before = await writer.submit(unit)  # a connection now waits in the pool
            with cluster.connect(autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (database,),
                )
            after = await writer.submit(unit)
            return before, after, writer.retries
        finally:
            await writer.close()

    before, after, retries = asyncio.run(go())
    assert (before, after) == (7, 7)
    assert retries == 1  # the dead connection was met, and the unit ran again
