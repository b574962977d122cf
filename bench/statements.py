"""Statements per message through the commit stages, and their CPU, on figure 1's mix.

    python -m bench.statements [--corpus 1000] [--top 20] [--batch 1] [--postgresql]
                               [--told] [--stages]

Runs ``commit_message`` (look up, decide, write, react) for each text-only corpus
message on a real SQLite store in memory (``--postgresql``: a database of a private
cluster, tests/pg_harness.py, through the writer's engine: each statement there is a
round trip, figure 9's bound), one transaction each (``--batch N``: N
messages a transaction, as the writer commits them, holding the rows it holds and
writing them before each commit: store/deferred.py), in this process: no SMTP, no
writer thread, no outbox. A SQLAlchemy ``before_cursor_execute`` listener
counts what goes through SQLAlchemy, and the savepoints said straight to the driver
(store/db.py) are counted when they are said, before the first statement inside them
(one that runs none says nothing and is not counted); the CPU is
``time.process_time`` around the loop, the language model loaded before.
``--told``: each message comes with its language told, as the daemon's parse worker
sends it, so the writer classifies none (without it, as a lone sender's parse in the
daemon: the writer tells a new ticket's). ``--stages``: the CPU a message of each stage
apart (look-up, decision, write, reactions and clocks, the held rows' flush, COMMIT).
Issue 21 used it to count statements before and after (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import re
import struct
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.base import RootTransaction

from bench.common import corpus, workdir
from gateway.intake import commit as commit_stages
from gateway.intake.commit import commit_message, jobs
from gateway.intake.decide import Arrival
from outbound.compose import Templates
from parsers import parse
from parsers.types import Envelope, RawMessage
from routing.config import load_config
from routing.language import told, warm
from routing.tenants import AddressIndex
from store import ingest, search
from store.db import Savepoint, create_writer_engine
from store.models import metadata
from tests.test_stages import CONFIG

_SAVEPOINT = "SAVEPOINT (said straight to the driver: a round trip on PostgreSQL)"


def _held(conn: Connection) -> Any:
    """The writer's holding of deferrable rows, where this checkout has it."""
    try:
        from store import deferred
    except ImportError:  # a checkout from before store/deferred.py: nothing is held
        return contextlib.nullcontext()
    return deferred.hold(conn)


def _flush(conn: Connection) -> None:
    try:
        from store import deferred
    except ImportError:
        return
    deferred.flush(conn)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.statements")
    ap.add_argument("--corpus", type=int, default=1000)
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--batch", type=int, default=1, help="messages a transaction")
    ap.add_argument(
        "--trace", action="store_true",
        help="print every statement of the first new-ticket message and of the first reply",
    )  # fmt: skip
    ap.add_argument("--postgresql", action="store_true", help="on a private PostgreSQL cluster")
    ap.add_argument(
        "--file", action="store_true",
        help="on a SQLite file, not in memory: also counts the WAL's frames (pages written)",
    )  # fmt: skip
    ap.add_argument(
        "--search", action="store_true",
        help="with the search index the daemon's store has (store/search.py: on SQLite, FTS5 "
        "kept by triggers on messages; create_all alone makes none)",
    )  # fmt: skip
    ap.add_argument("--told", action="store_true", help="the language told before, as a worker")
    ap.add_argument("--stages", action="store_true", help="the CPU a message of each stage")
    args = ap.parse_args(argv)
    with workdir("statements") as tmp:
        (tmp / "gateway.toml").write_text(CONFIG, encoding="utf-8")
        config = load_config(tmp / "gateway.toml")
        mails = [m for m in corpus(args.corpus, tmp) if not m.scan]
    parsed = [parse(m.data) for m in mails]
    if args.told:
        warm()
        parsed = [told(p) for p in parsed]
    stages: Counter[str] = Counter()  # seconds of CPU by stage (--stages)
    with contextlib.ExitStack() as stack:
        if args.stages:
            stack.enter_context(_stage_clocks(stages))
        engine = create_writer_engine("sqlite://")  # its JSON text too (store/db.py)
        if args.file:
            folder = stack.enter_context(tempfile.TemporaryDirectory())
            engine = create_writer_engine(f"sqlite:///{folder}/stmts.db")
            stack.callback(engine.dispose)
        if args.postgresql:
            engine = _postgresql(stack)
        metadata.create_all(engine)
        if args.search:
            with engine.begin() as conn:
                search.install(conn)
        return _run(args, config, mails, parsed, engine, stages)


