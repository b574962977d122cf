"""Micro-bench of one acknowledgement's way out: composed, sent, its outcome recorded.

CPU of this process per ack (the sink is its own process, bench/sink.py), in
three stages: ``compose`` (outbound.compose.acknowledgement), ``send`` (one
AccountConnection, reused, as an outbox lane does) and ``record`` (the outcome
written in one transaction per batch of ``--batch`` rows on a fresh SQLite
store: per row as ``record`` does, and, where the code has it, all at once);
and the rate limit's read (``acks.acks_since``) with ``--table`` acks in the outbox.
Run it on another checkout with ``PYTHONPATH=<checkout>`` to compare; each
stage is bounded by ``--n`` and the send stage by a timeout.

    python -m bench.ack_cost --n 1000 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sqlalchemy.engine import Engine

from bench.common import Sink
from outbound.compose import Composed, acknowledgement
from outbound.sender import AccountConnection, Attempt
from routing.config import OutboundAccount, OutboundSettings, Tenant
from store import repos
from store.db import create_engine, create_writer_engine, upgrade

try:  # the ack counts, moved out of store/repos.py (react21)
    from store import acks
except ImportError:  # an older checkout (PYTHONPATH=<checkout>)
    acks = repos  # type: ignore[assignment]

try:  # the store side of the outbox, moved out of outbound/delivery.py (sendq21)
    from outbound import outbox_rows as rows_of

    _claim, _record = rows_of.claim, rows_of.record
    _mark_sent: Any = rows_of.mark_sent
except ImportError:  # an older checkout (PYTHONPATH=<checkout>)
    from outbound import delivery as rows_of  # type: ignore[no-redef]

    _claim, _record = rows_of._claim, rows_of._record  # type: ignore[attr-defined]
    _mark_sent = getattr(rows_of, "_mark_sent", None)

ACME = Tenant(slug="acme", name="Acme Support", addresses=("support@acme.test",), tag_prefix="ACME")


def compose(n: int) -> tuple[float, list[Composed]]:
    now = datetime.now(UTC)
    t0 = time.process_time()
    mails = [
        acknowledgement(
            tenant=ACME,
            hostname="gw.test",
            ref=f"ACME-{i}",
            subject=f"Printer on floor {i} is broken",
            to_addr=f"c{i}@client.test",
            to_name="",
            reply_address=f"support+t{i}@acme.test",
            in_reply_to=f"<m{i}@client.test>",
            now=now,
            portal="https://help.acme.test/t/acme/",
        )
        for i in range(n)
    ]
    return time.process_time() - t0, mails


async def send(mails: list[Composed], port: int) -> float:
    config: Any = SimpleNamespace(hostname="gw.test", outbound=OutboundSettings(timeout=30))
    account = OutboundAccount(host="127.0.0.1", port=port, security="none")
    link = AccountConnection(account, config.hostname, config.outbound.timeout)
    rows = [{"mail_from": m.mail_from, "rcpt_tos": m.rcpt_tos, "body": m.body} for m in mails]
    await link.send(rows[0])  # the connection opened before the clock starts
    t0 = time.process_time()
    async with asyncio.timeout(300):
        for row in rows[1:]:
            attempt = await link.send(row)
            assert attempt.result == "sent", attempt
    spent = time.process_time() - t0
    await link.close()
    return spent / max(1, len(rows) - 1) * len(rows)


def _store(path: Path) -> Engine:
    """A fresh SQLite store at ``path``, migrated, and the writer's engine on it."""
    url = f"sqlite+aiosqlite:///{path}"

    async def schema() -> None:
        engine = create_engine(url)
        await upgrade(engine)
        await engine.dispose()

    asyncio.run(schema())
    return create_writer_engine(url)


def record(mails: list[Composed], batch: int, folder: Path) -> dict[str, float]:
    engine = _store(folder / "store.db")
    config: Any = SimpleNamespace(outbound=OutboundSettings(), hostname="gw.test")
    ways = {"per_row": None}
    if _mark_sent is not None:
        ways["batched"] = _mark_sent
    out: dict[str, float] = {}
    for way, mark in ways.items():
        with engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM outbox")
            rows = [("ack", None, m.message_id, "", list(m.rcpt_tos), m.body) for m in mails]
            repos.enqueue_many(conn, "acme", rows)
        with engine.begin() as conn:
            claimed = _claim(conn, repos.now(), len(mails), "bench", 600)
        sent = Attempt("sent")
        t0 = time.process_time()
        for i in range(0, len(claimed), batch):
            part = claimed[i : i + batch]
            with engine.begin() as conn:
                if mark is None:
                    kept = [_record(conn, config, ACME, r, sent, "bench") for r in part]
                else:
                    kept = [r["id"] in m for m in [mark(conn, [r["id"] for r in part], "bench")]
                            for r in part]  # fmt: skip
            assert all(kept), kept
        out[way] = time.process_time() - t0
        with engine.connect() as conn:
            left = conn.exec_driver_sql("SELECT count(*) FROM outbox WHERE status != 'sent'")
            assert left.scalar() == 0
    engine.dispose()
    return out


def limit(rows: int, folder: Path, calls: int = 500) -> float:
    """CPU per ``acks_since`` (the rate limit's read for every new ticket) with ``rows``
    acknowledgements to other senders already in the outbox."""
    engine = _store(folder / "limit.db")
    now = repos.now()
    with engine.begin() as conn:
        for start in range(0, rows, 5000):
            mails = [
                ("ack", None, f"<l{i}@gw.test>", "", [f"c{i}@client.test"], b"x")
                for i in range(start, min(rows, start + 5000))
            ]
            repos.enqueue_many(conn, "acme", mails, now=now)
    since = now - timedelta(hours=3)
    with engine.begin() as conn:
        t0 = time.process_time()
        for i in range(calls):
            acks.acks_since(conn, "acme", f"new{i}@client.test", since)
        spent = time.process_time() - t0
    engine.dispose()
    return spent / calls


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--table", default="1000,10000,100000", help="outbox sizes for acks_since")
    args = ap.parse_args()
    n = min(args.n, 20000)
    results: list[dict[str, float]] = []
    sink = Sink()
    try:
        for _ in range(args.runs):
            spent, mails = compose(n)
            run = {"compose_us": spent / n * 1e6}
            run["send_us"] = asyncio.run(send(mails, sink.port)) / n * 1e6
            with tempfile.TemporaryDirectory() as tmp:
                for way, s in record(mails, args.batch, Path(tmp)).items():
                    run[f"record_{way}_us"] = s / n * 1e6
            for size in [min(int(x), 200_000) for x in args.table.split(",") if x]:
                with tempfile.TemporaryDirectory() as tmp:
                    run[f"acks_since_{size}_us"] = limit(size, Path(tmp)) * 1e6
            results.append(run)
            print(json.dumps({k: round(v, 1) for k, v in run.items()}), flush=True)
    finally:
        sink.stop()
    best = {k: min(r[k] for r in results) for k in results[0]}
    print("best", json.dumps({k: round(v, 1) for k, v in best.items()}))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"n": n, "batch": args.batch, "runs": results}, indent=1))


if __name__ == "__main__":
    main()
