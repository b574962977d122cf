"""Full-text search over a tenant's messages: the agents' search box and ``tickets list --search``.

One function, ``search_tickets``, on both engines:

- SQLite: an FTS5 table ``message_search`` over ``messages`` (external content, so
  the text is not stored twice), kept by three triggers on ``messages``.
- PostgreSQL: a generated ``tsvector`` column ``messages.search_doc`` with a GIN
  index.

Why the database keeps the index and not ``store/ingest.py``: every path that
writes, redacts or deletes a message (ingest, outbound copies, erasure,
retention, the importer) then updates it in the very same transaction, and a
new path cannot forget to. Neither object is in ``store/models.py`` (it is
not portable); ``in_models`` tells alembic's comparison to look past them.

Both engines tokenise the same way as far as they can: words without stemming
(German and English mail alike), diacritics kept, and an address's parts are
words too (``alice@example.com`` is found by ``alice``). A ticket's ref is
matched on ``tickets.ref`` itself, not through the text index: ``ACME-12``
must find ticket ACME-12 and not every message with a "12" in it.

Migration 0011 creates all this and fills it for existing rows. A later
migration that rebuilds ``messages`` on SQLite (alembic batch mode copies the
table, and triggers do not survive) must call ``install`` again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from store.models import tickets

__all__ = [
    "Hit",
    "drop_deleted",
    "in_models",
    "install",
    "query_terms",
    "search_tickets",
    "uninstall",
]

# Enough for any real query; a pasted page is cut here rather than run.
MAX_TERMS = 16
# How many of the newest matching messages are ranked. A word in half of a store of a
# million messages would otherwise rank half a million rows on every search; the
# window keeps that bounded (BENCHMARKS.md, figure 11), and a rarer query is ranked whole.
WINDOW = 2000
_WORD = re.compile(r"\w+", re.UNICODE)

# --- SQLite: FTS5 over messages (external content), kept by triggers --------------
_FTS_COLUMNS = "subject, text, from_addr, from_name, tenant"
_SQLITE_INSTALL = [
    f"""CREATE VIRTUAL TABLE IF NOT EXISTS message_search USING fts5(
        {_FTS_COLUMNS}, content='messages', content_rowid='id',
        tokenize='unicode61 remove_diacritics 0')""",
    f"""CREATE TRIGGER IF NOT EXISTS message_search_ai AFTER INSERT ON messages BEGIN
        INSERT INTO message_search(rowid, {_FTS_COLUMNS})
        VALUES (new.id, new.subject, new.text, new.from_addr, new.from_name, new.tenant);
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS message_search_ad AFTER DELETE ON messages BEGIN
        INSERT INTO message_search(message_search, rowid, {_FTS_COLUMNS})
        VALUES ('delete', old.id, old.subject, old.text, old.from_addr, old.from_name, old.tenant);
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS message_search_au
        AFTER UPDATE OF subject, text, from_addr, from_name ON messages BEGIN
        INSERT INTO message_search(message_search, rowid, {_FTS_COLUMNS})
        VALUES ('delete', old.id, old.subject, old.text, old.from_addr, old.from_name, old.tenant);
        INSERT INTO message_search(rowid, {_FTS_COLUMNS})
        VALUES (new.id, new.subject, new.text, new.from_addr, new.from_name, new.tenant);
    END""",
    # Fills the index from the rows already there (a no-op on an empty store).
    "INSERT INTO message_search(message_search) VALUES ('rebuild')",
]
_SQLITE_UNINSTALL = [
    "DROP TRIGGER IF EXISTS message_search_au",
    "DROP TRIGGER IF EXISTS message_search_ad",
    "DROP TRIGGER IF EXISTS message_search_ai",
    "DROP TABLE IF EXISTS message_search",
]
# The newest WINDOW messages that match, newest first, with what ``_rank`` reads.
# First the window is the whole store's newest matches, which FTS5 reads newest first,
# stopping early. Only when that window was full and held too few of this tenant's
# tickets is it taken again with the tenant in the MATCH (intersecting with a large
# tenant's every message costs more than the first try, so it comes second). A slug
# may share its first word with another's ("acme", "acme-eu"): the join checks it.
# No bm25(): it counts every message holding each word for its weights, which for a
# word in most messages is a read of the whole index on every search (measured: half
# a second at a million messages); the window's ranking (``_rank``) needs no counts.
_SQLITE_SEARCH = text(
    """WITH f AS MATERIALIZED (
        SELECT rowid AS id FROM message_search WHERE message_search MATCH :q
        ORDER BY rowid DESC LIMIT :window)
    SELECT m.id, m.ticket_id, m.subject, m.from_addr, m.from_name
    FROM f JOIN messages AS m ON m.id = f.id
    WHERE m.tenant = :tenant AND m.ticket_id IS NOT NULL ORDER BY m.id DESC"""
)

# --- PostgreSQL: a generated tsvector column and a GIN index ------------------------
# 'simple': no stemming, as on SQLite. A message's text is cut at 200,000 characters
# because a tsvector has a 1 MB limit and an oversized one would refuse the INSERT.
_PG_DOC = """
    to_tsvector('simple'::regconfig, coalesce(subject, '') || ' '
        || coalesce(from_addr, '') || ' '
        || translate(coalesce(from_addr, ''), '@.+_-', '     ') || ' '
        || coalesce(from_name, '') || ' '
        || left(coalesce(text, ''), 200000))
