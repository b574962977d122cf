"""Figure 11: full-text search latency on a large store (store/search.py, issue #18).

    python -m bench --only fig11 --merge          # 1,000,000 messages, into BENCHMARKS.md
    python -m bench.fig_search --messages 100000  # a quick look, printed

A fresh store is migrated by the gateway's own code (``store.db.upgrade``), so
the index and its triggers are the shipped ones; then synthetic rows are
bulk-inserted with the stdlib sqlite3 module (executemany, one transaction,
``synchronous=OFF``), through those triggers, under a time budget: a fill
that runs out of time stops and says how many messages it reached. Two
tenants (nine in ten messages are acme's), four messages per ticket; each
text is 30 to 60 words drawn from a 5,000-word vocabulary with Zipf-like
weights, so some words are in most messages and most are rare, and one
order number per ticket that occurs nowhere else.

Each query class is then timed through ``search_tickets`` on the async engine
(the path the CLI and the agents' desk take), limit 50, every class once per
round, classes interleaved; the cell is the median of the rounds, (min-max).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import summary, workdir

PER_TICKET = 4
VOCABULARY = 5000
_SYLLABLES = [
    "ka", "lo", "mi", "ter", "zu", "ban", "sor", "vel", "quin", "dra", "po", "nex", "ul",
    "rin", "ta", "gor", "fe", "lis", "mon", "ech",
]  # fmt: skip


def _vocabulary(rng: random.Random) -> list[str]:
    words: set[str] = {"printer", "invoice", "password", "rechnung", "delivery", "refund"}
    while len(words) < VOCABULARY:
        words.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4))))
    ordered = sorted(words)
    rng.shuffle(ordered)
    # The words a query class uses are put at known ranks: common, medium, rare.
    for rank, word in ((0, "printer"), (40, "invoice"), (400, "refund"), (3000, "rechnung")):
        ordered.remove(word)
        ordered.insert(rank, word)
    return ordered


def _migrate(url: str) -> None:
    from store.db import create_engine, upgrade

    async def go() -> None:
        engine = create_engine(url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(go())


def _index(url: str, *, install: bool) -> None:
    """Drop the search index (and its triggers), or create and fill it (store/search.py)."""
    from store import search
    from store.db import create_writer_engine

    engine = create_writer_engine(url)
    try:
        with engine.begin() as conn:
            (search.install if install else search.uninstall)(conn)
    finally:
        engine.dispose()


def _rows(
    messages: int, seed: int
) -> Iterator[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], dict[str, int]]]:
    """Chunks of (ticket rows, message rows, last number per tenant), 5,000 tickets each."""
    rng = random.Random(seed)
    words = _vocabulary(rng)
    cum: list[float] = []
    total = 0.0
    for r in range(len(words)):
        total += 1.0 / (r + 1)
        cum.append(total)
    bodies = [
        " ".join(rng.choices(words, cum_weights=cum, k=rng.randint(30, 60))) for _ in range(20_000)
    ]
    subjects = [
        " ".join(rng.choices(words, cum_weights=cum, k=rng.randint(3, 7))) for _ in range(5_000)
    ]
    n_tickets = max(1, messages // PER_TICKET)
    numbers = {"acme": 0, "globex": 0}
    for start in range(0, n_tickets, 5_000):
        ts, ms = [], []
        for i in range(start, min(n_tickets, start + 5_000)):
            tenant = "globex" if i % 10 == 9 else "acme"
            numbers[tenant] += 1
            ref = f"{tenant.upper()}-{numbers[tenant]}"
            subject = f"{rng.choice(subjects)} order {i:07d}x"
            ts.append((i + 1, tenant, numbers[tenant], ref, subject, NOW, NOW))
            client = f"client{i % 50_000}@client{i % 97}.test"
            for j in range(PER_TICKET):
                k = i * PER_TICKET + j
                text = rng.choice(bodies) + (f" ord{i:07d}" if j == 0 else "")
                ms.append(
                    (k + 1, tenant, i + 1, f"<b.{k}@x.test>", f"<b.{k}@x.test>",
                     client if j % 2 == 0 else "agent@acme.test", f"Client {i % 50_000}",
                     subject if j == 0 else f"Re: {subject}", text, text, client, NOW)
                )  # fmt: skip
        yield ts, ms, dict(numbers)


NOW = "2027-01-01 09:00:00+00:00"
_TICKET_COLS = "id, tenant, number, ref, subject, created_at, updated_at"
_MESSAGE_COLS = (
    "id, tenant, ticket_id, message_key, message_id, from_addr, from_name, subject, text,"
    " reply_text, envelope_from, created_at"
)
# What every synthetic row shares, appended to each row.
_TICKET_FIXED = {
    "status": "open", "queue": "default", "priority": "normal", "tags": "[]",
    "sla_pauses": "[]", "sla_notified": "[]",
}  # fmt: skip
_MESSAGE_FIXED = {
    "direction": "in", "kind": "normal", "sender_role": "client", "to_addrs": "[]",
    "cc_addrs": "[]", "raw_sha256": "", "raw_size": 0, "defects": "[]", "flags": "[]",
    "thread_by": "new", "source": "bench",
}  # fmt: skip


def _columns(cols: str, fixed: dict[str, Any]) -> str:
    return ", ".join([cols, *fixed])


def _full(rows: list[tuple[Any, ...]], fixed: dict[str, Any]) -> list[tuple[Any, ...]]:
    extra = tuple(fixed.values())
    return [row + extra for row in rows]


def _insert_sql(table: str, cols: str, fixed: dict[str, Any]) -> str:
    names = _columns(cols, fixed)
    marks = ", ".join("?" for _ in names.split(","))
    return f"INSERT INTO {table} ({names}) VALUES ({marks})"


def fill(db: Path, messages: int, budget_s: float, seed: int = 11) -> dict[str, Any]:
    """Insert about ``messages`` messages into SQLite (stopping at ``budget_s``).

    The rows go in without the index, which is then built in one pass as migration
    0011 builds it for a store that has mail (``backfill_secs``): three times faster
    than a trigger per row, and the resulting index is the same.
    """
    t0 = time.perf_counter()
    done, numbers = 0, {"acme": 0, "globex": 0}
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("BEGIN")
        for ts, ms, last in _rows(messages, seed):
            numbers = last
            conn.executemany(
                _insert_sql("tickets", _TICKET_COLS, _TICKET_FIXED), _full(ts, _TICKET_FIXED)
            )
            conn.executemany(
                _insert_sql("messages", _MESSAGE_COLS, _MESSAGE_FIXED), _full(ms, _MESSAGE_FIXED)
            )
            done += len(ms)
            if time.perf_counter() - t0 > budget_s:
                break
        conn.execute(
            "INSERT INTO ticket_counters (tenant, last_number) VALUES ('acme', ?), ('globex', ?)",
            (numbers["acme"], numbers["globex"]),
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    rows_secs = time.perf_counter() - t0
    t1 = time.perf_counter()
    _index(f"sqlite+aiosqlite:///{db}", install=True)
    return {
        "messages": done,
        "rows_secs": rows_secs,
        "backfill_secs": time.perf_counter() - t1,
        "complete": done >= max(1, messages // PER_TICKET) * PER_TICKET,
        "db_bytes": db.stat().st_size,
        "vocabulary": VOCABULARY,
    }


def fill_pg(url: str, dsn: str, messages: int, budget_s: float, seed: int = 11) -> dict[str, Any]:
    """The same rows into PostgreSQL with COPY; then the generated column and GIN index."""
    import psycopg

    t0 = time.perf_counter()
    done, numbers = 0, {"acme": 0, "globex": 0}
    with psycopg.connect(dsn) as conn:
        with conn.cursor() as cur:
            for ts, ms, last in _rows(messages, seed):
                numbers = last
                for table, cols, fixed, rows in (
                    ("tickets", _TICKET_COLS, _TICKET_FIXED, ts),
                    ("messages", _MESSAGE_COLS, _MESSAGE_FIXED, ms),
                ):
                    names = _columns(cols, fixed)
                    with cur.copy(f"COPY {table} ({names}) FROM STDIN") as cp:
                        for row in _full(rows, fixed):
                            cp.write_row(row)
                done += len(ms)
                if time.perf_counter() - t0 > budget_s:
                    break
            cur.execute(
                "INSERT INTO ticket_counters (tenant, last_number) VALUES ('acme', %s), "
                "('globex', %s)",
                (numbers["acme"], numbers["globex"]),
            )
        conn.commit()
    rows_secs = time.perf_counter() - t0
    t1 = time.perf_counter()
    _index(url, install=True)
    backfill = time.perf_counter() - t1
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE messages")
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return {
        "messages": done,
        "rows_secs": rows_secs,
        "backfill_secs": backfill,
        "complete": done >= max(1, messages // PER_TICKET) * PER_TICKET,
        "db_bytes": int(size[0]) if size else 0,
        "vocabulary": VOCABULARY,
    }


# Query class -> (what it is, the query); {t} is a ticket number present in the store.
QUERIES = {
    "common": ("a word at rank 1 of the vocabulary", "printer"),
    "medium": ("a word at rank 41", "invoice"),
    "rare": ("a word at rank 401", "refund"),
    "two_words": ("the first two, both in one message", "printer invoice"),
    "unique": ("an order number in one message", "ord{t:07d}"),
    "sender": ("a client's address", "client{c}@client{d}.test"),
    "ref": ("a ticket ref, typed whole", "ACME-{n}"),
    "none": ("a word in no message", "xylophone"),
}


def _shares(url: str, total: int) -> dict[str, float]:
    """The share of all messages each word query matches (any tenant)."""
    from sqlalchemy import text

    from store.db import create_writer_engine

    out = {}
    engine = create_writer_engine(url)
    try:
        with engine.connect() as conn:
            for name in ("common", "medium", "rare", "two_words"):
                words = QUERIES[name][1]
                if conn.dialect.name == "postgresql":
                    sql = (
                        "SELECT count(*) FROM messages "
                        "WHERE search_doc @@ plainto_tsquery('simple', :q)"
                    )
                    q = words
                else:
                    sql = "SELECT count(*) FROM message_search WHERE message_search MATCH :q"
                    q = "{subject text} : (" + " ".join(f'"{w}"' for w in words.split()) + ")"
                out[name] = int(conn.execute(text(sql), {"q": q}).scalar_one()) / total
    finally:
        engine.dispose()
    return out


def measure(url: str, tickets: int, rounds: int, seed: int) -> dict[str, Any]:
    """Milliseconds per query class, each round once per class (interleaved)."""
    from store.db import create_engine
    from store.search import search_tickets

    rng = random.Random(seed)
    times: dict[str, list[float]] = {k: [] for k in QUERIES}
    hits: dict[str, list[int]] = {k: [] for k in QUERIES}

    async def go() -> None:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                await search_tickets(conn, "acme", "warm up", limit=50)
                for _ in range(rounds):
                    for name, (_what, q) in QUERIES.items():
                        t = rng.randrange(tickets)
                        while t % 10 == 9:  # an acme ticket
                            t = rng.randrange(tickets)
                        n = rng.randint(1, max(1, 9 * tickets // 10))
                        query = q.format(t=t, c=t % 50_000, d=t % 97, n=n)
                        t0 = time.perf_counter()
                        found = await search_tickets(conn, "acme", query, limit=50)
                        times[name].append((time.perf_counter() - t0) * 1000)
                        hits[name].append(len(found))
        finally:
            await engine.dispose()

    asyncio.run(go())
    return {name: {"ms": summary(times[name]), "hits": summary(hits[name])} for name in QUERIES}


def _cells(per_run: list[dict[str, Any]], shares: dict[str, float]) -> dict[str, Any]:
    return {
        name: {
            "what": QUERIES[name][0],
            "share": shares.get(name),
            "p50_ms": summary([r[name]["ms"]["median"] for r in per_run]),
            "max_ms": summary([r[name]["ms"]["max"] for r in per_run]),
            "hits": summary([r[name]["hits"]["median"] for r in per_run]),
        }
        for name in QUERIES
    }


def _say(engine: str, built: dict[str, Any]) -> None:
    print(
        f"  {engine}: {built['messages']:,} messages, rows {built['rows_secs']:.0f} s, "
        f"index {built['backfill_secs']:.0f} s"
        + ("" if built["complete"] else " (time budget reached)"),
        flush=True,
    )


def fig11(
    messages: int, rounds: int, runs: int, budget_s: float = 900.0, pg_messages: int = 0
) -> dict[str, Any]:
    """SQLite: build one store, then ``runs`` x ``rounds`` of every query class.

    With ``pg_messages``, the same on a PostgreSQL cluster of its own (fsync off: the
    figure is the query, not the load), under ``"postgresql"``.
    """
    out: dict[str, Any] = {"engine": "sqlite", "rounds": rounds, "limit": 50}
    out["per_ticket"] = PER_TICKET
    with workdir("fig11") as tmp:
        url = f"sqlite+aiosqlite:///{tmp / 'gateway.db'}"
        _migrate(url)
        _index(url, install=False)
        built = fill(tmp / "gateway.db", messages, budget_s)
        _say("sqlite", built)
        tickets = max(1, built["messages"] // PER_TICKET)
        shares = _shares(url, built["messages"])
        out.update(
            built, cells=_cells([measure(url, tickets, rounds, r) for r in range(runs)], shares)
        )
    if pg_messages:
        out["postgresql"] = _fig11_pg(pg_messages, rounds, runs, budget_s)
    return out


def _fig11_pg(messages: int, rounds: int, runs: int, budget_s: float) -> dict[str, Any]:
    from tests.pg_harness import Cluster

    cluster = Cluster().start()
    try:
        name = cluster.new_database("search")
        url = cluster.url(name)
        _migrate(url)
        _index(url, install=False)
        built = fill_pg(url, cluster.dsn(name), messages, budget_s)
        _say("postgresql", built)
        tickets = max(1, built["messages"] // PER_TICKET)
        shares = _shares(url, built["messages"])
        cells = _cells([measure(url, tickets, rounds, r) for r in range(runs)], shares)
        return {**built, "cells": cells}
    finally:
        cluster.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.fig_search", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--budget", type=float, default=900.0, help="seconds the fill may take")
    ap.add_argument("--pg-messages", type=int, default=0, help="also on PostgreSQL, this many")
    args = ap.parse_args(argv)
    out = fig11(args.messages, args.rounds, 1, args.budget, args.pg_messages)
    for engine, f in (("sqlite", out), ("postgresql", out.get("postgresql"))):
        if not f:
            continue
        print(f"{engine}: {f['messages']:,} messages, {f['db_bytes'] / 2**20:.0f} MiB")
        for name, c in f["cells"].items():
            p50, top, hits = c["p50_ms"]["median"], c["max_ms"]["median"], c["hits"]["median"]
            print(f"  {name:<10} p50 {p50:8.1f} ms  max {top:8.1f} ms  hits {hits:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