@contextlib.contextmanager
def _stage_clocks(cpu: Counter[str]) -> Iterator[None]:
    """Each stage's function wrapped to add its CPU to ``cpu``, and the COMMIT's; undone
    after. A stage's own: what a stage inside it took is counted there, not twice."""
    from store import deferred  # here: an older checkout (bench/ab.py) may not have it

    stages = (
        (commit_stages, "lookup", "look-up (first look, the ticket's state)"),
        (commit_stages, "decide", "decision (the plan)"),
        (ingest, "write", "write (ticket, message, participants, audit)"),
        (commit_stages, "_react", "reactions and clocks (the outbox rows)"),
        (deferred, "flush", "the held rows' flush"),
    )
    inner: list[float] = []

    def clocked(fn: Callable[..., Any], label: str) -> Callable[..., Any]:
        def run(*a: Any, **k: Any) -> Any:
            t0 = time.process_time()
            inner.append(0.0)
            try:
                return fn(*a, **k)
            finally:
                took, within = time.process_time() - t0, inner.pop()
                cpu[label] += took - within
                if inner:
                    inner[-1] += took

        return run

    saved = [(mod, name, getattr(mod, name)) for mod, name, _ in stages]
    do_commit = RootTransaction._do_commit
    for mod, name, label in stages:
        setattr(mod, name, clocked(getattr(mod, name), label))
    RootTransaction._do_commit = clocked(do_commit, "COMMIT")  # type: ignore[method-assign]
    try:
        yield
    finally:
        for mod, name, fn in saved:
            setattr(mod, name, fn)
        RootTransaction._do_commit = do_commit  # type: ignore[method-assign]


def _postgresql(stack: contextlib.ExitStack) -> Engine:
    """The writer's engine on a fresh database of a private cluster, stopped at the end."""
    from tests.pg_harness import session_cluster, stop_session_cluster

    cluster = session_cluster()
    stack.callback(stop_session_cluster)
    engine = create_writer_engine(cluster.url(cluster.new_database("stmts"), driver="psycopg"))
    stack.callback(engine.dispose)
    return engine


def _frames(conn: Connection, *, start: bool) -> Counter[str]:
    """On a SQLite file: at the start, the WAL emptied and SQLite's own checkpoints off
    (one would rewind the WAL mid-run); at the end, the frames the run wrote, by the
    table or index each page belongs to (SQLite's ``dbstat``). Empty else."""
    database = conn.engine.url.database
    if conn.dialect.name != "sqlite" or database in (None, "", ":memory:"):
        return Counter()
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    if start:
        dbapi.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        dbapi.execute("PRAGMA wal_autocheckpoint=0")
        return Counter({"": 0})
    # The WAL: a 32-byte header (the page size at 8), then frames of a 24-byte header
    # (the page's number first) and the page.
    wal = Path(f"{database}-wal").read_bytes()
    (size,) = struct.unpack(">I", wal[8:12])
    pages = Counter(
        struct.unpack(">I", wal[at : at + 4])[0] for at in range(32, len(wal), 24 + size)
    )
    dbapi.execute("PRAGMA wal_checkpoint(PASSIVE)")
    owner = dict(dbapi.execute("SELECT pageno, name FROM dbstat"))
    out: Counter[str] = Counter()
    for page, n in pages.items():
        out[owner.get(page, "(free list, other)")] += n
    return out


