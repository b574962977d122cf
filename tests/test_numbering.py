"""Ticket numbers (store/numbering.py): a counter row on SQLite, a sequence per tenant on
PostgreSQL.

Run on the store of the run (SQLite, or PostgreSQL with GATEWAY_TEST_DB=postgresql);
the tests of what only PostgreSQL has (sequences made by several instances at once,
the resync after a restore, a unit retried after a taken number) always run on the
session's PostgreSQL cluster.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from sqlalchemy import event, insert, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from store import numbering, repos
from store.db import create_writer_engine
from store.models import ticket_counters, tickets
from store.writer import Writer

# Any tenant id (up to the column's 40 characters) makes a valid sequence name.
ODD = ('o\'hara "X"; DROP TABLE tickets; -- ü' + "z" * 40)[:40]


def _numbers(engine: Engine, tenant: str) -> list[int]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(tickets.c.number).where(tickets.c.tenant == tenant).order_by(tickets.c.number)
        )
        return list(rows.scalars())


def _old_ticket(conn: Connection, tenant: str, number: int) -> None:
    """A ticket numbered by hand (an older gateway's counter, a restored dump)."""
    now = repos.now()
    row = {"tenant": tenant, "number": number, "ref": f"T-{number}", "subject": "old",
           "status": "open", "queue": "default", "created_at": now, "updated_at": now}  # fmt: skip
    conn.execute(insert(tickets).values(row))


def test_each_tenant_counts_from_one_whatever_its_id(store_engine: Engine) -> None:
    with store_engine.begin() as conn:
        refs = [repos.new_ticket(conn, t, "T", "s")[1] for t in ("acme", ODD, "acme", ODD)]
    assert refs == ["T-1", "T-1", "T-2", "T-2"]
    assert _numbers(store_engine, ODD) == [1, 2]


def test_a_database_numbered_before_continues_after_its_highest_number(
    store_engine: Engine,
) -> None:
    """The counter row (an older gateway's, SQLite's) and the tickets both count: the
    first number drawn on a database carried over is above both."""
    with store_engine.begin() as conn:
        _old_ticket(conn, "acme", 5)
        conn.execute(insert(ticket_counters).values(tenant="acme", last_number=7))
        _old_ticket(conn, "globex", 3)  # no counter row: the tickets say where to go on
    with store_engine.begin() as conn:
        assert repos.new_ticket(conn, "acme", "T", "s")[1] == "T-8"
        assert repos.new_ticket(conn, "globex", "T", "s")[1] == "T-4"


def test_a_rolled_back_ticket_leaves_a_gap_on_postgresql_only(store_engine: Engine) -> None:
    """nextval is not undone by a rollback: the number is burnt (no lock held till the
    commit is the point). SQLite's counter row rolls back with the ticket."""
    with store_engine.begin() as conn:
        repos.new_ticket(conn, "acme", "T", "s")
    with pytest.raises(RuntimeError), store_engine.begin() as conn:
        repos.new_ticket(conn, "acme", "T", "s")
        raise RuntimeError("rolled back")
    with store_engine.begin() as conn:
        repos.new_ticket(conn, "acme", "T", "s")
    gap = store_engine.dialect.name == "postgresql"
    assert _numbers(store_engine, "acme") == ([1, 3] if gap else [1, 2])


def test_instances_making_a_tenants_sequence_at_once_share_it(pg_engine: Engine) -> None:
    """Four instances' first tickets of one tenant on one database, all at once: one
    sequence is made (no instance fails on a catalogue race), and numbers are unique."""
    engines = [create_writer_engine(str(pg_engine.url.render_as_string(hide_password=False)))
               for _ in range(4)]  # fmt: skip
    start = threading.Barrier(len(engines))
    errors: list[BaseException] = []

    def first_ticket(e: Engine) -> None:
        try:
            start.wait(timeout=10)
            with e.begin() as conn:
                repos.new_ticket(conn, "acme", "T", "s")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=first_ticket, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for e in engines:
        e.dispose()
    assert not errors, errors
    assert _numbers(pg_engine, "acme") == [1, 2, 3, 4]
    with pg_engine.connect() as conn:
        made = conn.execute(
            text("SELECT count(*) FROM pg_sequences WHERE sequencename LIKE 'ticket_number_%'")
        )
        assert made.scalar_one() == 1


def test_resync_after_a_restore_moves_a_sequence_behind_the_tickets_forward_only(
    pg_engine: Engine,
) -> None:
    """A sequence the restored database kept from before, behind the restored tickets,
    continues after them; one ahead (numbers burnt before the dump) is not moved back."""
    with pg_engine.begin() as conn:
        repos.new_ticket(conn, "acme", "T", "s")  # acme's sequence now at 1
        repos.new_ticket(conn, ODD, "T", "s")
        for n in range(2, 6):
            _old_ticket(conn, "acme", n * 10)  # restored rows, up to 50
        conn.execute(text(f"SELECT setval('{numbering.sequence_name(ODD)}', 9)"))
    with pg_engine.begin() as conn:
        conn.execute(text(numbering.RESYNC))
    with pg_engine.begin() as conn:
        assert repos.new_ticket(conn, "acme", "T", "s")[1] == "T-51"
        assert repos.new_ticket(conn, ODD, "T", "s")[1] == "T-10"


def test_a_unit_that_draws_a_taken_number_runs_again_with_the_next(pg_engine: Engine) -> None:
    """The unique index is the guard: a number already taken (a sequence left behind
    by hand) fails the unit with a unique violation, a transient conflict, and the
    writer runs it again, drawing the next number, instead of answering 451."""
    with pg_engine.begin() as conn:
        repos.new_ticket(conn, "acme", "T", "s")
        _old_ticket(conn, "acme", 2)

    async def go() -> tuple[str, int]:
        writer = Writer(pg_engine)
        try:
            _, ref = await writer.submit(lambda c: repos.new_ticket(c, "acme", "T", "s"))
            return ref, writer.retries
        finally:
            await writer.close()

    ref, retries = asyncio.run(go())
    assert (ref, retries) == ("T-3", 1)
    assert _numbers(pg_engine, "acme") == [1, 2, 3]


def test_a_new_ticket_on_postgresql_draws_its_number_in_its_insert(pg_engine: Engine) -> None:
    """One statement a new ticket once the tenant's sequence is made: the INSERT draws the
    number and makes the ref of it (a round trip fewer than nextval, then INSERT). A value
    too long for its column is refused as a plain INSERT refuses it, never cut."""
    with pg_engine.begin() as conn:
        repos.new_ticket(conn, "acme", "T", "s")  # the sequence is made
    said: list[str] = []

    def heard(_c: Any, _cur: Any, statement: str, *_rest: Any) -> None:
        said.append(statement)

    event.listen(pg_engine, "before_cursor_execute", heard)
    try:
        with pg_engine.begin() as conn:
            tid, ref = repos.new_ticket(conn, "acme", "ACME", "s", queue="billing")
    finally:
        event.remove(pg_engine, "before_cursor_execute", heard)
    assert len(said) == 1 and "nextval" in said[0], said
    with pg_engine.connect() as conn:
        row = conn.execute(
            select(tickets.c.number, tickets.c.ref, tickets.c.queue).where(tickets.c.id == tid)
        ).one()
    assert (tuple(row), ref) == ((2, "ACME-2", "billing"), "ACME-2")
    with pytest.raises(DBAPIError), pg_engine.begin() as conn:
        repos.new_ticket(conn, "acme", "T", "s", queue="q" * 65)
    assert _numbers(pg_engine, "acme") == [1, 2]