"""
_PG_INSTALL = [
    # Adding a stored generated column rewrites the table: that is the backfill.
    f"ALTER TABLE messages ADD COLUMN IF NOT EXISTS search_doc tsvector "
    f"GENERATED ALWAYS AS ({_PG_DOC}) STORED",
    "CREATE INDEX IF NOT EXISTS ix_messages_search_doc ON messages USING gin (search_doc)",
]
_PG_UNINSTALL = [
    "DROP INDEX IF EXISTS ix_messages_search_doc",
    "ALTER TABLE messages DROP COLUMN IF EXISTS search_doc",
]
_PG_SEARCH = text(
    """SELECT m.id, m.ticket_id, m.subject, m.from_addr, m.from_name FROM messages AS m
    WHERE m.search_doc @@ plainto_tsquery('simple'::regconfig, :q)
      AND m.tenant = :tenant AND m.ticket_id IS NOT NULL
    ORDER BY m.id DESC LIMIT :window"""
)

_CUSTOM_PLAN = text("SET LOCAL plan_cache_mode = force_custom_plan")

_OUTSIDE_TABLES = re.compile(r"^message_search(_(data|idx|docsize|config|content))?$")


@dataclass(frozen=True, slots=True)
class Hit:
    """One ticket found: best first. ``by_ref``: the query named its ref."""

    ticket_id: int
    ref: str
    subject: str
    status: str
    by_ref: bool = False


def query_terms(query: str) -> list[str]:
    """The words of a query as both engines see them (lower case, at most MAX_TERMS)."""
    return [w.lower() for w in _WORD.findall(query)][:MAX_TERMS]


# The columns a query's words are looked for in (never the tenant's slug).
_TEXT = "{subject text from_addr from_name}"


def _fts5_query(terms: list[str]) -> str:
    # Each word quoted: whatever the user typed (AND, NEAR, "*", ":") is a word, never
    # FTS5 syntax, so no input can make the query fail to parse.
    return " ".join('"' + t.replace('"', '""') + '"' for t in terms)


async def search_tickets(
    conn: AsyncConnection, tenant: str, query: str, *, limit: int = 50
) -> list[Hit]:
    """Tenant's tickets whose messages match every word of ``query``, best first.

    Searched: each message's subject, text and sender (address and display
    name), and the ticket refs of the tenant (a ref typed whole, any case, is
    the first hit). All words must match within one message; no stemming, no
    prefixes. Ranked among the newest ``WINDOW`` matching messages (``_rank``:
    words in the subject first, then in the sender, then newest): a word that
    is everywhere finds the recent tickets, not the best of all time.
    Agents' view: internal notes and every participant's mail count, so this
    is never for a client's pages. An empty query finds nothing.
    ``limit`` caps the tickets returned (1..1000).
    """
    limit = max(1, min(int(limit), 1000))
    terms = query_terms(query)
    if not terms:
        return []
    named = await _by_ref(conn, tenant, query)
    params = {"tenant": tenant, "window": WINDOW}
    if conn.dialect.name == "postgresql":
        # A prepared statement may fall back to one generic plan for every query after
        # a few runs: the plan for a word in every message (newest first, stop at the
        # window) would then serve a word in one message too, reading the whole table.
        await conn.execute(_CUSTOM_PLAN)
        rows = (await conn.execute(_PG_SEARCH, {**params, "q": " ".join(terms)})).all()
    else:
        words = f"{_TEXT} : ({_fts5_query(terms)})"
        rows = (await conn.execute(_SQLITE_SEARCH, {**params, "q": words})).all()
        if len({r.ticket_id for r in rows}) < limit and await _window_full(conn, words):
            mine = f"tenant : {_fts5_query([tenant])} AND {words}"
            rows = (await conn.execute(_SQLITE_SEARCH, {**params, "q": mine})).all()
    ranked = _rank(rows, terms)
    by_ref = {h.ticket_id for h in named}
    ids = ([h.ticket_id for h in named] + [t for t in ranked if t not in by_ref])[:limit]
    if not ids:
        return []
    found = {
        int(r.id): r
        for r in await conn.execute(
            select(tickets.c.id, tickets.c.ref, tickets.c.subject, tickets.c.status).where(
                tickets.c.tenant == tenant, tickets.c.id.in_(ids)
            )
        )
    }
    return [
        Hit(t, found[t].ref, found[t].subject, found[t].status, t in by_ref)
        for t in ids
        if t in found
    ]


def _rank(rows: Any, terms: list[str]) -> list[int]:
    """Ticket ids, best first: a word in the subject counts 3, in the sender 2, else 1
    (the text); a ticket scores its best message; ties go to the newest message.

    The same on both engines, and it reads only the window's rows (``rows`` come
    newest first).
    """
    best: dict[int, tuple[int, int]] = {}
    for r in rows:
        subject = set(_WORD.findall((r.subject or "").lower()))
        sender = set(_WORD.findall(f"{r.from_addr} {r.from_name}".lower()))
        score = sum(3 if t in subject else 2 if t in sender else 1 for t in terms)
        ticket = int(r.ticket_id)
        if ticket not in best or score > best[ticket][0]:
            best[ticket] = (score, int(r.id))
    return sorted(best, key=lambda t: (-best[t][0], -best[t][1]))


async def _window_full(conn: AsyncConnection, words: str) -> bool:
    """Whether more messages match than the window holds (the store's, any tenant)."""
    found = await conn.execute(
        text(
            "SELECT count(*) FROM (SELECT 1 FROM message_search WHERE message_search MATCH :q "
            "LIMIT :window)"
        ),
        {"q": words, "window": WINDOW},
    )
    return int(found.scalar_one()) >= WINDOW


async def _by_ref(conn: AsyncConnection, tenant: str, query: str) -> list[Hit]:
    """The tickets whose ref is one of the query's whitespace-separated words.

    Refs are stored in upper case (``PREFIX-N``), so the unique (tenant, ref)
    index answers this; an upper() around the column would read every ticket.
    """
    words = {w.strip(".,;:()[]<>#\"'").upper() for w in query.split()[:MAX_TERMS]}
    words = {w for w in words if "-" in w}
    if not words:
        return []
    rows = await conn.execute(
        select(tickets.c.id, tickets.c.ref, tickets.c.subject, tickets.c.status)
        .where(tickets.c.tenant == tenant, tickets.c.ref.in_(sorted(words)))
        .order_by(tickets.c.id.desc())
    )
    return [Hit(int(r.id), r.ref, r.subject, r.status, True) for r in rows]


def install(conn: Connection) -> None:
    """Create the index for this engine and fill it from the stored messages."""
    for sql in _PG_INSTALL if conn.dialect.name == "postgresql" else _SQLITE_INSTALL:
        conn.exec_driver_sql(sql)


def drop_deleted(conn: Connection) -> None:
    """Rewrite the SQLite index without the entries of deleted and changed rows.

    FTS5 records a deletion as a marker and drops the old words only when its
    segments merge; an erasure (store/privacy.py) must not leave a person's
    words there, so it calls this in its own transaction ('optimize' merges
    every segment, and secure_delete zeroes the freed pages). PostgreSQL keeps
    no separate copy: the row's own tsvector went with the row.
    """
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("INSERT INTO message_search(message_search) VALUES ('optimize')")


def uninstall(conn: Connection) -> None:
    """Drop what ``install`` made (migration 0011's downgrade)."""
    for sql in _PG_UNINSTALL if conn.dialect.name == "postgresql" else _SQLITE_UNINSTALL:
        conn.exec_driver_sql(sql)


def in_models(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
    """alembic ``include_name``: True but for the search objects models.py cannot hold."""
    if type_ == "table" and name is not None and _OUTSIDE_TABLES.match(name):
        return False
    if type_ == "column" and name == "search_doc":
        return False
    if type_ == "index" and name == "ix_messages_search_doc":
        return False
    return True
