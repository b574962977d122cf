"""``gateway import``: a mailbox's history through the real CLI, the real clamd and the store.

The main proof imports a 2,000-message mbox made from the corpus (tests/corpus), shuffled
(exports are not always in date order), checks with sqlite3 that the summary adds
up, that every reply naming a message of the mbox sits in that message's ticket,
that nobody was emailed, and that a second import changes nothing.
"""

from __future__ import annotations

import json
import mailbox
import os
import pty
import random
import re
import subprocess
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.ops.sources import Entry, import_order, index, open_source
from parsers.addresses import msg_ids, normalise_msg_id
from tests.clamd_harness import EICAR, Clamd
from tests.corpus import generate
from tests.daemon import Daemon
from tests.mail import make_mail

TAG = re.compile(rb"\{\{TAG:t\d+\}\}")
TABLES = ("tickets", "messages", "attachments", "audit_events", "participants", "message_ids")
COUNTS = (
    "tickets_opened",
    "replies_threaded",
    "recorded_without_ticket",
    "duplicates",
    "refused",
    "deferred",
)


def _import(d: Daemon, path: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    out = d.cli("import", str(path), "--tenant", "acme", "--json", *extra)
    assert b"Traceback" not in out.stderr, out.stderr
    summary = json.loads(out.stdout) if out.stdout.strip() else {}
    return out.returncode, summary, out.stderr.decode()


def _rows(d: Daemon) -> dict[str, int]:
    return {t: d.query(f"SELECT count(*) FROM {t}")[0][0] for t in TABLES}


def _mbox(path: Path, mails: Iterable[bytes]) -> Path:
    """``mails`` as the mbox at ``path``, written anew (mbox appends to a file there)."""
    path.unlink(missing_ok=True)
    box = mailbox.mbox(path, create=True)
    for data in mails:
        box.add(data)
    box.close()
    return path


def _dated(data: bytes, date: str) -> bytes:
    return data.replace(b"Date: Mon, 04 Mar 2024 08:06:00 +0000", f"Date: {date}".encode())


# --- the 2,000-message mbox ------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus_mbox(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[bytes]]:
    """The corpus as one mbox, in a shuffled order; subject tags of the old helpdesk are
    unknown to us, so each ``{{TAG:...}}`` becomes "unknown"."""
    out = tmp_path_factory.mktemp("corpus")
    exp = generate(out, count=2000, seed=7)
    raws = [TAG.sub(b"unknown", (out / m["file"]).read_bytes()) for m in exp["messages"]]
    random.Random(7).shuffle(raws)
    return _mbox(out / "support.mbox", raws), raws


@pytest.fixture(scope="module")
def imported(
    corpus_mbox: tuple[Path, list[bytes]],
    tmp_path_factory: pytest.TempPathFactory,
    clamd: Clamd,
) -> dict[str, Any]:
    path, _ = corpus_mbox
    d = Daemon(tmp_path_factory.mktemp("gw-import"), scanner=clamd.address)  # config only
    code, first, stderr = _import(d, path)
    rows = _rows(d)
    code2, second, stderr2 = _import(d, path)
    return {
        "daemon": d,
        "first": (code, first, stderr),
        "rows": rows,
        "second": (code2, second, stderr2),
        "rows_after": _rows(d),
    }


def test_summary_accounts_for_every_message(imported: dict[str, Any]) -> None:
    code, s, stderr = imported["first"]
    assert code == 0, stderr
    assert s["messages_read"] == 2000
    assert sum(s[k] for k in COUNTS) == 2000, s
    assert s["refused"] == 0 and s["deferred"] == 0, s
    assert s["duplicates"] == 80  # the corpus's byte-identical copies
    d, rows = imported["daemon"], imported["rows"]
    assert s["tickets_opened"] == rows["tickets"]
    kept = s["tickets_opened"] + s["replies_threaded"] + s["recorded_without_ticket"]
    assert kept == rows["messages"]
    (recorded,) = d.query("SELECT count(*) FROM messages WHERE ticket_id IS NULL")[0]
    assert s["recorded_without_ticket"] == recorded
    assert [r[0] for r in d.query("SELECT DISTINCT source FROM messages")] == ["import"]


def test_every_reply_lands_in_the_ticket_of_the_message_it_names(
    corpus_mbox: tuple[Path, list[bytes]], imported: dict[str, Any]
) -> None:
    _, raws = corpus_mbox
    d = imported["daemon"]
    ticket_of = {
        r["message_id"]: r["ticket_id"]
        for r in d.query("SELECT message_id, ticket_id FROM messages WHERE message_id IS NOT NULL")
    }
    in_mbox = set()
    heads = []
    for raw in raws:
        head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0].decode("latin-1")
        fields = _fields(head)
        mid = normalise_msg_id(fields.get("message-id"))
        in_mbox.add(mid)
        heads.append((mid, fields))
    checked = 0
    wrong = []
    for mid, fields in heads:
        # the threader's order of trust: In-Reply-To, then References newest first
        irt = normalise_msg_id(fields.get("in-reply-to"))
        named = ([irt] if irt else []) + list(reversed(msg_ids(fields.get("references"))))
        named = [n for n in named if n in in_mbox and ticket_of.get(n) is not None]
        if not named or mid not in ticket_of:
            continue
        checked += 1
        if ticket_of[mid] != ticket_of[named[0]]:
            wrong.append(mid)
    assert checked > 700  # In-Reply-To, References-only, tag+References and forged replies
    assert not wrong, wrong[:5]


