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
import contextlib
import random
import sqlite3
import time
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


def _migrate(db: Path) -> None:
    from store.db import create_engine, upgrade

    async def go() -> None:
        engine = create_engine(f"sqlite+aiosqlite:///{db}")
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(go())


def _index(db: Path, *, install: bool) -> None:
    """Drop the search index and its triggers, or create and fill them (store/search.py)."""
    from store import search
    from store.db import create_writer_engine

    engine = create_writer_engine(f"sqlite+aiosqlite:///{db}")
    try:
        with engine.begin() as conn:
            (search.install if install else search.uninstall)(conn)
    finally:
        engine.dispose()


def fill(db: Path, messages: int, budget_s: float, seed: int = 11) -> dict[str, Any]:
    """Insert about ``messages`` messages (stopping at ``budget_s``); what was built.

    The rows go in without the index, which is then built in one pass as migration
    0011 builds it for a store that has mail (``backfill_secs``): three times faster
    than a trigger per row, and the resulting index is the same.
    """
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
    t0 = time.perf_counter()
    conn = sqlite3.connect(db, isolation_level=None)
    now = "2027-01-01 09:00:00.000000"
    done = 0
    try:
        conn.execute("PRAGMA synchronous=OFF")
        n_tickets = max(1, messages // PER_TICKET)
        chunk = 5_000
        numbers = {"acme": 0, "globex": 0}
        conn.execute("BEGIN")
        for start in range(0, n_tickets, chunk):
            if time.perf_counter() - t0 > budget_s:
                break
            ts, ms = [], []
            for i in range(start, min(n_tickets, start + chunk)):
                tenant = "globex" if i % 10 == 9 else "acme"
                numbers[tenant] += 1
                ref = f"{tenant.upper()}-{numbers[tenant]}"
                subject = f"{rng.choice(subjects)} order {i:07d}x"
                ts.append((i + 1, tenant, numbers[tenant], ref, subject, now, now))
                client = f"client{i % 50_000}@client{i % 97}.test"
                for j in range(PER_TICKET):
                    k = i * PER_TICKET + j
                    text = rng.choice(bodies) + (f" ord{i:07d}" if j == 0 else "")
                    ms.append(
                        (k + 1, tenant, i + 1, f"<b.{k}@x.test>", f"<b.{k}@x.test>",
                         client if j % 2 == 0 else "agent@acme.test", f"Client {i % 50_000}",
                         subject if j == 0 else f"Re: {subject}", text, text, client, now)
                    )  # fmt: skip
            conn.executemany(
                "INSERT INTO tickets (id, tenant, number, ref, subject, created_at, updated_at,"
                " status, queue, priority, tags, sla_pauses, sla_notified)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 'open', 'default', 'normal', '[]', '[]', '[]')",
                ts,
            )
            conn.executemany(
                "INSERT INTO messages (id, tenant, ticket_id, message_key, message_id, from_addr,"
                " from_name, subject, text, reply_text, envelope_from, created_at, direction,"
                " kind, sender_role, to_addrs, cc_addrs, raw_sha256, raw_size, defects, flags,"
                " thread_by, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'in', 'normal',"
                " 'client', '[]', '[]', '', 0, '[]', '[]', 'new', 'bench')",
                ms,
            )
            done += len(ms)
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
    _index(db, install=True)  # what migration 0011 does to a store that has messages
    return {
        "messages": done,
        "rows_secs": rows_secs,
        "backfill_secs": time.perf_counter() - t1,
        "build_secs": time.perf_counter() - t0,
        "complete": done >= n_tickets * PER_TICKET,
        "db_bytes": db.stat().st_size,
        "vocabulary": len(words),
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


def _shares(db: Path, total: int) -> dict[str, float]:
    """The share of all messages each word query matches (any tenant)."""
    out = {}
    with contextlib.closing(sqlite3.connect(db)) as conn:
        for name in ("common", "medium", "rare", "two_words"):
            q = " ".join(f'"{w}"' for w in QUERIES[name][1].split())
            sql = "SELECT count(*) FROM message_search WHERE message_search MATCH ?"
            out[name] = conn.execute(sql, (f"{{subject text}} : ({q})",)).fetchone()[0] / total
    return out


def measure(db: Path, tickets: int, rounds: int, seed: int) -> dict[str, Any]:
    """Milliseconds per query class, each round once per class (interleaved)."""
    from store.db import create_engine
    from store.search import search_tickets

    rng = random.Random(seed)
    times: dict[str, list[float]] = {k: [] for k in QUERIES}
    hits: dict[str, list[int]] = {k: [] for k in QUERIES}

    async def go() -> None:
        engine = create_engine(f"sqlite+aiosqlite:///{db}")
        try:
            async with engine.connect() as conn:
                await search_tickets(conn, "acme", "warm up", limit=50)
                for _ in range(rounds):
                    for name, (_what, q) in QUERIES.items():
                        t = rng.randrange(tickets)
                        while t % 10 == 9:  # an acme ticket
                            t = rng.randrange(tickets)
                        query = q.format(
                            t=t, c=t % 50_000, d=t % 97, n=rng.randint(1, 9 * tickets // 10)
                        )
                        t0 = time.perf_counter()
                        found = await search_tickets(conn, "acme", query, limit=50)
                        times[name].append((time.perf_counter() - t0) * 1000)
                        hits[name].append(len(found))
        finally:
            await engine.dispose()

    asyncio.run(go())
    return {
        name: {"ms": summary(times[name]), "hits": summary(hits[name]), "what": QUERIES[name][0]}
        for name in QUERIES
    }


def fig11(messages: int, rounds: int, runs: int, budget_s: float = 900.0) -> dict[str, Any]:
    """Build one store, then ``runs`` x ``rounds`` of every query class."""
    with workdir("fig11") as tmp:
        db = tmp / "gateway.db"
        _migrate(db)
        _index(db, install=False)
        built = fill(db, messages, budget_s)
        print(
            f"  store of {built['messages']:,} messages built in {built['build_secs']:.0f} s"
            f" (index {built['backfill_secs']:.0f} s)"
            + ("" if built["complete"] else " (time budget reached)"),
            flush=True,
        )
        tickets = max(1, built["messages"] // PER_TICKET)
        shares = _shares(db, built["messages"])
        per_run = [measure(db, tickets, rounds, seed=r) for r in range(runs)]
    cells: dict[str, Any] = {}
    for name in QUERIES:
        cells[name] = {
            "what": QUERIES[name][0],
            "share": shares.get(name),
            "p50_ms": summary([r[name]["ms"]["median"] for r in per_run]),
            "max_ms": summary([r[name]["ms"]["max"] for r in per_run]),
            "hits": summary([r[name]["hits"]["median"] for r in per_run]),
        }
    return {
        "engine": "sqlite",
        "rounds": rounds,
        "limit": 50,
        "per_ticket": PER_TICKET,
        **built,
        "cells": cells,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.fig_search", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--budget", type=float, default=900.0, help="seconds the fill may take")
    args = ap.parse_args(argv)
    out = fig11(args.messages, args.rounds, 1, args.budget)
    print(f"{out['messages']:,} messages, {out['db_bytes'] / 2**20:.0f} MiB")
    for name, c in out["cells"].items():
        p50, top, hits = c["p50_ms"]["median"], c["max_ms"]["median"], c["hits"]["median"]
        print(f"  {name:<10} p50 {p50:8.1f} ms  max {top:8.1f} ms  hits {hits:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
