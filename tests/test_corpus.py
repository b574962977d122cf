"""The corpus (tests/corpus) through real SMTP, by its delivery contract; every class right."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.clamd_harness import Clamd
from tests.corpus import generate
from tests.daemon import Daemon

TAG = re.compile(rb"\{\{TAG:(t\d+)\}\}")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("corpus")
    return out, generate(out, count=400, seed=7)


@pytest.fixture(scope="module")
def delivered(
    corpus: tuple[Path, dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
    clamd: Clamd,
) -> Iterator[tuple[Daemon, dict[str, Any], dict[str, dict[str, Any]]]]:
    folder, exp = corpus
    d = Daemon(tmp_path_factory.mktemp("gw-corpus"), scanner=clamd.address).start()
    thread_ref: dict[str, str] = {}
    by_file = {m["file"]: m for m in exp["messages"]}
    sent: dict[str, dict[str, Any]] = {}
    root_thread = {t["root_file"]: tid for tid, t in exp["threads"].items()}

    def deliver(name: str) -> tuple[str, bytes, tuple[int, str]]:
        m = by_file[name]
        raw = (folder / name).read_bytes()
        raw = TAG.sub(lambda g: thread_ref.get(g.group(1).decode(), "unknown").encode(), raw)
        return name, raw, d.send(raw, to=m["to"], sender=_envelope_sender(raw))

    try:
        for wave in range(exp["waves"]):
            names = sorted(f for f in by_file if f.startswith(f"w{wave:02d}-"))
            with ThreadPoolExecutor(4) as pool:
                for name, raw, (code, text) in pool.map(deliver, names):
                    sent[name] = {"raw": raw, "code": code, "text": text}
                    if name in root_thread and code == 250:
                        refs = d.refs(text)  # none for a duplicate
                        if refs:
                            thread_ref[root_thread[name]] = refs[0]
        yield d, exp, sent
    finally:
        d.stop()


def _envelope_sender(raw: bytes) -> str:
    m = re.search(rb"^Return-Path: <([^>]*)>", raw, re.M)
    return m.group(1).decode() if m else "sender@corpus.test"


def test_every_message_is_accepted(delivered) -> None:  # type: ignore[no-untyped-def]
    _, _, sent = delivered
    bad = {n: (s["code"], s["text"]) for n, s in sent.items() if s["code"] != 250}
    assert not bad


def test_every_class_is_right(delivered) -> None:  # type: ignore[no-untyped-def]
    d, exp, sent = delivered
    assert_every_class_right(d, exp, {name: s["raw"] for name, s in sent.items()})


def assert_every_class_right(
    d: Daemon,
    exp: dict[str, Any],
    sent: dict[str, bytes],
    other_tenants: frozenset[str] = frozenset(),
) -> None:
    """Score what the gateway stored against the corpus expectations (any intake);
    ``other_tenants`` hold a test's own mail beside the corpus and are not counted."""
    tickets = {r["id"]: dict(r) for r in d.query("SELECT * FROM tickets")}
    rows_by_sha = defaultdict(list)
    for r in d.query("SELECT * FROM messages"):
        rows_by_sha[r["raw_sha256"]].append(dict(r))
    atts = defaultdict(list)
    for a in d.query("SELECT * FROM attachments ORDER BY message_id, position"):
        atts[a["message_id"]].append(dict(a))
    acks = Counter(
        r["ticket_id"] for r in d.query("SELECT ticket_id FROM outbox WHERE kind = 'ack'")
    )

    # the ticket of each thread = the ticket of its root message
    ticket_of_thread: dict[str, int] = {}
    for tid, t in exp["threads"].items():
        rows = rows_by_sha[hashlib.sha256(sent[t["root_file"]]).hexdigest()]
        if rows and rows[0]["ticket_id"] is not None:
            ticket_of_thread[tid] = rows[0]["ticket_id"]

    failures: dict[str, list[str]] = defaultdict(list)
    score: Counter[str] = Counter()
    for m in exp["messages"]:
        e = m["expect"]
        cls = f"{m['kind']}:{m['variant']}"
        rows = rows_by_sha[hashlib.sha256(sent[m["file"]]).hexdigest()]
        problems = _check(m, e, rows, tickets, ticket_of_thread, atts, acks)
        if problems:
            failures[cls].append(f"{m['file']}: {'; '.join(problems)}")
        else:
            score[cls] += 1
    expected_tickets = Counter(
        m["tenant"] for m in exp["messages"] if m["expect"]["action"] == "new_ticket"
    )
    stored = Counter(t["tenant"] for t in tickets.values() if t["tenant"] not in other_tenants)
    assert stored == expected_tickets
    assert not failures, json.dumps({k: v[:3] for k, v in failures.items()}, indent=1)


def _check(m, e, rows, tickets, ticket_of_thread, atts, acks) -> list[str]:  # type: ignore[no-untyped-def]
    action = e["action"]
    if action == "duplicate":
        return [] if len(rows) == 1 else [f"{len(rows)} rows for a duplicate"]
    if len(rows) != 1:
        return [f"{len(rows)} rows stored"]
    row = rows[0]
    out: list[str] = []
    want_ticket = ticket_of_thread.get(e["thread"])
    if action == "ignore":
        if row["ticket_id"] not in (None, want_ticket):
            out.append("machine mail on the wrong ticket")
        if row["sender_role"] != "machine":
            out.append(f"role {row['sender_role']}")
        if (
            row["ticket_id"] is not None
            and tickets[row["ticket_id"]]["created_at"]
            and (row["thread_by"] == "new")
        ):
            out.append("opened a ticket")
        return out
    if row["ticket_id"] is None:
        return ["no ticket"]
    ticket = tickets[row["ticket_id"]]
    if ticket["tenant"] != m["tenant"]:
        out.append(f"in tenant {ticket['tenant']}")
    if action == "new_ticket":
        if row["thread_by"] != "new":
            out.append(f"threaded by {row['thread_by']} instead of a new ticket")
        want_subject = e["subject"]
        if m.get("needs_tag"):  # the feeder put that thread's real tag where [TAG] stands
            tag = tickets[ticket_of_thread[m["needs_tag"]]]["ref"]
            want_subject = want_subject.replace("[TAG]", f"[{tag}]")
        if ticket["subject"] != want_subject:
            out.append(f"subject {ticket['subject']!r}")
        if bool(acks.get(row["ticket_id"])) != e["answer"]:
            out.append(f"ack sent={bool(acks.get(row['ticket_id']))}")
    elif action == "followup":
        if row["ticket_id"] != want_ticket:
            out.append(f"on ticket {ticket['ref']}, by {row['thread_by']}")
    if e["body_marker"] not in row["text"]:
        out.append("body marker missing")
    if row["from_addr"] != e["sender"].lower():
        out.append(f"sender {row['from_addr']}")
    got = [
        (a["filename"], a["size"], a["sha256"], a["content_type"], bool(a["inline"]))
        for a in atts[row["id"]]
    ]
    want = [
        (a["name"], a["size"], a["sha256"], a["content_type"], a["inline"])
        for a in e["attachments"]
    ]
    if got != want:
        out.append(f"attachments {got} != {want}")
    return out