def test_ticket_numbers_follow_the_import_order(
    corpus_mbox: tuple[Path, list[bytes]], imported: dict[str, Any]
) -> None:
    """A window of messages goes through the pipeline at once, yet each commit waits for
    the one before it: the tickets are numbered in the order their first messages have
    in the import (by date, parents first), as when they went one at a time."""
    path, _ = corpus_mbox
    source = open_source(path)
    try:
        order = import_order(list(index(source, source.locators())))
        heads = [source.head(e.locator).decode("latin-1") for e in order]
    finally:
        source.close()
    position: dict[str | None, int] = {}
    repeated = set()
    for i, head in enumerate(heads):
        mid = normalise_msg_id(_fields(head).get("message-id"))
        if mid in position:
            repeated.add(mid)  # its two copies' places are told apart by nothing here
        position.setdefault(mid, i)
    opened = imported["daemon"].query(
        "SELECT t.number, m.message_id FROM tickets t JOIN messages m ON m.ticket_id = t.id"
        " WHERE m.thread_by = 'new' ORDER BY t.number"
    )
    places = [position[r["message_id"]] for r in opened if r["message_id"] not in repeated]
    assert len(places) > 900
    assert places == sorted(places)


def test_history_emails_no_one(imported: dict[str, Any]) -> None:
    d = imported["daemon"]
    assert d.query("SELECT count(*) FROM outbox")[0][0] == 0
    assert d.query("SELECT count(*) FROM bouncing")[0][0] == 0


def test_a_second_import_changes_nothing(imported: dict[str, Any]) -> None:
    code, s, stderr = imported["second"]
    assert code == 0, stderr
    assert s["messages_read"] == 2000 and s["duplicates"] == 2000, s
    assert imported["rows_after"] == imported["rows"]


def _fields(head: str) -> dict[str, str]:
    out: dict[str, str] = {}
    name = ""
    for line in head.replace("\r\n", "\n").split("\n"):
        if line[:1] in (" ", "\t") and name:
            out[name] += " " + line.strip()
        elif ":" in line:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            out[name] = value.strip() if name not in out else out[name]
    return out


# --- order -------------------------------------------------------------------------


