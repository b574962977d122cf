"""Figure 1's floor: the CPU a message of the parts any gateway built on these libraries
pays, measured on the same mail, so each of the gateway's processes can be read beside
the least its own part could cost.

    python -m bench.floor [--corpus 2000] [--runs 3] [--loop auto]

Each part alone, in this process, its CPU time (user+system, ``time.process_time``):

- ``parse``: the standard library's compat32 parse, the headers threading and routing
  need, and the first text/plain part decoded. No quotes cut, no HTML, no language, no
  address parsing, no limits: what the gateway's parse worker does beyond this is its
  own work.
- ``store``: on a SQLite file (WAL, ``synchronous=FULL``, as the gateway's), 32 messages
  a transaction: the thread looked up by In-Reply-To (one indexed SELECT), a ticket
  inserted (or, for a reply, its clock updated), the message's row (raw bytes, subject
  and text) and one outbox row for the acknowledgement. Plain ``sqlite3``: no ORM, no
  rules, no participants, no audit, no dedupe, no reply token. ``store_search``, apart:
  the same with the agents' search index the gateway keeps (FTS5, filled by a trigger in
  the message's transaction, store/search.py): a feature's cost, not a floor's.
- ``send``: one acknowledgement-sized mail (1.7 kB) over one kept aiosmtplib connection
  to a bare aiosmtpd sink in its own process; this process's CPU only.

The send runs on the loop the gateway's processes run (``loop``: uvloop when installed,
gateway/loop.py), the sink too: on asyncio's a send costs ~1.5x as much
(bench/results/notes/floor26.md), and a floor on another loop than the gateway's would
read the send worker as under its floor. The SMTP session's floor is figure 1's own
ceiling on the same loop: the bare aiosmtpd sink's CPU a message, measured with the
gateway in the same run (its ``sink_uvloop`` kind where the gateway runs uvloop).
Figure 1 runs this once per run (``bench/fig_smtp.py``); the reading sets each of the
gateway's processes beside its part's floor (bench/report.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Sequence
from email.parser import BytesParser
from email.policy import compat32
from typing import Any

from bench.common import Sink, corpus, summary, workdir
from gateway.loop import loop_name, run_on

__all__ = ["measure"]

_BATCH = 32
_ACK = (
    b"From: ACME Support <support@acme.test>\r\nTo: client@client.test\r\n"
    b"Subject: [ACME-1] Printer on fire\r\nMessage-ID: <ack.1@gw.test>\r\n"
    b"Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: text/plain; charset="utf-8"\r\n\r\n' + (b"x" * 70 + b"\r\n") * 22
)
_SCHEMA = (
    "CREATE TABLE tickets (id INTEGER PRIMARY KEY, tenant TEXT, ref TEXT, subject TEXT, "
    "created_at TEXT, updated_at TEXT)",
    "CREATE TABLE messages (id INTEGER PRIMARY KEY, tenant TEXT, ticket_id INT, "
    "message_id TEXT, subject TEXT, raw BLOB, text TEXT, created_at TEXT)",
    "CREATE INDEX messages_by_id ON messages (tenant, message_id)",
    "CREATE TABLE outbox (id INTEGER PRIMARY KEY, tenant TEXT, ticket_id INT, "
    "message_id TEXT UNIQUE, body BLOB, status TEXT, created_at TEXT)",
)
# The agents' search index as the gateway keeps it on SQLite (store/search.py: FTS5 over
# the messages, external content, filled by a trigger in the message's own transaction),
# over the columns this floor's messages have.
_SEARCH = (
    "CREATE VIRTUAL TABLE message_search USING fts5(subject, text, tenant, "
    "content='messages', content_rowid='id', tokenize='unicode61 remove_diacritics 0')",
    "CREATE TRIGGER message_search_ai AFTER INSERT ON messages BEGIN "
    "INSERT INTO message_search(rowid, subject, text, tenant) "
    "VALUES (new.id, new.subject, new.text, new.tenant); END",
)
Parsed = tuple[str, str, str, str]  # Message-ID, In-Reply-To, subject, text


def parse_floor(datas: Sequence[bytes]) -> tuple[float, list[Parsed]]:
    """µs of CPU a message, and what the store's floor needs of each."""
    parser = BytesParser(policy=compat32)
    out: list[Parsed] = []
    c0 = time.process_time()
    for data in datas:
        msg = parser.parsebytes(data)
        text = ""
        for part in msg.walk():
            if part.get_content_type() == "text/plain":
                payload = part.get_payload(decode=True)
                if isinstance(payload, bytes):
                    text = payload.decode(part.get_content_charset() or "utf-8", "replace")
                break
        for name in ("From", "To", "Date", "References", "Auto-Submitted"):
            msg.get(name)
        out.append(
            (
                str(msg.get("Message-ID", "")),
                str(msg.get("In-Reply-To", "")),
                str(msg.get("Subject", "")),
                text,
            )
        )
    return (time.process_time() - c0) / len(datas) * 1e6, out


