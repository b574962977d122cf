"""The CLI as an admin and an MTA use it: exit codes, one-line errors, JSON shapes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.daemon import Daemon
from tests.mail import make_mail

ROOT = Path(__file__).resolve().parent.parent


def _gateway(*args: str, stdin: bytes | None = None, cwd: Path | None = None):  # type: ignore[no-untyped-def]
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], input=stdin, capture_output=True, cwd=cwd
    )


def test_parse_prints_one_json_object(tmp_path: Path) -> None:
    f = tmp_path / "m.eml"
    f.write_bytes(
        make_mail(
            subject="=?utf-8?q?Caf=C3=A9_[ACME-7]?=",
            body="New text.\n\nOn Mon, 4 Mar 2024, Support wrote:\n> old text\n",
            headers={"In-Reply-To": "<a@b.test>", "References": "<z@b.test> <a@b.test>"},
            attachments=[("C:\\temp\\log.txt", "text/plain", b"line\\1\r\n")],
        )
    )
    out = _gateway("parse", str(f), "--json")
    assert out.returncode == 0, out.stderr
    obj = json.loads(out.stdout)
    assert obj["subject"] == "Café [ACME-7]"
    assert obj["from"] == "carol@client.test"
    assert obj["kind"] == "normal"
    assert obj["thread_hints"]["subject_tag"] == "ACME-7"
    assert obj["thread_hints"]["in_reply_to"] == "<a@b.test>"
    assert obj["thread_hints"]["references"][:2] == ["<z@b.test>", "<a@b.test>"]
    assert "old text" in obj["text"] and "old text" not in obj["reply_text"]
    assert obj["attachments"][0]["size"] == 8
    for key in ("message_id", "to", "cc", "date", "html", "defects"):
        assert key in obj


def test_parse_unreadable_file_is_one_line_and_65(tmp_path: Path) -> None:
    empty = tmp_path / "empty.eml"
    empty.write_bytes(b"")
    out = _gateway("parse", str(empty))
    assert out.returncode == 65
    assert len(out.stderr.decode().strip().splitlines()) == 1
    assert b"Traceback" not in out.stderr
    missing = _gateway("parse", str(tmp_path / "nope.eml"))
    assert missing.returncode != 0 and len(missing.stderr.splitlines()) == 1


def test_ingest_exit_codes(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "gw")  # config only: ingest needs no daemon
    data = make_mail(sender="pia@client.test")
    ok = d.cli("ingest", "--tenant-address", "support@acme.test", stdin=data)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.decode().startswith("stored ACME-1")
    again = d.cli("ingest", "--tenant-address", "support@acme.test", stdin=data)
    assert again.returncode == 0 and again.stdout.startswith(b"duplicate")
    nouser = d.cli("ingest", "--tenant-address", "nobody@acme.test", stdin=data)
    assert nouser.returncode == 67 and b"5.1.1" in nouser.stderr
    deep = b"Subject: x\r\n" + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n' * 3000
    bomb = d.cli("ingest", "--tenant-address", "support@acme.test", stdin=deep)
    assert bomb.returncode == 65 and len(bomb.stderr.splitlines()) == 1


def test_tickets_list_show_dump(daemon: Daemon) -> None:
    data = make_mail(
        sender="Quinn <quinn@client.test>",
        subject="Dump me",
        attachments=[("report.pdf", "application/pdf", b"%PDF-1.4 test")],
    )
    _code, text = daemon.send(data, sender="quinn@client.test")
    ref = daemon.ref(text)
    listed = daemon.cli("tickets", "list", "--tenant", "acme", "--json")
    assert ref in [t["ref"] for t in json.loads(listed.stdout)]
    shown = json.loads(daemon.cli("tickets", "show", ref, "--json").stdout)
    assert shown["participants"][0]["address"] == "quinn@client.test"
    att = shown["messages"][0]["attachments"][0]
    assert (att["filename"], att["size"]) == ("report.pdf", 13)
    plain = daemon.cli("tickets", "show", ref)
    assert plain.returncode == 0 and b"report.pdf" in plain.stdout
    dump = daemon.dump()
    t = next(t for t in dump if t["ref"] == ref)
    assert set(t) >= {
        "ref",
        "tenant",
        "subject",
        "status",
        "created_at",
        "participants",
        "messages",
    }
    msg = t["messages"][0]
    assert set(msg) >= {"message_id", "from", "kind", "direction", "text", "attachments"}
    assert msg["direction"] == "in" and "quinn" in msg["from"]
    unknown = daemon.cli("tickets", "show", "NOPE-1")
    assert unknown.returncode != 0 and len(unknown.stderr.splitlines()) == 1