def test_a_reply_dated_before_its_parent_still_goes_after_it() -> None:
    """Clock skew: the reply's Date is earlier than the message it answers."""
    entries = [
        Entry(0, "reply", message_id=2, references=(1,), when=100.0),
        Entry(1, "other", message_id=3, references=(), when=150.0),
        Entry(2, "root", message_id=1, references=(), when=200.0),
        Entry(3, "undated", message_id=4, references=(), when=None),
        Entry(4, "cycle-a", message_id=5, references=(6,), when=300.0),
        Entry(5, "cycle-b", message_id=6, references=(5,), when=301.0),
    ]
    order = [e.locator for e in import_order(entries)]
    assert order == ["root", "reply", "other", "undated", "cycle-b", "cycle-a"]


# --- other formats -----------------------------------------------------------------


def test_maildir_is_imported_parents_first(tmp_path: Path, clamd: Clamd) -> None:
    root = _dated(make_mail(message_id="<root-md@client.test>"), "Tue, 05 Mar 2024 09:00:00 +0000")
    reply = _dated(
        make_mail(
            subject="Re: Printer jammed",
            message_id="<reply-md@client.test>",
            headers={"In-Reply-To": "<root-md@client.test>"},
        ),
        "Tue, 05 Mar 2024 10:00:00 +0000",
    )
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    for data in (reply, root, root):
        box.add(data)  # keys are not in date order either
    d = Daemon(tmp_path / "gw", scanner=clamd.address)
    code, s, stderr = _import(d, tmp_path / "Maildir")
    assert code == 0, stderr
    assert (s["format"], s["tickets_opened"], s["replies_threaded"], s["duplicates"]) == (
        "maildir",
        1,
        1,
        1,
    )
    assert len({r[0] for r in d.query("SELECT ticket_id FROM messages")}) == 1


def test_a_reference_cycle_in_one_window_is_imported_not_waited_on(tmp_path: Path) -> None:
    """Forged or broken headers: two messages each naming the other. ``import_order`` cuts
    the cycle; in one window, neither may wait for the other's outcome (each would, for
    ever, and the import would hang)."""
    a = _dated(
        make_mail(
            message_id="<cycle-a@client.test>", headers={"References": "<cycle-b@client.test>"}
        ),
        "Wed, 06 Mar 2024 09:00:00 +0000",
    )
    b = _dated(
        make_mail(
            subject="Re: Printer jammed",
            message_id="<cycle-b@client.test>",
            headers={"In-Reply-To": "<cycle-a@client.test>"},
        ),
        "Wed, 06 Mar 2024 10:00:00 +0000",
    )
    path = _mbox(tmp_path / "cycle.mbox", (a, b))
    d = Daemon(tmp_path / "gw")
    code, s, stderr = _import(d, path)  # a hang is the CLI's timeout: a failure
    assert code == 0, stderr
    assert (s["messages_read"], s["tickets_opened"], s["replies_threaded"]) == (2, 1, 1), s


def test_eml_folder_is_read_recursively_and_refusals_are_counted_by_reason(
    tmp_path: Path, clamd: Clamd
) -> None:
    folder = tmp_path / "export"
    (folder / "a").mkdir(parents=True)
    (folder / "b").mkdir()
    (folder / "a" / "1.eml").write_bytes(  # sorts first, but answers b/2.eml
        _dated(
            make_mail(subject="Re: Hello", headers={"In-Reply-To": "<hello@client.test>"}),
            "Wed, 06 Mar 2024 10:00:00 +0000",
        )
    )
    (folder / "b" / "2.EML").write_bytes(
        _dated(
            make_mail(subject="Hello", message_id="<hello@client.test>"),
            "Wed, 06 Mar 2024 09:00:00 +0000",
        )
    )
    (folder / "b" / "virus.eml").write_bytes(
        make_mail(attachments=[("eicar.com", "application/octet-stream", EICAR)])
    )
    (folder / "notes.txt").write_text("not mail")
    d = Daemon(tmp_path / "gw", scanner=clamd.address)
    code, s, stderr = _import(d, folder)
    assert code == 0, stderr
    assert s["format"] == "eml-folder" and s["messages_read"] == 3
    assert (s["tickets_opened"], s["replies_threaded"], s["refused"]) == (1, 1, 1)
    (reason,) = s["refused_by_reason"]
    assert reason.startswith("554 5.7.1") and "virus.eml: refused: 554 5.7.1" in stderr

    single = tmp_path / "one.eml"
    single.write_bytes(make_mail(subject="Just one"))
    code, s, stderr = _import(d, single)
    assert (code, s["format"], s["tickets_opened"]) == (0, "eml", 1), stderr