def store_floor(
    datas: Sequence[bytes], parsed: Sequence[Parsed], folder: str, search: bool = False
) -> float:
    """µs of CPU a message (the COMMITs' fsyncs' own CPU included); ``search``: with the
    search index the gateway keeps (not part of the floor: what it adds, apart)."""
    db = sqlite3.connect(os.path.join(folder, f"floor-{search}.db"), isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        for statement in _SCHEMA + (_SEARCH if search else ()):
            db.execute(statement)
        now = "2026-12-05 10:00:00.000000"
        c0 = time.process_time()
        for at in range(0, len(datas), _BATCH):
            db.execute("BEGIN IMMEDIATE")
            for i in range(at, min(at + _BATCH, len(datas))):
                mid, irt, subject, text = parsed[i]
                row = db.execute(
                    "SELECT ticket_id FROM messages WHERE tenant = ? AND message_id = ?",
                    ("acme", irt),
                ).fetchone()
                if row is None:
                    ticket = db.execute(
                        "INSERT INTO tickets (tenant, ref, subject, created_at, updated_at) "
                        "VALUES (?, ?, ?, ?, ?)",
                        ("acme", f"ACME-{i}", subject, now, now),
                    ).lastrowid
                else:
                    ticket = row[0]
                    db.execute("UPDATE tickets SET updated_at = ? WHERE id = ?", (now, ticket))
                db.execute(
                    "INSERT INTO messages (tenant, ticket_id, message_id, subject, raw, text, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    ("acme", ticket, mid, subject, datas[i], text, now),
                )
                db.execute(
                    "INSERT INTO outbox (tenant, ticket_id, message_id, body, status, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        "acme",
                        ticket,
                        f"<ack.{i}.{os.urandom(8).hex()}@gw.test>",
                        _ACK,
                        "pending",
                        now,
                    ),
                )
            db.execute("COMMIT")
        return (time.process_time() - c0) / len(datas) * 1e6
    finally:
        db.close()


async def _send_floor(port: int, mails: int) -> float:
    import aiosmtplib

    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, local_hostname="gw.test")
    async with asyncio.timeout(300), client:
        for _ in range(20):  # the connection's first mails, as a kept link's are not
            await client.sendmail("", ["client@client.test"], _ACK)
        c0 = time.process_time()
        for _ in range(mails):
            await client.sendmail("", ["client@client.test"], _ACK)
        return (time.process_time() - c0) / mails * 1e6


def send_floor(mails: int, loop: str = "asyncio") -> float:
    """µs of CPU a mail of this process on ``loop``, the sink (on the same) being another."""
    sink = Sink(loop=loop)
    try:
        return run_on(loop, lambda: _send_floor(sink.port, mails))
    finally:
        sink.stop()


def measure(datas: Sequence[bytes], runs: int, loop: str = "asyncio") -> dict[str, Any]:
    """Each part's µs of CPU a message, ``runs`` times, the send on ``loop``: summaries
    by part."""
    parts: dict[str, list[float]] = {"parse": [], "store": [], "store_search": [], "send": []}
    for _ in range(runs):
        parse_us, parsed = parse_floor(datas)
        parts["parse"].append(parse_us)
        with tempfile.TemporaryDirectory() as folder:
            parts["store"].append(store_floor(datas, parsed, folder))
            parts["store_search"].append(store_floor(datas, parsed, folder, search=True))
        parts["send"].append(send_floor(min(len(datas), 1500), loop))
    out: dict[str, Any] = {name: summary(values) for name, values in parts.items()}
    out["messages"] = len(datas)
    out["loop"] = loop
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.floor")
    ap.add_argument("--corpus", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--loop", default="auto", help="asyncio, uvloop, or auto (the gateway's)")
    args = ap.parse_args(argv)
    with workdir("floor") as tmp:
        datas = [m.data for m in corpus(args.corpus, tmp) if not m.scan]
    print(json.dumps(measure(datas, args.runs, loop_name(args.loop))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
