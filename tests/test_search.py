"""Full-text search (store/search.py) on the store of the run: SQLite FTS5 or PostgreSQL.

The rows are written by the ingest write stage itself, and changed and deleted
with the statements erasure and retention run, so the test shows the index
follows every path in the same transaction, with no code of the path's own.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, text, update

from store import ingest, search
from store.db import create_engine, create_writer_engine, upgrade
from store.models import attachments, messages
from tests.pg_harness import session_cluster, use_postgresql

NOW = datetime(2027, 1, 27, 9, 0, tzinfo=UTC)


@pytest.fixture
def db(tmp_path: Path) -> str:
    if use_postgresql():
        cluster = session_cluster()
        return cluster.url(cluster.new_database("search"))
    return f"sqlite+aiosqlite:///{tmp_path / 'g.db'}"


def _message(subject: str, body: str, sender: str, name: str = "") -> dict[str, Any]:
    return {
        "message_key": f"<{abs(hash((subject, body, sender)))}@x.test>",
        "message_id": None,
        "direction": "in",
        "kind": "normal",
        "sender_role": "client",
        "from_addr": sender,
        "from_name": name,
        "to_addrs": [],
        "cc_addrs": [],
        "subject": subject,
        "date": None,
        "text": body,
        "reply_text": body,
        "html": None,
        "raw_sha256": "0" * 64,
        "raw_size": 1,
        "defects": [],
        "flags": [],
        "thread_by": "new",
        "envelope_from": sender,
        "source": "smtp",
    }


def _open(conn: Any, tenant: str, prefix: str, subject: str, body: str, sender: str) -> str:
    plan = ingest.Ingest(
        message=_message(subject, body, sender, "Carla Client"),
        attachments=(),
        actor=sender,
        detail={},
        open=ingest.NewTicket(prefix, subject, "default"),
    )
    written = ingest.write(conn, tenant, plan, NOW)
    assert written.ref is not None
    return written.ref


def _add(conn: Any, tenant: str, ticket_id: int, subject: str, body: str, sender: str) -> int:
    plan = ingest.Ingest(
        message=_message(subject, body, sender),
        attachments=(),
        actor=sender,
        detail={},
        ticket_id=ticket_id,
    )
    return ingest.write(conn, tenant, plan, NOW).message_row


def _search(url: str, tenant: str, query: str, limit: int = 50) -> list[search.Hit]:
    async def go() -> list[search.Hit]:
        engine = create_engine(url)
        try:
            await upgrade(engine)
            async with engine.connect() as conn:
                return await search.search_tickets(conn, tenant, query, limit=limit)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def _refs(url: str, tenant: str, query: str, limit: int = 50) -> list[str]:
    return [h.ref for h in _search(url, tenant, query, limit)]


def test_search_finds_subject_text_sender_and_ref_per_tenant(db: str) -> None:
    _search(db, "acme", "nothing yet")  # migrates the empty store
    engine = create_writer_engine(db)
    try:
        with engine.begin() as conn:
            printer = _open(
                conn, "acme", "ACME", "Printer jams", "The printer eats paper.", "pia@x.test"
            )
            invoice = _open(
                conn,
                "acme",
                "ACME",
                "Invoice 4711",
                "Wrong amount on the Rechnung, Müller",
                "bob@client.test",
            )
            _open(conn, "globex", "GLOBEX", "Printer jams too", "ours as well", "eve@x.test")
            tid = conn.execute(text("SELECT id FROM tickets WHERE ref = :r"), {"r": invoice})
            invoice_id = int(tid.scalar_one())
            _add(conn, "acme", invoice_id, "Re: Invoice", "paper copy please", "bob@client.test")
    finally:
        engine.dispose()

    assert _refs(db, "acme", "printer") == [printer]  # subject, this tenant only
    assert _refs(db, "globex", "printer") == ["GLOBEX-1"]
    assert _refs(db, "acme", "RECHNUNG müller") == [invoice]  # text, any case, umlauts kept
    assert _refs(db, "acme", "bob@client.test") == [invoice]  # sender's address
    assert _refs(db, "acme", "bob") == [invoice]  # and its parts
    assert set(_refs(db, "acme", "Carla")) == {printer, invoice}  # display name
    assert _refs(db, "acme", "printer bob") == []  # every word, in one message
    assert set(_refs(db, "acme", "paper")) == {printer, invoice}  # a later message counts
    assert _refs(db, "acme", "paper", limit=1) in ([printer], [invoice])
    # A ref typed whole comes first; the ref never leaks another tenant's ticket.
    hits = _search(db, "acme", f"paper {invoice.lower()}")
    assert hits[0].ref == invoice and hits[0].by_ref and hits[0].subject == "Invoice 4711"
    assert _refs(db, "globex", invoice) == []
    # Whatever is typed is words, never query syntax: no error, a clear answer.
    for odd in ('"', "AND OR NOT", "printer*", "subject:printer", "(", "NEAR(a b)", "-x", ""):
        assert isinstance(_refs(db, "acme", odd), list)
    assert _refs(db, "acme", "   ") == []


def test_index_follows_redaction_and_deletion_in_the_same_transaction(db: str) -> None:
    _search(db, "acme", "x")
    engine = create_writer_engine(db)
    try:
        with engine.begin() as conn:
            ref = _open(conn, "acme", "ACME", "Lost keys", "Call me at 0170 555", "kim@x.test")
            row = int(conn.execute(text("SELECT max(id) FROM messages")).scalar_one())
        assert _refs(db, "acme", "keys") == [ref]
        # Erasure blanks the message (store/privacy.py) ...
        with engine.begin() as conn:
            conn.execute(
                update(messages)
                .where(messages.c.id == row)
                .values(subject="", text="", from_addr="addr:0f", from_name="")
            )
            # ... and inside that same transaction the old words are already gone.
            found = conn.execute(
                text(
                    "SELECT count(*) FROM message_search WHERE message_search MATCH 'keys'"
                    if conn.dialect.name == "sqlite"
                    else "SELECT count(*) FROM messages "
                    "WHERE search_doc @@ plainto_tsquery('simple', 'keys')"
                )
            ).scalar_one()
            assert found == 0
        assert _refs(db, "acme", "keys") == [] and _refs(db, "acme", "kim") == []
        with engine.begin() as conn:
            conn.execute(
                update(messages).where(messages.c.id == row).values(text="found them in the car")
            )
        assert _refs(db, "acme", "car") == [ref]
        # Retention and erasure delete rows; a rolled-back delete keeps them findable.
        with pytest.raises(RuntimeError), engine.begin() as conn:
            conn.execute(delete(attachments).where(attachments.c.message_id == row))
            conn.execute(delete(messages).where(messages.c.id == row))
            raise RuntimeError("rolled back")
        assert _refs(db, "acme", "car") == [ref]
        with engine.begin() as conn:
            conn.execute(delete(messages).where(messages.c.id == row))
        assert _refs(db, "acme", "car") == []
    finally:
        engine.dispose()


def test_the_migration_fills_the_index_for_messages_stored_before_it(db: str) -> None:
    """0011's backfill: rows stored before the index existed are found once the store is
    at 0011. The row is written by today's code, then the store goes down to 0010 (which
    drops the index and the later columns, not the rows): today's code cannot write at
    0010's schema."""
    from alembic import command
    from alembic.config import Config

    from store.db import MIGRATIONS

    _search(db, "acme", "x")
    engine = create_writer_engine(db)
    try:
        with engine.begin() as conn:
            ref = _open(conn, "acme", "ACME", "Old mail", "stored before search", "old@x.test")
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with engine.connect() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0010")
            conn.commit()
    finally:
        engine.dispose()
    assert _refs(db, "acme", "before") == [ref]  # _search upgrades first