def test_bad_paths_and_arguments_are_one_line(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "gw")
    (tmp_path / "empty").mkdir()
    (tmp_path / "blob.bin").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    cases = [
        ((str(tmp_path / "missing.mbox"), "--tenant", "acme"), 66),
        ((str(tmp_path / "empty"), "--tenant", "acme"), 65),
        ((str(tmp_path / "blob.bin"), "--tenant", "acme"), 65),
        ((str(tmp_path / "blob.bin"), "--tenant", "nobody"), 64),
        ((str(tmp_path / "blob.bin"), "--tenant", "acme", "--to", "help@globex.test"), 64),
        ((str(tmp_path / "blob.bin"), "--tenant", "acme", "--open-since", "soon"), 64),
    ]
    for args, want in cases:
        out = d.cli("import", *args)
        assert out.returncode == want, (args, out.stderr)
        assert len(out.stderr.decode().strip().splitlines()) == 1, out.stderr
        assert b"Traceback" not in out.stderr and not out.stdout


def test_deferred_messages_exit_75_and_a_rerun_finishes(tmp_path: Path, clamd: Clamd) -> None:
    """The scanner is down: the attachment and the reply that answers it wait (the reply
    must not open a ticket of its own); the rerun with clamd up threads them together."""
    root = _dated(
        make_mail(
            message_id="<with-log@client.test>",
            attachments=[("debug.log", "text/plain", b"line 1\r\n")],
        ),
        "Thu, 07 Mar 2024 09:00:00 +0000",
    )
    reply = _dated(
        make_mail(subject="Re: Printer jammed", headers={"References": "<with-log@client.test>"}),
        "Thu, 07 Mar 2024 10:00:00 +0000",
    )
    plain = make_mail(subject="Unrelated")
    path = _mbox(tmp_path / "box.mbox", (root, reply, plain))

    down = Daemon(tmp_path / "gw")  # scanner address where nothing answers
    code, s, stderr = _import(down, path)
    assert code == 75, stderr
    assert (s["tickets_opened"], s["deferred"], s["messages_read"]) == (1, 2, 3)
    assert "waits for a deferred message it answers" in s["deferred_by_reason"]
    assert any(r.startswith("451 4.7.1") for r in s["deferred_by_reason"])

    up = Daemon(tmp_path / "gw", scanner=clamd.address, database_url=down.database_url)
    code, s, stderr = _import(up, path)  # same store, clamd up
    assert code == 0, stderr
    assert (s["tickets_opened"], s["replies_threaded"], s["duplicates"]) == (1, 1, 1)
    ticket = {r["thread_by"]: r["ticket_id"] for r in up.query("SELECT * FROM messages")}
    assert ticket["references"] == ticket["new"] and len(ticket) == 2  # new, references


# --- history keeps its dates (issue 17) --------------------------------------------


def _history(tmp_path: Path) -> Path:
    """Three conversations: one of 2024, one whose old question got a reply yesterday,
    one from two days ago."""
    recent = format_datetime(datetime.now(UTC) - timedelta(days=1))
    older = format_datetime(datetime.now(UTC) - timedelta(days=2))
    mails = [
        _dated(make_mail(subject="Old", message_id="<old@client.test>"),
               "Mon, 04 Mar 2024 08:06:00 +0000"),
        _dated(make_mail(subject="Long", message_id="<long@client.test>"),
               "Tue, 05 Mar 2024 08:00:00 +0000"),
        _dated(make_mail(subject="Re: Long", headers={"References": "<long@client.test>"}),
               recent),
        _dated(make_mail(subject="New", message_id="<new@client.test>"), older),
    ]  # fmt: skip
    return _mbox(tmp_path / "history.mbox", mails)  # each call writes the three anew


