"""Attachments through the whole gateway, scanned by a real clamd (issue 3's proof).

Every case speaks SMTP to a real daemon and reads the store afterwards: an infected
message leaves no message row and no blob, only an audit event; a scanner that is
down, frozen or too small defers or refuses, and never lets anything in unscanned.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import threading
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.intake.pipeline import needs_scan
from parsers import parse
from tests import tnef_stream
from tests.clamd_harness import EICAR, Clamd
from tests.daemon import Daemon
from tests.mail import make_mail

SIGNATURE = "Eicar-Test-Signature"


def _who() -> str:
    return f"u{uuid.uuid4().hex[:10]}@client.test"


def _zip(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, data)
    return buf.getvalue()


def _head(who: str, subject: str, content_type: str) -> str:
    """A test mail's header from ``who``, ending with its blank line."""
    return (
        f"From: {who}\r\nTo: support@acme.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@client.test>\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: {content_type}\r\n\r\n"
    )


def _forwarded(who: str, inner: bytes) -> bytes:
    return (
        (
            _head(who, "Fwd: look at this", 'multipart/mixed; boundary="outer"')
            + "--outer\r\nContent-Type: text/plain\r\n\r\nSee the forwarded mail.\r\n"
            "--outer\r\nContent-Type: message/rfc822\r\n\r\n"
        ).encode()
        + inner
        + b"\r\n--outer--\r\n"
    )


def _inline_base64(who: str, data: bytes) -> bytes:
    return _base64_last(
        _head(who, "inline part", 'multipart/related; boundary="r"')
        + '--r\r\nContent-Type: text/html\r\n\r\n<p>picture: <img src="cid:p1@x"></p>\r\n'
        "--r\r\nContent-Type: image/png\r\nContent-Disposition: inline\r\n"
        "Content-ID: <p1@x>\r\nContent-Transfer-Encoding: base64\r\n\r\n",
        data,
        "--r--\r\n",
    )


def _boundary_unindented(who: str, data: bytes) -> bytes:
    """A script's mail: ``boundary=`` on a line of its own ends the header, so the parts
    are found only by their delimiter lines (parsers/broken_multipart.py)."""
    return _base64_last(
        _head(who, "the file", 'multipart/mixed;\r\nboundary="u"')
        + "--u\r\nContent-Type: text/plain\r\n\r\nHere it is.\r\n"
        '--u\r\nContent-Type: application/octet-stream; name="tool.com"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n",
        data,
        "--u--\r\n",
    )


def _after_early_close(who: str, data: bytes) -> bytes:
    """A part after the closing line (where an inner multipart that reused the outer
    boundary closes the outer one early): it was in the epilogue, which no part and no
    scan read, and stored unscanned (parsers/broken_multipart.py)."""
    return _base64_last(
        _head(who, "the file", 'multipart/mixed; boundary="B"')
        + "--B\r\nContent-Type: text/plain\r\n\r\nHere it is.\r\n--B--\r\n\r\n"
        '--B\r\nContent-Type: application/octet-stream; name="tool.com"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n",
        data,
        "--B--\r\n",
    )


def _base64_last(mail: str, data: bytes, closing: str) -> bytes:
    """``mail`` up to its last part's blank line, then ``data`` in base64, ``closing``."""
    return mail.encode() + base64.encodebytes(data).replace(b"\n", b"\r\n") + closing.encode()


def _uuencoded(who: str, data: bytes) -> bytes:
    """A plain-text mail with a file uuencoded into it (parsers/uuencoded.py)."""
    lines = "".join(
        binascii.b2a_uu(data[i : i + 45]).decode().replace("\n", "\r\n")
        for i in range(0, len(data), 45)
    )
    head = _head(who, "the tool", "text/plain")
    return f"{head}Here it is.\r\nbegin 755 tool.com\r\n{lines}`\r\nend\r\n".encode()


def _winmail(who: str, data: bytes) -> bytes:
    """Outlook's way: the file inside a winmail.dat (parsers/tnef.py)."""
    return _winmail_mail(who, tnef_stream.stream([("tool.com", data, None)]))


def _winmail_mail(who: str, stream: bytes) -> bytes:
    body = base64.encodebytes(stream).decode()
    return (
        _head(who, "the tool", 'multipart/mixed; boundary="w"')
        + "--w\r\nContent-Type: text/plain\r\n\r\nHere it is.\r\n"
        '--w\r\nContent-Type: application/ms-tnef; name="winmail.dat"\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n{body}--w--\r\n"
    ).encode()


def _infected(who: str) -> dict[str, bytes]:
    inner = make_mail(
        sender="someone@else.test",
        subject="the file",
        attachments=[("eicar.com", "application/octet-stream", EICAR)],
    )
    return {
        "plain": make_mail(
            sender=who, attachments=[("eicar.com", "application/octet-stream", EICAR)]
        ),
        "zipped": make_mail(
            sender=who, attachments=[("eicar.zip", "application/zip", _zip("eicar.com", EICAR))]
        ),
        "forwarded": _forwarded(who, inner),
        "inline-base64": _inline_base64(who, EICAR),
        "boundary-unindented": _boundary_unindented(who, EICAR),
        "uuencoded": _uuencoded(who, EICAR),
        "winmail-dat": _winmail(who, EICAR),
        "after-early-close": _after_early_close(who, EICAR),
    }