def test_a_word_everywhere_still_finds_a_small_tenants_tickets(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the newest WINDOW matches are ranked; a tenant crowded out of that window
    by a larger one is searched again on its own (a smaller window shows it here)."""
    monkeypatch.setattr(search, "WINDOW", 5)
    _search(db, "acme", "x")
    engine = create_writer_engine(db)
    try:
        with engine.begin() as conn:
            small = _open(conn, "globex", "GLOBEX", "Printer", "old printer", "g@x.test")
            big = [
                _open(conn, "acme", "ACME", f"Printer {i}", "printer again", f"a{i}@x.test")
                for i in range(8)
            ]
    finally:
        engine.dispose()
    assert _refs(db, "globex", "printer") == [small]
    newest = _refs(db, "acme", "printer", limit=50)
    assert len(newest) == 5 and set(newest) <= set(big)  # the window: the newest five
    assert set(newest) == set(big[-5:])
    # The tenant's slug is how the index is narrowed, never a word that matches.
    assert _refs(db, "acme", "acme") == [] and _refs(db, "globex", "globex") == []


def test_the_index_objects_are_there_at_head(db: str) -> None:
    """A later migration that rebuilds ``messages`` (alembic batch mode on SQLite) drops
    its triggers with the old table; it must call ``search.install`` again, or this fails."""
    _search(db, "acme", "x")
    engine = create_writer_engine(db)
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                sql = "SELECT name FROM sqlite_master WHERE name LIKE 'message_search%'"
                names = {r[0] for r in conn.execute(text(sql))}
                assert {"message_search_ai", "message_search_ad", "message_search_au"} <= names
            else:
                sql = (
                    "SELECT attgenerated FROM pg_attribute WHERE attrelid = 'messages'::regclass"
                    " AND attname = 'search_doc'"
                )
                assert conn.execute(text(sql)).scalar() == "s"
                idx = "SELECT 1 FROM pg_indexes WHERE indexname = 'ix_messages_search_doc'"
                assert conn.execute(text(idx)).scalar() == 1
    finally:
        engine.dispose()


def test_subject_before_sender_before_text_then_newest(db: str) -> None:
    _search(db, "acme", "x")
    engine = create_writer_engine(db)
    try:
        with engine.begin() as conn:
            subject = _open(conn, "acme", "ACME", "Toner empty", "see title", "a@x.test")
            sender = _open(conn, "acme", "ACME", "Hello", "a question", "toner@x.test")
            text_old = _open(conn, "acme", "ACME", "Hi", "the toner is low", "b@x.test")
            text_new = _open(conn, "acme", "ACME", "Hey", "toner again", "c@x.test")
    finally:
        engine.dispose()
    assert _refs(db, "acme", "toner") == [subject, sender, text_new, text_old]