def _tickets(d: Daemon) -> dict[str, tuple[str, str]]:
    rows = d.query("SELECT subject, status, created_at FROM tickets")
    return {r["subject"]: (r["status"], str(r["created_at"])[:10]) for r in rows}


def test_imported_tickets_keep_their_dates_and_old_ones_are_closed(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "gw")
    code, s, stderr = _import(d, _history(tmp_path))
    assert code == 0, stderr
    assert (s["tickets_opened"], s["tickets_dated"], s["tickets_closed"]) == (3, 3, 1)
    two_days_ago = str((datetime.now(UTC) - timedelta(days=2)).date())
    assert _tickets(d) == {
        "Old": ("closed", "2024-03-04"),
        "Long": ("open", "2024-03-05"),  # its last message is recent
        "New": ("open", two_days_ago),
    }
    (resolved,) = d.query("SELECT resolved_at FROM tickets WHERE subject = 'Old'")[0]
    assert str(resolved).startswith("2024-03-04 08:06")

    # --open-since chooses: a day back closes the two-day-old one too.
    other = Daemon(tmp_path / "gw2")
    code, s, stderr = _import(other, _history(tmp_path), "--open-since", "36h")
    assert code == 0 and s["tickets_closed"] == 2, stderr
    assert _tickets(other)["New"][0] == "closed"
    third = Daemon(tmp_path / "gw3")
    code, s, stderr = _import(third, _history(tmp_path), "--open-since", "2024-01-01")
    assert code == 0 and s["tickets_closed"] == 0, stderr


def test_history_imported_then_sla_turned_on_alerts_nobody(tmp_path: Path) -> None:
    """The issue's storm: imported history counted as open and breached at once."""
    clock = tmp_path / "clock"
    clock.write_text("0")
    sla = '\n[tenants.sla]\ncalendar = "24x7"\nfirst_response = "1h"\nresolution = "8h"\n'
    d = Daemon(tmp_path / "gw", acme_extra=sla, env={"GATEWAY_TEST_CLOCK_FILE": str(clock)})
    assert _import(d, _history(tmp_path))[0] == 0
    d.start()
    try:
        clock.write_text(str(12 * 3600))  # the recent tickets are hours past their targets
        checked: set[object] = set()
        deadline = time.monotonic() + 60
        while len(checked) < 3 and time.monotonic() < deadline:  # a whole round since the shift
            status = json.loads(d.cli("status", "--json").stdout)
            checked.add(status["daemon"]["ops"]["sla_checked_at"])
            time.sleep(0.3)
        assert len(checked) == 3, d.log_text()
        assert d.query("SELECT count(*) FROM outbox WHERE kind = 'sla'")[0][0] == 0
        assert d.query("SELECT count(*) FROM audit_events WHERE action LIKE 'sla.%'")[0][0] == 0
    finally:
        d.stop()


# --- the terminal ------------------------------------------------------------------


def test_progress_bar_only_on_a_terminal(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "gw")
    mail = tmp_path / "one.eml"
    mail.write_bytes(make_mail())
    piped = d.cli("import", str(mail), "--tenant", "acme")
    assert piped.returncode == 0 and piped.stderr == b""
    assert b"tickets opened" in piped.stdout

    primary, secondary = pty.openpty()
    args = ["import", str(mail), "--tenant", "acme", "--config", str(d.config)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", *args],
        cwd=d.home,
        env={**d.env, "TERM": "xterm"},
        stdout=subprocess.PIPE,
        stderr=secondary,
    )
    os.close(secondary)
    drawn = b""
    while True:  # read as it draws, or a full terminal buffer would stall it
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO: the child closed its side
            break
        if not chunk:
            break
        drawn += chunk
    os.close(primary)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    assert b"importing" in drawn and b"1/1" in drawn
    assert b"duplicates" in stdout  # the summary stays on stdout
