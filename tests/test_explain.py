"""`gateway route explain` and `gateway config check`: answers an admin can act on.

Explain runs the pipeline's own commit code in a transaction it rolls back, so
these tests check both what it says and that it stored nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.corpus import generate
from tests.daemon import Daemon

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"

RULES = """
[[tenants.queues]]
name = "general"

[[tenants.queues]]
name = "billing"

[[tenants.rules]]
name = "invoices to billing"
when = { to = "billing@acme.test", new_ticket = true }
then = { queue = "billing", tags = ["invoice"] }

[[tenants.rules]]
name = "urgent in the subject"
when = { subject = '\\b(urgent|dringend)\\b' }
then = { priority = "high" }
"""

COUNTED = ("tickets", "messages", "attachments", "outbox", "audit_events", "message_ids")


def _wire(name: str) -> bytes:
    """A fixture as an MTA sends it: CRLF line ends (smtplib leaves bare LF in bytes)."""
    return (FIXTURES / name).read_bytes().replace(b"\n", b"\r\n")


def _explain(d: Daemon, *args: str) -> dict[str, Any]:
    out = d.cli("route", "explain", *args, "--json")
    assert out.returncode == 0, out.stderr.decode()
    return json.loads(out.stdout)


def _counts(d: Daemon) -> dict[str, int]:
    return {t: d.query(f"SELECT count(*) AS n FROM {t}")[0]["n"] for t in COUNTED}


def test_explain_against_the_live_store_changes_nothing(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "gw", acme_extra=RULES).start()
    try:
        code, _ = d.send(_wire("new-ticket.eml"), sender="dana@client.example")
        assert code == 250
        before = _counts(d)
        report = _explain(d, str(FIXTURES / "reply-by-references.eml"))
        (acme,) = report["tenants"]
        assert report["store"] == "live"
        assert acme["threading"] == {"by": "references", "found": True}
        assert acme["ticket"]["ref"] == "ACME-1" and acme["ticket"]["existing"] is True
        assert acme["speaker"] == "client"
        assert [(m["kind"], m["to"]) for m in acme["would_send"]] == [
            ("notice", ["alice@acme.test"])
        ]
        assert acme["rules"]["matched"] == []
        assert [m["rule"] for m in acme["rules"]["missed"]] == [
            "invoices to billing",
            "urgent in the subject",
        ]
        assert acme["rules"]["missed"][0]["why"] == 'to = "billing@acme.test"'

        report = _explain(d, str(FIXTURES / "invoice-with-pdf.eml"), "--to", "billing@acme.test")
        (acme,) = report["tenants"]
        assert report["message"]["scanned_before_commit"] is True
        assert acme["rules"]["matched"] == ["invoices to billing"]
        assert acme["ticket"]["queue"] == "billing" and acme["ticket"]["tags"] == ["invoice"]
        assert acme["ticket"]["existing"] is False
        assert {m["kind"] for m in acme["would_send"]} == {"ack", "notice"}

        text = d.cli("route", "explain", str(FIXTURES / "reply-by-references.eml"))
        assert text.returncode == 0
        out = text.stdout.decode()
        assert "continues a ticket, by references" in out
        assert "added to ACME-1" in out and "send    notice  to alice@acme.test" in out
        assert _counts(d) == before  # nothing stored, nothing queued
        # and the live daemon still takes mail afterwards
        code, _ = d.send(_wire("reply-by-references.eml"), sender="dana@client.example")
        assert code == 250
        assert _counts(d)["messages"] == before["messages"] + 1
    finally:
        d.stop()


def test_explain_a_machine_mail_and_a_duplicate(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "gw").start()
    try:
        d.send(_wire("new-ticket.eml"), sender="dana@client.example")
        (acme,) = _explain(d, str(FIXTURES / "auto-reply.eml"))["tenants"]
        assert acme["speaker"] == "machine" and acme["would_send"] == []
        (acme,) = _explain(d, str(FIXTURES / "new-ticket.eml"))["tenants"]
        assert acme["result"]["duplicate"] is True
        assert (
            "duplicate: already stored"
            in d.cli("route", "explain", str(FIXTURES / "new-ticket.eml")).stdout.decode()
        )
    finally:
        d.stop()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("corpus")
    return out, generate(out, count=80, seed=11)


def test_explain_reads_corpus_mail_as_the_scorecard_expects(
    tmp_path: Path, corpus: tuple[Path, dict[str, Any]]
) -> None:
    """On an empty store: a new ticket opens one (and is acknowledged when it should be),
    machine mail opens nothing and is never answered."""
    folder, expect = corpus
    d = Daemon(tmp_path / "gw")  # config only: explain needs no running daemon
    checked = 0
    for m in expect["messages"]:
        if m["kind"] not in ("new", "autoreply", "bounce") or m["needs_tag"]:
            continue
        report = _explain(d, str(folder / m["file"]), "--to", m["to"])
        assert report["store"] == "empty (no database yet)"
        (t,) = report["tenants"]
        assert t["tenant"] == m["tenant"], m["file"]
        acks = [x for x in t["would_send"] if x["kind"] == "ack"]
        if m["expect"]["action"] == "new_ticket":
            assert t["ticket"] is not None and t["ticket"]["existing"] is False, m["file"]
            assert bool(acks) == m["expect"]["answer"], m["file"]
        else:
            assert t["ticket"] is None and acks == [], m["file"]
        checked += 1
    assert checked >= 20
    assert not (tmp_path / "gw" / "var" / "gateway.db").exists()


def test_explain_errors_are_one_line(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "gw")
    elsewhere = tmp_path / "elsewhere.eml"
    elsewhere.write_bytes(_wire("new-ticket.eml").replace(b"support@acme.test", b"x@else.test"))
    cases = [
        (("route", "explain", str(tmp_path / "missing.eml")), 66, "No such file"),
        (("route", "explain", str(elsewhere)), 65, "--to ADDR"),
        (
            ("route", "explain", str(FIXTURES / "new-ticket.eml"), "--to", "x@nowhere.test"),
            65,
            "not a tenant address: x@nowhere.test",
        ),
    ]
    for args, code, says in cases:
        out = d.cli(*args)
        err = out.stderr.decode()
        assert out.returncode == code, (args, err)
        assert len(err.strip().splitlines()) == 1 and says in err and "Traceback" not in err


def test_config_check_exit_codes(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "gw", acme_extra=RULES)
    ok = d.cli("config", "check")
    assert ok.returncode == 0, ok.stderr
    assert (
        ok.stdout.decode()
        .strip()
        .endswith("2 tenants, 3 addresses, 0 mailboxes, 3 queues, 2 rules")
    )
    bad = d.config.read_text().replace('queue = "billing"', 'queue = "biling"')
    bad = bad.replace('slug = "globex"', 'slug = "globex"\ncolour = "red"')
    d.config.write_text(bad)
    out = d.cli("config", "check")
    err = out.stderr.decode().strip().splitlines()
    assert out.returncode == 1
    assert len(err) == 2 and all(line.startswith("gateway: config error: ") for line in err)
    assert any("tenants[0].rules[0].then.queue: unknown queue 'biling'" in e for e in err)
    assert any("tenants[1].colour: unknown key" in e for e in err)