def _run(
    args: argparse.Namespace,
    config: Any,
    mails: list[Any],
    parsed: list[Any],
    engine: Engine,
    stages: Counter[str],
) -> int:
    counts: Counter[str] = Counter()
    trail: list[str] = []  # this message's statements (--trace)
    traced: dict[str, list[str]] = {}

    # Counted by the statement's own text (a compiled statement's SQL is the same string
    # each time) and shortened for the print at the end: a regex per statement here added
    # ~10% to the figure below (bench/results/notes/floor26.md).
    @event.listens_for(engine, "before_cursor_execute")
    def _count(_c: Any, _cur: Any, statement: str, *_rest: Any) -> None:
        counts[statement] += 1
        if args.trace:
            trail.append(_short(statement, 160))

    # Savepoints go straight to the driver (store/db.py), unseen by the listener: counted
    # as they end, those said (a statement ran inside; before that change, all), a round
    # trip each on PostgreSQL (a RELEASE rides the next SAVEPOINT there).
    def _counted(end: Any) -> Any:
        def ended(self: Any) -> Any:
            if getattr(self, "_open", False) and getattr(self, "said", True):
                counts[_SAVEPOINT] += 1
            return end(self)

        return ended

    Savepoint.commit = _counted(Savepoint.commit)  # type: ignore[method-assign]
    Savepoint.rollback = _counted(Savepoint.rollback)  # type: ignore[method-assign]
    templates, index = Templates.of(config), AddressIndex(config)
    now = datetime(2026, 11, 23, tzinfo=UTC)
    warm()
    with engine.connect() as conn:
        wal = _frames(conn, start=True)
        counts.clear()
        t0 = time.process_time()
        items = list(enumerate(zip(mails, parsed, strict=True)))
        for start in range(0, len(items), args.batch):
            with conn.begin(), _held(conn):
                for i, (m, p) in items[start : start + args.batch]:
                    raw = RawMessage(
                        Envelope(mail_from=p.from_addr or "", rcpt_tos=(m.rcpt,)), m.data, "smtp"
                    )
                    sha = hashlib.sha256(m.data).hexdigest()
                    msg = Arrival(raw, p, sha, now + timedelta(seconds=i))
                    named = jobs(index, raw.envelope.rcpt_tos)
                    trail.clear()
                    done = commit_message(conn, config, templates, named, msg, lambda c: None)
                    if args.trace and isinstance(done, list) and len(done) == 1:
                        kind = "new ticket" if done[0].thread_by in ("new", "none") else "reply"
                        if not done[0].duplicate and done[0].ticket_ref:
                            traced.setdefault(kind, list(trail))
                _flush(conn)
        cpu = time.process_time() - t0
        if wal:
            wal = _frames(conn, start=False)
    n = len(mails)
    shown: Counter[str] = Counter()
    for statement, c in counts.items():
        shown[_short(statement, 100)] += c
    counts = shown
    print(f"{n} messages: {sum(counts.values()) / n:.2f} statements and {cpu / n * 1e6:,.0f} µs "
          f"of CPU per message in the commit stages")  # fmt: skip
    if wal:
        print(f"{wal.total() / n:.1f} WAL frames (pages written) per message, "
              f"{args.batch} a transaction; by table or index:")  # fmt: skip
        for name, c in wal.most_common(args.top):
            print(f"{c / n:6.2f}  {name}")
    for label, seconds in stages.most_common():
        print(f"{seconds / n * 1e6:8,.0f} µs  {label}")
    for statement, c in counts.most_common(args.top):
        print(f"{c / n:6.2f}  {statement}")
    for kind, statements in traced.items():
        print(f"\nthe first {kind} ({len(statements)} statements through SQLAlchemy's events):")
        for statement in statements:
            print(f"  {statement}")
    return 0


def _short(statement: str, width: int) -> str:
    return re.sub(r"\s+", " ", statement)[:width]


if __name__ == "__main__":
    raise SystemExit(main())
