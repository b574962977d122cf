"""The writer's held rows (store/deferred.py) and the statements said straight to the
driver (store/direct.py), on a real store: SQLite, or with GATEWAY_TEST_DB=postgresql a
database of the session's PostgreSQL cluster. The commit stages run as the writer runs
them, several messages in one transaction, each in its savepoint."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import re
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from gateway.intake.commit import commit_message, jobs, lookup
from gateway.intake.decide import Arrival, decide
from outbound.compose import Templates
from parsers import parse
from routing.config import GatewayConfig, load_config
from routing.tenants import AddressIndex
from routing.verdicts import Reject
from store import acks, deferred, ingest, repos, ticket_life
from store import participants as people
from store.blobs_db import DatabaseBlobStore, read_in_transaction
from store.bouncing import clear_bouncing, first_look, mark_bouncing
from store.db import Savepoint, create_writer_engine
from store.direct import Direct
from store.faults import message_commit
from store.models import (
    attachments,
    audit_events,
    blobs,
    bouncing,
    message_ids,
    messages,
    metadata,
    outbox,
    participants,
    ticket_counters,
    tickets,
)
from store.writer import Writer
from tests.mail import make_mail
from tests.pg_harness import session_cluster, use_postgresql
from tests.test_stages import CONFIG, NOW, _mail, _raw


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> GatewayConfig:
    path = tmp_path_factory.mktemp("deferred") / "gateway.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return load_config(path)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    if use_postgresql():
        cluster = session_cluster()
        url = cluster.url(cluster.new_database("deferred"))
    else:
        url = f"sqlite:///{tmp_path / 'gw.db'}"
    engine = create_writer_engine(url)
    metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def conn(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as c, c.begin():
        yield c


def _commit(config: GatewayConfig, conn: Connection, data: bytes, *rcpts: str) -> Any:
    raw = _raw(data, *rcpts)
    named = jobs(AddressIndex(config), raw.envelope.rcpt_tos)
    msg = Arrival(raw, parse(data), hashlib.sha256(data).hexdigest(), NOW)
    return commit_message(conn, config, Templates.of(config), named, msg, lambda c: None)


def _count(conn: Connection, table: Any, *where: Any) -> int:
    return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


def test_held_rows_are_written_at_the_flush_and_a_rejected_messages_are_not(
    config: GatewayConfig, conn: Connection
) -> None:
    with deferred.hold(conn):
        stored = _commit(config, conn, _mail("Printer"))
        # globex stores and acknowledges first, then acme's rule rejects the envelope:
        # the savepoint takes globex's held audit and outbox rows with it.
        refused = _commit(
            config,
            conn,
            _mail("viagra", to="help@globex.test, support@acme.test"),
            "help@globex.test",
            "support@acme.test",
        )
        assert isinstance(refused, Reject) and stored[0].ticket_ref == "ACME-1"
        assert _count(conn, audit_events) == 0 and _count(conn, outbox) == 0  # held
        deferred.flush(conn)
    assert [t for (t,) in conn.execute(select(tickets.c.ref))] == ["ACME-1"]
    actions = conn.execute(select(audit_events.c.action, audit_events.c.ticket_id)).all()
    assert [a for a, _ in actions] == ["ticket.created"]
    kinds = sorted(k for (k,) in conn.execute(select(outbox.c.kind)))
    assert kinds == ["ack", "notice"]
    assert {r.tenant for r in conn.execute(select(outbox.c.tenant))} == {"acme"}
    # each queued mail's Message-ID is an anchor for threading, as without holding
    assert _count(conn, message_ids, message_ids.c.origin == "out") == 2


def test_the_acknowledgement_limit_counts_held_acknowledgements(
    config: GatewayConfig, conn: Connection
) -> None:
    """Twelve new tickets from one sender (and its +tag form) in one batch: the
    rate limit (ten a window) must see the acknowledgements not yet written."""
    with deferred.hold(conn):
        for i in range(12):
            sender = "kim@client.test" if i % 2 else f"kim+t{i}@client.test"
            _commit(config, conn, _mail(f"Printer {i}", sender=sender))
        deferred.flush(conn)
    assert _count(conn, tickets) == 12
    assert _count(conn, outbox, outbox.c.kind == "ack") == 10


def test_the_acknowledgement_count_takes_the_tagged_forms_and_only_them(
    conn: Connection,
) -> None:
    """The rate limit's count: the address and its ``+tag`` forms, of this tenant, in the
    window; not an address that merely starts alike, nor a LIKE wildcard's match. The read
    is bounded by the index on the address, not every ack of the tenant, also in the plan
    PostgreSQL makes once for any value (a prepared statement's generic plan)."""
    addrs = ["kim@client.test", "kim+a@client.test", "KIM+b@client.test", "kim+@client.test"]
    addrs += ["kimberly@client.test", "kim.x@client.test", "ki@client.test", "kim@other.test"]
    addrs += ["k%m@client.test", "k%m+1@client.test", "kxm+1@client.test"]

    def queue(tenant: str, kind: str, to: str, i: int, days: int = 0) -> None:
        row = (kind, None, f"<{kind}.{i}@gw.test>", "", [to], b"x")
        repos.enqueue_many(conn, tenant, [row], now=NOW - timedelta(days=days))

    for i, a in enumerate(addrs):
        queue("acme", "ack", a, i)
    queue("acme", "notice", "kim@client.test", 100)  # not an acknowledgement
    queue("globex", "ack", "kim@client.test", 101)  # another tenant's
    queue("acme", "ack", "kim@client.test", 102, days=1)  # before the window
    since = NOW - timedelta(hours=1)
    counts = {a: acks.acks_since(conn, "acme", a, since) for a in addrs[:1] + addrs[4:9]}
    assert counts == {
        "kim@client.test": 4,
        "kimberly@client.test": 1,
        "kim.x@client.test": 1,
        "ki@client.test": 1,
        "kim@other.test": 1,
        "k%m@client.test": 2,
    }
    assert acks.acks_since(conn, "acme", "Kim+zz@Client.test", since) == 4
    # The commit's first read counts the same (nothing is held here).
    for a, n in counts.items():
        assert first_look(conn, "acme", "<none@x>", a, since) == (None, False, n, None, None)
    assert first_look(conn, "acme", "<none@x>", "Kim+zz@Client.test", since)[2] == 4
    seen: list[tuple[str, Any]] = []
    event.listen(conn.engine, "before_cursor_execute", lambda *a: seen.append(a[2:4]))
    acks.acks_since(conn, "acme", "kim@client.test", since)
    sql, params = next(s for s in seen if "count(" in s[0])
    explain = "EXPLAIN QUERY PLAN"
    if conn.dialect.name == "postgresql":  # enough other acks that a scan costs more
        others = [
            ("ack", None, f"<x{i}@gw.test>", "", [f"x{i}@client.test"], b"x") for i in range(3000)
        ]
        repos.enqueue_many(conn, "acme", others, now=NOW)
        conn.exec_driver_sql("ANALYZE outbox")
        explain = "EXPLAIN"
    plan = " ".join(str(r) for r in conn.exec_driver_sql(f"{explain} {sql}", params))
    # the index bounds the tagged forms by the address range: in plain comparisons on
    # SQLite (its LIKE cannot), in text_pattern_ops' own operators on PostgreSQL
    assert ("to_addr>" if conn.dialect.name == "sqlite" else "~>=~") in plan, plan
    if conn.dialect.name == "postgresql":
        # The writer's statements are prepared, and after five runs PostgreSQL plans them
        # once for any value (a generic plan), where a LIKE's pattern is unknown: the
        # bounds must serve that plan too (else it reads every ack of the tenant).
        from psycopg import sql as pg_sql

        names: list[str] = []  # the statement's parameters, as PREPARE numbers them

        def numbered(m: re.Match[str]) -> str:
            if m.group(1) not in names:
                names.append(m.group(1))
            return f"${names.index(m.group(1)) + 1}"

        prepared = re.sub(r"%\((\w+)\)s", numbered, sql)
        args = pg_sql.SQL(", ").join(pg_sql.Literal(params[n]) for n in names)
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        cur = dbapi.cursor()  # no parameters: the pattern's % is the LIKE's
        cur.execute(f"PREPARE ack_count AS {prepared}")
        cur.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        cur.execute(f"EXPLAIN EXECUTE ack_count({args.as_string(dbapi)})")
        rows = [str(r[0]) for r in cur.fetchall()]
        cur.execute("DEALLOCATE ack_count")
        bounded = [r for r in rows if "Index Cond" in r and "~>=~ ($" in r]
        assert bounded, "\n".join(rows)


def test_a_reply_in_the_same_batch_threads_on_held_anchors_and_participants(
    config: GatewayConfig, conn: Connection
) -> None:
    """Lee, copied on Kim's new ticket, answers it before the batch is written: the reply
    threads by the held Message-ID, and Lee takes part by the held participant row (not an
    outsider, whose reply would change nothing)."""
    first = _mail("Printer")
    reply = _mail(
        "Re: Printer",
        sender="lee@client.test",
        headers=f"In-Reply-To: {parse(first).message_id}\r\n",
    )
    with deferred.hold(conn):
        opened = _commit(config, conn, first)
        answered = _commit(config, conn, reply)
        assert _count(conn, message_ids) == 0 and _count(conn, participants) == 0  # held
        deferred.flush(conn)
    assert (answered[0].ticket_ref, answered[0].thread_by) == (opened[0].ticket_ref, "references")
    assert "outsider" not in answered[0].flagged
    assert _count(conn, message_ids, message_ids.c.origin == "in") == 2
    people_on = conn.execute(select(participants.c.address).order_by(participants.c.id)).all()
    assert [a for (a,) in people_on] == ["kim@client.test", "lee@client.test"]


@pytest.mark.parametrize("closed", [False, True])
def test_a_clients_follow_up_moves_the_clocks_its_ticket_update_returned(
    config: GatewayConfig, conn: Connection, closed: bool
) -> None:
    """The follow-up's UPDATE of its ticket returns the clocks (no read of its own): the
    client's reply ends the wait on them, and one to a closed ticket (the reopening in
    the same UPDATE) makes the closed time a pause."""
    first = _mail("Printer")
    opened = _commit(config, conn, first)
    hour_ago = NOW - timedelta(hours=1)
    waiting = {"sla_pauses": [[hour_ago.isoformat(), None]]}
    shut = {"status": "closed", "resolved_at": hour_ago, "sla_pauses": []}
    conn.execute(update(tickets).values(**(shut if closed else waiting)))
    reply = _mail("Re: Printer", headers=f"In-Reply-To: {parse(first).message_id}\r\n")
    assert _commit(config, conn, reply)[0].ticket_ref == opened[0].ticket_ref
    row = conn.execute(select(tickets.c.status, tickets.c.sla_pauses, tickets.c.resolved_at)).one()
    assert row.status == "open" and row.resolved_at is None
    assert row.sla_pauses == [[hour_ago.isoformat(), NOW.isoformat()]]


def test_the_agents_bouncing_marks_are_read_once_a_batch_and_again_after_a_change(
    config: GatewayConfig, conn: Connection
) -> None:
    """The agents' marks are kept for the batch's messages; a mark cleared (or made) on
    the connection is seen by the next message. The sender's mark comes with the dedupe
    read, and a sender who writes again loses it."""
    with deferred.hold(conn):
        mark_bouncing(conn, "acme", "alice@acme.test", "5.1.1", "test", now=NOW)
        _commit(config, conn, _mail("One"))
        _commit(config, conn, _mail("Two"))
        clear_bouncing(conn, "acme", "alice@acme.test")
        mark_bouncing(conn, "acme", "Kim@client.test", "5.1.1", "test", now=NOW)
        _commit(config, conn, _mail("Three"))
        deferred.flush(conn)
    sent = conn.execute(select(outbox.c.kind, outbox.c.to_addr).order_by(outbox.c.id)).all()
    assert [tuple(r) for r in sent] == [
        ("ack", "kim@client.test"),
        ("ack", "kim@client.test"),
        ("ack", "kim@client.test"),
        ("notice", "alice@acme.test"),
    ]
    assert _count(conn, bouncing) == 0


def test_a_held_participant_taken_back_stays_out_unless_its_savepoint_is_undone(
    conn: Connection,
) -> None:
    """An agent's ``#cc remove`` of someone the batch added: no row at the flush; a
    reaction rolled back after it (its savepoint) gives the row back."""
    conn.execute(insert(tickets).values(tenant="acme", number=1, ref="ACME-1", subject="s",
                                        status="open", queue="default", created_at=NOW,
                                        updated_at=NOW))  # fmt: skip
    tid = conn.execute(select(tickets.c.id)).scalar_one()
    with deferred.hold(conn):
        people.hold(conn, "acme", tid, [("dave@client.test", "", "cc")], NOW)
        assert people.is_participant(conn, "acme", tid, "dave@client.test")
        undone = Savepoint(conn)
        assert people.remove(conn, "acme", tid, "dave@client.test")
        assert people.of_ticket(conn, "acme", tid) == []
        undone.rollback()
        assert people.of_ticket(conn, "acme", tid) == [
            {"address": "dave@client.test", "name": "", "role": "cc"}
        ]
        assert not people.add(
            conn, "acme", tid, "dave@client.test", "", "cc", NOW
        )  # held: no change
        kept = Savepoint(conn)
        assert people.remove(conn, "acme", tid, "dave@client.test")
        assert not people.is_participant(conn, "acme", tid, "dave@client.test")
        kept.commit()
        people.hold(conn, "acme", tid, [("erin@client.test", "Erin", "client")], NOW)
        deferred.flush(conn)
    assert [a for (a,) in conn.execute(select(participants.c.address))] == ["erin@client.test"]


def test_a_direct_statement_raises_sqlalchemys_error_and_is_seen_by_listeners(
    conn: Connection,
) -> None:
    """The writer retries on the wrapped error's sqlstate (store/writer.py), and
    tests/test_isolation.py checks every statement a listener sees."""
    seen: list[str] = []

    def listener(_c: Any, _cur: Any, statement: str, *_rest: Any) -> None:
        seen.append(statement)

    event.listen(conn.engine, "before_cursor_execute", listener)
    counter = Direct(insert(ticket_counters), ("tenant", "last_number"))
    counter.rowcount(conn, {"tenant": "acme", "last_number": 1})
    assert repos.find_message(conn, "acme", "<none@x>") is None
    assert any("INSERT INTO ticket_counters" in s for s in seen)
    assert any("messages.tenant" in s for s in seen)
    nested = conn.begin_nested()
    with pytest.raises(IntegrityError) as caught:
        counter.rowcount(conn, {"tenant": "acme", "last_number": 2})
    nested.rollback()
    assert caught.value.orig is not None
    event.remove(conn.engine, "before_cursor_execute", listener)


def test_the_writer_holds_message_rows_only_and_writes_them_before_other_work(
    config: GatewayConfig, engine: Engine
) -> None:
    """One batch: a message, a unit that reads the audit log, another message. The reader
    sees the first message's row (flushed before it); all three commit together."""
    writer = Writer(engine)

    def message(subject: str) -> Any:
        return message_commit(lambda c: _commit(config, c, _mail(subject)))

    def audit_count(c: Connection) -> int:
        return _count(c, audit_events)

    async def batch() -> list[Any]:
        try:
            return await asyncio.gather(
                writer.submit(message("Printer")),
                writer.submit(audit_count),
                writer.submit(message("Scanner")),
            )
        finally:
            await writer.close()

    first, seen, second = asyncio.run(batch())
    assert (first[0].ticket_ref, second[0].ticket_ref) == ("ACME-1", "ACME-2")
    assert seen == 1
    assert writer.batches == 1
    with engine.connect() as c:
        assert _count(c, audit_events) == 2
        assert _count(c, outbox, outbox.c.kind == "ack") == 2


def test_sqlites_datetimes_are_bound_as_sqlalchemy_writes_them() -> None:
    """``Direct``'s SQLite DATETIME processor is a faster spelling of SQLAlchemy's: the
    same string for every datetime, naive or aware (the offset is not stored, as before),
    from year 1 to 9999, any microsecond; a date and None still go SQLAlchemy's way."""
    import random
    from datetime import date, datetime, timezone

    from sqlalchemy import DateTime
    from sqlalchemy.dialects import sqlite

    from store.direct import bind_processor

    dialect = sqlite.dialect()
    rnd = random.Random(21)
    values: list[Any] = [None, date(2026, 5, 6), datetime(1, 1, 1), NOW]
    values.append(datetime(9999, 12, 31, 23, 59, 59, 999999))
    for i in range(3000):
        v = datetime(rnd.randint(1, 9999), rnd.randint(1, 12), rnd.randint(1, 28),
                     rnd.randint(0, 23), rnd.randint(0, 59), rnd.randint(0, 59),
                     rnd.choice([0, 1, 999999, rnd.randint(0, 999999)]))  # fmt: skip
        values.append(v.replace(tzinfo=timezone(timedelta(minutes=i % 1800 - 900))) if i % 2 else v)
    for type_ in (DateTime(), DateTime(timezone=True)):
        fast = bind_processor(type_, dialect)
        general = type_.dialect_impl(dialect).bind_processor(dialect)
        assert fast is not None and general is not None
        assert [fast(v) for v in values] == [general(v) for v in values]
    # another storage format keeps SQLAlchemy's processor
    assert bind_processor(sqlite.DATETIME(truncate_microseconds=True), dialect)(NOW) == (
        NOW.strftime("%Y-%m-%d %H:%M:%S")
    )


def test_a_follow_ups_notice_references_the_thread_with_no_read_after_its_insert(
    config: GatewayConfig, conn: Connection
) -> None:
    """The agents' notice of each follow-up names the ticket's newest Message-IDs, its own
    last, as ``repos.thread_ids`` reads them after the follow-up is stored; they came with
    the ticket's state (store/ticket_life.py), so no read of them is made. Past the limit
    the oldest drop out; a follow-up without a Message-ID adds none."""
    first = _mail("Printer")
    opened = _commit(config, conn, first)
    tid = repos.ticket_by_ref(conn, "acme", opened[0].ticket_ref)
    anchor = parse(first).message_id
    said: list[str] = []
    event.listen(conn.engine, "before_cursor_execute", lambda *a: said.append(a[2]))
    for i in range(repos.THREAD_IDS + 2):
        reply = _mail(f"Re: Printer {i}", headers=f"In-Reply-To: {anchor}\r\n")
        if i == 3:
            reply = reply.replace(f"Message-ID: {parse(reply).message_id}\r\n".encode(), b"")
        said.clear()
        stored = _commit(config, conn, reply)
        assert stored[0].ticket_ref == opened[0].ticket_ref
        assert not [s for s in said if s.startswith("SELECT messages.message_id FROM")]
        notice = conn.execute(
            select(outbox.c.body)
            .where(outbox.c.kind == "notice", outbox.c.ticket_id == tid)
            .order_by(outbox.c.id.desc())
            .limit(1)
        ).scalar_one()
        refs = message_from_bytes(notice, policy=policy.default)["References"].split()
        assert refs == repos.thread_ids(conn, "acme", tid), i
        assert len(refs) == min(i + 2 - (i >= 3), repos.THREAD_IDS), i


def test_a_lone_tenants_mail_takes_one_savepoint_and_its_reject_none(
    config: GatewayConfig, conn: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One savepoint a message while its reactions and clocks succeed (on PostgreSQL each
    is a round trip): a lone tenant's reject comes before anything is written, blobs
    included, so it needs none; the message's own is taken only for several tenants."""
    import gateway.intake.commit
    import outbound.guard

    taken: list[int] = []

    class Counted(Savepoint):
        __slots__ = ()

        def __init__(self, c: Connection) -> None:
            taken.append(1)
            super().__init__(c)

    monkeypatch.setattr(gateway.intake.commit, "Savepoint", Counted)
    monkeypatch.setattr(outbound.guard, "Savepoint", Counted)
    bound: list[bytes] = []

    def commit(data: bytes, *rcpts: str) -> Any:
        raw = _raw(data, *rcpts)
        named = jobs(AddressIndex(config), raw.envelope.rcpt_tos)
        msg = Arrival(raw, parse(data), hashlib.sha256(data).hexdigest(), NOW)
        taken.clear()
        done = commit_message(
            conn, config, Templates.of(config), named, msg, lambda c: bound.append(data)
        )
        return done, len(taken)

    first = _mail("Printer")
    (opened,), saved = commit(first)
    assert saved == 1 and bound == [first]
    follow_up = _mail("Re: Printer", headers=f"In-Reply-To: {parse(first).message_id}\r\n")
    (answered,), saved = commit(follow_up)
    assert saved == 1 and answered.ticket_ref == opened.ticket_ref
    refused, saved = commit(_mail("viagra"))
    assert isinstance(refused, Reject) and saved == 0 and len(bound) == 2
    assert _count(conn, messages) == 2
    two, saved = commit(_mail("Two desks", to="help@globex.test, support@acme.test"),
                        "help@globex.test", "support@acme.test")  # fmt: skip
    assert len(two) == 2 and saved == 3  # the message's, and one for each tenant


def test_a_replys_threading_ids_are_read_with_its_first_look(
    config: GatewayConfig, conn: Connection
) -> None:
    """The Message-IDs a reply names come with its dedupe read (one statement, not two):
    In-Reply-To first, then References newest first, an unknown one skipped; an id held
    for the batch's flush still threads; a References chain longer than one read asks
    on its own, as before."""
    first, second = _mail("Printer"), _mail("Scanner")
    a, b = (_commit(config, conn, m)[0].ticket_ref for m in (first, second))
    ida, idb = parse(first).message_id, parse(second).message_id
    said: list[str] = []
    event.listen(conn.engine, "before_cursor_execute", lambda *x: said.append(x[2]))

    def reply(subject: str, headers: str) -> str:
        said.clear()
        (stored,) = _commit(config, conn, _mail(subject, headers=headers))
        return stored.ticket_ref

    assert reply("Re: one", f"In-Reply-To: {idb}\r\nReferences: {ida} {idb}\r\n") == b
    assert not [s for s in said if s.startswith("SELECT message_ids.message_id")], said
    assert [s for s in said if "raw_sha256" in s and "message_ids" in s], said
    assert reply("Re: two", f"References: {ida} <unknown@x> \r\n") == a
    with deferred.hold(conn):
        third = _mail("Fax")
        c = _commit(config, conn, third)[0].ticket_ref
        assert reply("Re: three", f"In-Reply-To: {parse(third).message_id}\r\n") == c
    many = " ".join(f"<n{i}@x>" for i in range(repos.IDS_AT_ONCE)) + f" {ida}"
    assert reply("Re: four", f"References: {many}\r\n") == a
    assert [s for s in said if s.startswith("SELECT message_ids.message_id")], said


def test_a_replys_ticket_state_comes_with_its_first_look_on_postgresql(
    config: GatewayConfig, conn: Connection
) -> None:
    """On PostgreSQL the ticket a reply's In-Reply-To names (else the newest of the
    tickets its Message-IDs name) is read with the first look: its status, the client's
    language, whether the sender takes part and its newest Message-IDs, the same as the
    state's own read finds them, and no state read of its own follows. When the threader
    picks another ticket (In-Reply-To unknown, References naming two), that ticket's
    state is read as before. On SQLite the state is read on its own, as before."""
    pg = use_postgresql()
    first, second = _mail("Printer"), _mail("Scanner", sender="ann@client.test")
    a, b = (_commit(config, conn, m)[0].ticket_ref for m in (first, second))
    ida, idb = parse(first).message_id, parse(second).message_id
    ticket = {ref: i for i, ref in conn.execute(select(tickets.c.id, tickets.c.ref))}
    conn.execute(update(tickets).where(tickets.c.ref == a).values(status="closed"))
    said: list[str] = []

    def listener(*x: Any) -> None:
        said.append(x[2])

    event.listen(conn.engine, "before_cursor_execute", listener)
    try:
        for sender, ref in (("kim@client.test", a), ("nobody@client.test", b)):
            mid = ida if ref == a else idb
            looked = first_look(conn, "acme", "<new@x>", sender, NOW, [mid, "<unknown@x>"])
            guessed = looked[4]
            assert (guessed is not None and guessed[0] == ticket[ref]) == pg, guessed
            held = ticket_life.sender_state(conn, "acme", ticket[ref], sender, guessed)
            read = ticket_life.sender_state(conn, "acme", ticket[ref], sender)
            assert held == read and read is not None
            assert read.taking_part == (sender == "kim@client.test")
            assert read.thread and read.thread[0] == mid
        said.clear()
        (answered,) = _commit(config, conn, _mail("Re: Printer", headers=f"In-Reply-To: {ida}\r\n"))
        assert answered.ticket_ref == a
        own = [s for s in said if s.startswith("SELECT tickets.id, tickets.status")]
        assert bool(own) != pg, said
        # the closed ticket's status came with the first look: the client's reply reopens it
        status = select(tickets.c.status).where(tickets.c.ref == a)
        assert conn.execute(status).scalar_one() == "open"
        said.clear()
        older, newer = sorted((ida, idb), key=lambda m: ticket[a if m == ida else b])
        (other,) = _commit(
            config,
            conn,
            _mail("Re: both", headers=f"In-Reply-To: <gone@x>\r\nReferences: {newer} {older}\r\n"),
        )  # the newest References first: ``older``'s ticket, the guess the newest ticket
        assert other.ticket_ref == (a if older == ida else b)
        assert [s for s in said if s.startswith("SELECT tickets.id, tickets.status")], said
    finally:
        event.remove(conn.engine, "before_cursor_execute", listener)


def test_a_messages_insert_goes_out_with_its_tickets_on_postgresql(
    config: GatewayConfig, conn: Connection
) -> None:
    """On PostgreSQL a new ticket's INSERT and its first message's are one statement, and
    so are a follow-up's and its ticket's touch; on SQLite each is its own, as before.
    Either way the rows are the same: the message in its ticket, the audit event naming
    the message's row, the ticket touched and its clocks read back; a ticket that is not
    the tenant's is not touched and leaves the message without a ref."""
    said: list[str] = []

    def listener(*x: Any) -> None:
        said.append(x[2])

    event.listen(conn.engine, "before_cursor_execute", listener)
    try:
        first = _mail("Printer")
        (opened,) = _commit(config, conn, first)
        inserts = [s for s in said if "INSERT INTO messages" in s]
        together = use_postgresql()
        assert len(inserts) == 1 and ("INSERT INTO tickets" in inserts[0]) == together, said
        assert len([s for s in said if "INSERT INTO tickets" in s]) == 1
        said.clear()
        reply = _mail("Re: Printer", headers=f"In-Reply-To: {parse(first).message_id}\r\n")
        (answered,) = _commit(config, conn, reply)
        inserts = [s for s in said if "INSERT INTO messages" in s]
        assert len(inserts) == 1 and ("UPDATE tickets" in inserts[0]) == together, said
        assert len([s for s in said if "UPDATE tickets SET updated_at" in s]) == 1
    finally:
        event.remove(conn.engine, "before_cursor_execute", listener)
    assert opened.ticket_ref == answered.ticket_ref == "ACME-1"
    (ticket,) = conn.execute(select(tickets.c.id, tickets.c.updated_at)).all()
    rows = conn.execute(select(messages.c.id, messages.c.ticket_id).order_by(messages.c.id))
    assert [t for _, t in rows] == [ticket.id, ticket.id]
    details = conn.execute(select(audit_events.c.detail).order_by(audit_events.c.id)).scalars()
    assert [d["message"] for d in details] == [
        i for (i,) in conn.execute(select(messages.c.id).order_by(messages.c.id))
    ]
    # a follow-up's write, its ticket another tenant's: nothing touched, no ref
    _commit(config, conn, _mail("Hello", to="help@globex.test"), "help@globex.test")
    theirs = conn.execute(select(tickets.c.id).where(tickets.c.tenant == "globex")).scalar_one()
    stray = _mail("Stray")
    raw = _raw(stray)
    (job,) = jobs(AddressIndex(config), raw.envelope.rcpt_tos).values()
    msg = Arrival(raw, parse(stray), hashlib.sha256(stray).hexdigest(), NOW)
    made = decide(lookup(conn, config, job, msg), config, job.recipient.tenant, "", msg).ingest
    assert made is not None
    plan = dataclasses.replace(made, open=None, ticket_id=theirs)
    later = NOW + timedelta(hours=1)
    written = ingest.write(conn, "acme", plan, later)
    assert (written.ref, written.clocks, written.ticket_id) == (None, None, theirs)
    where = select(messages.c.tenant).where(messages.c.id == written.message_row)
    assert conn.execute(where).scalar_one() == "acme"
    touched = select(tickets.c.updated_at).where(tickets.c.id == theirs)
    assert conn.execute(touched).scalar_one() != later


def test_a_batchs_small_blobs_are_written_once_each_in_hash_order_at_the_flush(
    conn: Connection, tmp_path: Path
) -> None:
    """The database blob store holds a small blob for the batch's flush (one statement
    for the batch's blobs), where the transaction that bound it still reads it (an agent's
    notice carries the client's file); a big one is written at once. Two messages binding
    the same file write it once, and the rows go in hash order, the order every writer
    takes their row locks in (store/blobs_db.py)."""
    store = DatabaseBlobStore(conn.engine)
    small = [b"a client's screenshot %d" % i for i in range(3)]
    big = b"x" * (300 * 1024)
    sha = {d: hashlib.sha256(d).hexdigest() for d in [*small, big]}
    written: list[list[str]] = []

    def listener(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, many: bool) -> None:
        if statement.startswith("INSERT INTO blobs"):
            rows = params if many else [params]
            written.append([r["sha256"] if isinstance(r, dict) else r[0] for r in rows])

    event.listen(conn.engine, "before_cursor_execute", listener)
    try:
        with deferred.hold(conn):
            for datas in ([small[2], small[0], big], [small[1], small[0]]):
                staged = asyncio.run(store.stage(datas))
                store.bind(conn, staged)
            assert written == [[sha[big]]]  # the big one at once, the small ones held
            assert _count(conn, blobs) == 1
            for d in [*small, big]:
                assert read_in_transaction(conn, sha[d], tmp_path) == d
            deferred.flush(conn)
    finally:
        event.remove(conn.engine, "before_cursor_execute", listener)
    assert written[1:] == [sorted(sha[d] for d in small)]  # one statement, each once, sorted
    assert {s for (s,) in conn.execute(select(blobs.c.sha256))} == set(sha.values())
    assert read_in_transaction(conn, hashlib.sha256(b"never").hexdigest(), tmp_path) is None


def test_a_held_messages_file_goes_out_in_the_agents_notice_and_its_rows_at_the_flush(
    config: GatewayConfig, conn: Connection
) -> None:
    """The writer's batch as the pipeline runs it with the database blob store: the
    message's attachment row and its blobs wait for the flush, and the agents' notice,
    composed in the same transaction before it, still carries the client's file (read back
    from the held blob rows)."""
    manual = b"%PDF-1.4 the printer's manual\n" * 50
    data = make_mail(attachments=[("manual.pdf", "application/pdf", manual)])
    parsed = parse(data)
    store = DatabaseBlobStore(conn.engine)
    staged = asyncio.run(store.stage([data, *(a.data for a in parsed.attachments)]))
    raw = _raw(data)
    msg = Arrival(raw, parsed, staged.shas[0], NOW)
    named = jobs(AddressIndex(config), raw.envelope.rcpt_tos)
    with deferred.hold(conn):
        done = commit_message(
            conn, config, Templates.of(config), named, msg, lambda c: store.bind(c, staged)
        )
        assert done[0].ticket_ref == "ACME-1"
        assert _count(conn, attachments) == 0 and _count(conn, blobs) == 0  # held
        deferred.flush(conn)
    assert [r.filename for r in conn.execute(select(attachments))] == ["manual.pdf"]
    assert _count(conn, blobs) == 2  # the raw message and the file
    (body,) = conn.execute(select(outbox.c.body).where(outbox.c.kind == "notice")).scalars()
    notice = message_from_bytes(body, policy=policy.default)
    files = [(p.get_filename(), p.get_content()) for p in notice.iter_attachments()]
    assert ("manual.pdf", manual) in files


def _held_kinds(conn: Connection, tag: str) -> None:
    """Rows of three held kinds (audit events, blobs, outbox rows), two of each."""
    store = DatabaseBlobStore(conn.engine)
    for i in range(2):
        repos.add_audit(conn, "acme", "probe", actor="a@x.test", detail={"i": i}, now=NOW)
        store.bind(conn, asyncio.run(store.stage([f"{tag} {i}".encode()])))
        _queue(conn, f"<{tag}-{i}@gw.acme.test>")


def _queue(conn: Connection, message_id: str) -> None:
    repos.enqueue_many(conn, "acme", [("ack", None, message_id, "", ["k@client.test"], b"b")],
                       now=NOW)  # fmt: skip


def test_a_flush_says_its_statements_in_one_round_trip_on_postgresql(
    conn: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL the held rows' statements ride one pipeline: one Sync for the flush,
    where each ``executemany`` made its own (store/direct.py ``together``). SQLite has no
    round trips: the same rows, written all the same."""
    syncs: list[int] = []
    if use_postgresql():
        from psycopg import _pipeline_base

        real = _pipeline_base.BasePipeline._enqueue_sync

        def counted(self: Any) -> None:
            syncs.append(1)
            real(self)

        monkeypatch.setattr(_pipeline_base.BasePipeline, "_enqueue_sync", counted)
    with deferred.hold(conn):
        repos.find_message(conn, "acme", "<none@x>")  # the transaction begun, as a batch's
        _held_kinds(conn, "once")
        deferred.flush(conn)
    monkeypatch.undo()
    assert _count(conn, audit_events) == 2 and _count(conn, blobs) == 2
    assert _count(conn, outbox) == 2
    assert len(syncs) == (1 if use_postgresql() else 0)


def test_a_held_row_that_fails_at_the_flush_fails_as_sqlalchemys_error(conn: Connection) -> None:
    """A flush's error comes back as SQLAlchemy's, with the driver's sqlstate on
    PostgreSQL, which the writer's retry reads (store/writer.py), also from the pipeline."""
    with pytest.raises(IntegrityError) as caught, deferred.hold(conn):
        _held_kinds(conn, "twice")
        _queue(conn, "<twice-0@gw.acme.test>")  # outbox.message_id is unique
        deferred.flush(conn)
    if use_postgresql():
        assert getattr(caught.value.orig, "sqlstate", None) == "23505"