def _rows_from(d: Daemon, who: str) -> int:
    return d.query("SELECT count(*) FROM messages WHERE from_addr = ?", who)[0][0]


def _pdf(size: int = 100 * 1024) -> bytes:
    return b"%PDF-1.4\n" + uuid.uuid4().bytes * (size // 16)


# ------------------------------------------------------------------------------------------
# With the shared daemon and the session clamd
# ------------------------------------------------------------------------------------------


def test_clean_attachment_is_stored_byte_exact(daemon: Daemon) -> None:
    who, pdf = _who(), _pdf()
    code, text = daemon.send(
        make_mail(sender=who, attachments=[("report.pdf", "application/pdf", pdf)]), sender=who
    )
    assert code == 250, text
    (att,) = daemon.query(
        "SELECT a.filename, a.size, a.sha256 FROM attachments a "
        "JOIN messages m ON m.id = a.message_id WHERE m.from_addr = ?",
        who,
    )
    sha = hashlib.sha256(pdf).hexdigest()
    assert (att["filename"], att["size"], att["sha256"]) == ("report.pdf", len(pdf), sha)
    assert daemon.blob(sha) == pdf


@pytest.mark.parametrize(
    "variant",
    [
        "plain",
        "zipped",
        "forwarded",
        "inline-base64",
        "boundary-unindented",
        "uuencoded",
        "winmail-dat",
        "after-early-close",
    ],
)
def test_infected_mail_is_refused_and_leaves_only_an_audit_event(
    daemon: Daemon, variant: str
) -> None:
    who = _who()
    data = _infected(who)[variant]
    blobs_before = daemon.blob_names()
    code, text = daemon.send(data, sender=who)
    assert (code, text.split()[0]) == (554, "5.7.1"), text
    assert SIGNATURE in text
    assert _rows_from(daemon, who) == 0
    raw_sha = hashlib.sha256(data).hexdigest()
    new_blobs = daemon.blob_names() - blobs_before
    assert raw_sha not in new_blobs
    assert hashlib.sha256(EICAR).hexdigest() not in daemon.blob_names()
    events = daemon.query(
        "SELECT tenant, actor, detail FROM audit_events WHERE action = 'message.infected' "
        "AND actor = ?",
        who,
    )
    assert len(events) == 1
    detail = json.loads(events[0]["detail"])
    assert events[0]["tenant"] == "acme"
    assert detail["signature"].startswith(SIGNATURE) and detail["sha256"] == raw_sha


def test_a_multipart_read_as_text_is_scanned_like_one_with_a_file() -> None:
    """Parts no delimiter line shows are read as text (parsers/body.py); clamd, or a
    mail client, may still split them another way and find a file: scanned first."""
    unsplit = parse(
        (_head(_who(), "s", 'multipart/mixed; boundary="gone"') + "Hello.\r\n").encode()
    )
    assert "multipart-read-as-text" in unsplit.defects and not unsplit.attachments
    assert needs_scan(unsplit)
    plain = parse((_head(_who(), "s", "text/plain") + "Hello.\r\n").encode())
    assert not needs_scan(plain)


def test_text_after_a_multiparts_closing_line_is_scanned() -> None:
    """No part holds it and no client shows it, but it is stored with the raw mail."""
    head = _head(_who(), "s", 'multipart/mixed; boundary="B"')
    body = "--B\r\nContent-Type: text/plain\r\n\r\nHello.\r\n--B--\r\n"
    tail = parse((head + body + "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR\r\n").encode())
    assert not tail.attachments and "multipart-epilogue" in tail.defects
    assert needs_scan(tail)
    assert not needs_scan(parse((head + body + "\r\n\r\n").encode()))


def test_a_winmail_dat_without_files_is_still_scanned() -> None:
    """Read whole, a winmail.dat with no file (Outlook's rich text only) leaves no
    attachment; clamd still sees the mail, which it reads its own way."""
    only_rtf = parse(_winmail_mail(_who(), tnef_stream.stream([])))
    assert not only_rtf.attachments and "tnef-read" in only_rtf.defects
    assert needs_scan(only_rtf)


def test_infected_mail_to_two_tenants_is_audited_in_each(daemon: Daemon) -> None:
    who = _who()
    code, _ = daemon.send(
        _infected(who)["plain"], to=["support@acme.test", "help@globex.test"], sender=who
    )
    assert code == 554
    rows = daemon.query(
        "SELECT tenant FROM audit_events WHERE action = 'message.infected' AND actor = ? "
        "ORDER BY tenant",
        who,
    )
    assert [r["tenant"] for r in rows] == ["acme", "globex"]
    assert _rows_from(daemon, who) == 0


def test_ingest_gives_the_same_verdicts(daemon: Daemon, tmp_path: Path) -> None:
    who = _who()
    bad = daemon.cli(
        "ingest", "--tenant-address", "support@acme.test", stdin=_infected(who)["plain"]
    )
    assert bad.returncode == 69, bad.stderr
    assert bad.stderr.decode().splitlines() == [
        f"gateway: 554 5.7.1 Message content rejected: virus found ({SIGNATURE}.UNOFFICIAL)"
    ]
    # The same pipe with the scanner gone: retry later, nothing stored.
    down = Daemon(tmp_path / "down")  # default scanner address: nothing listens
    data = make_mail(sender=who, attachments=[("a.pdf", "application/pdf", _pdf(2048))])
    out = down.cli("ingest", "--tenant-address", "support@acme.test", stdin=data)
    assert out.returncode == 75, out.stderr
    assert b"451 4.7.1" in out.stderr
    assert not down.blob_names()


def test_status_reports_the_scanner(daemon: Daemon, tmp_path: Path) -> None:
    up = daemon.cli("status", "--json")
    assert up.returncode == 0, up.stderr
    report = json.loads(up.stdout)
    assert report["scanner"]["reachable"] is True
    assert report["store"]["schema"]
    down = Daemon(tmp_path / "down").cli("status")
    assert down.returncode == 69
    assert b"UNREACHABLE" in down.stdout


# ------------------------------------------------------------------------------------------
# A daemon of its own, with a clamd of its own that the test stops, freezes or shrinks
# ------------------------------------------------------------------------------------------


@pytest.fixture
def private(tmp_path: Path, clamd_factory) -> Iterator[tuple[Daemon, Clamd]]:  # type: ignore[no-untyped-def]
    scanner = clamd_factory()
    d = Daemon(tmp_path / "gw", scanner=scanner.address, scan_deadline=3).start()
    try:
        yield d, scanner
    finally:
        d.kill()


def test_scanner_down_defers_attachments_while_plain_mail_flows(
    private: tuple[Daemon, Clamd],
) -> None:
    d, scanner = private
    who = _who()
    with_att = [
        make_mail(
            sender=who, subject=f"file {i}", attachments=[("f.pdf", "application/pdf", _pdf(4096))]
        )
        for i in range(3)
    ]
    scanner.stop()
    for data in with_att:
        code, text = d.send(data, sender=who)
        assert (code, text.split()[0]) == (451, "4.7.1"), text
    code, text = d.send(make_mail(sender=who, subject="no attachment"), sender=who)
    assert code == 250, text
    assert d.query("SELECT count(*) FROM messages")[0][0] == 1
    assert d.query("SELECT count(*) FROM attachments")[0][0] == 0

    scanner.start()
    for data in with_att + with_att:  # the retries, and a second retry of each
        assert d.send(data, sender=who)[0] == 250
    assert d.query("SELECT count(*) FROM messages")[0][0] == 4
    assert d.query("SELECT count(*) FROM attachments")[0][0] == 3
    assert d.query("SELECT count(*) FROM tickets")[0][0] == 4


def test_frozen_scanner_defers_at_the_deadline_and_the_loop_keeps_serving(
    private: tuple[Daemon, Clamd],
) -> None:
    d, scanner = private
    who = _who()
    data = make_mail(sender=who, attachments=[("f.pdf", "application/pdf", _pdf(4096))])
    result: dict[str, tuple[int, str]] = {}
    # The first mail that needs the language model waits for its load (about a second,
    # routing/language.py); it is not what this test times against the scan deadline.
    assert d.send(make_mail(sender=who, subject="before the freeze"), sender=who)[0] == 250
    scanner.freeze()
    try:
        t = threading.Thread(target=lambda: result.update(att=d.send(data, sender=who)))
        t.start()
        # While the scan hangs, plain mail is answered: the event loop is not blocked.
        plain = d.send(make_mail(sender=who, subject="plain while frozen"), sender=who)
        assert plain[0] == 250, plain
        assert t.is_alive(), "the scan must still be waiting on the frozen clamd"
        t.join(60)
        assert not t.is_alive()
    finally:
        scanner.thaw()
    code, text = result["att"]
    assert (code, text.split()[0]) == (451, "4.7.1"), text
    assert d.query("SELECT count(*) FROM attachments")[0][0] == 0
    assert d.send(data, sender=who)[0] == 250  # thawed: the retry goes in


def test_attachment_over_the_scanner_stream_limit_is_refused(tmp_path: Path, clamd_factory) -> None:  # type: ignore[no-untyped-def]
    small = clamd_factory(stream_max_length="64K")
    d = Daemon(tmp_path / "gw", scanner=small.address, scan_deadline=10).start()
    try:
        who = _who()
        big = make_mail(sender=who, attachments=[("big.pdf", "application/pdf", _pdf(256 * 1024))])
        code, text = d.send(big, sender=who)
        assert (code, text.split()[0]) == (552, "5.3.4"), text
        assert d.query("SELECT count(*) FROM messages")[0][0] == 0
        assert not d.blob_names()
        small_one = make_mail(sender=who, attachments=[("s.pdf", "application/pdf", _pdf(2048))])
        assert d.send(small_one, sender=who)[0] == 250
    finally:
        d.kill()
