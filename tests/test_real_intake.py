"""No real-world mail gets a 4xx for a fault of ours (issue #19), over real SMTP.

Every mail of fixtures/ and fixtures/real/ (written in each client's or MTA's own
format: legacy 8-bit headers, broken encoded words, junk before the header,
delivery reports, read receipts, attachments) and every reply body of the
golden set fixtures/replies/, sent as its client sends it, goes to one running
gateway that scans with the real clamd. Each must get 250 to its DATA and be
stored; a golden reply is also stored with exactly the text its sender wrote.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.fig_replies import cases
from parsers import parse
from tests.clamd_harness import Clamd
from tests.daemon import Daemon

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
MAILS = sorted(FIXTURES.glob("*.eml")) + sorted((FIXTURES / "real").glob("*.eml"))
REPLIES = cases()


def _reply_mail(name: str, body: str) -> bytes:
    """A golden reply body as its client sends it: UTF-8 plain text, 8-bit."""
    return (
        "From: Anna Berger <anna@client.test>\r\n"
        "To: support@acme.test\r\n"
        "Subject: Re: Printer\r\n"
        "Date: Mon, 04 Mar 2024 10:20:00 +0100\r\n"
        f"Message-ID: <{name}@client.test>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n" + body.replace("\n", "\r\n")
    ).encode("utf-8")


def _send(d: Daemon, data: bytes, sender: str) -> tuple[int, str]:
    """As an MTA relays it: 8-bit content is announced as such (RFC 6152)."""
    with d.smtp() as s:
        s.ehlo()
        code, msg = s.mail(sender, [] if data.isascii() else ["BODY=8BITMIME"])
        assert code == 250, (code, msg)
        code, msg = s.rcpt("support@acme.test")
        assert code == 250, (code, msg)
        code, msg = s.data(data)
        return code, msg.decode()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, clamd: Clamd) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("gw-real"), scanner=clamd.address).start()
    yield d
    d.stop()


def _stored(d: Daemon, message_id: str) -> list[dict[str, str]]:
    rows = d.query(
        "SELECT kind, reply_text FROM messages WHERE direction = 'in' AND message_id = ?",
        message_id,
    )
    return [{"kind": r[0], "reply_text": r[1]} for r in rows]


@pytest.mark.parametrize("path", MAILS, ids=[p.name for p in MAILS])
def test_every_real_mail_gets_250_and_is_stored(gateway: Daemon, path: Path) -> None:
    raw = path.read_bytes()
    parsed = parse(raw)
    sender = "" if parsed.kind == "bounce" else "client@client.test"
    code, text = _send(gateway, raw, sender)
    assert code == 250, (path.name, code, text)
    assert parsed.message_id is not None
    (row,) = _stored(gateway, parsed.message_id)
    assert row["kind"] == parsed.kind


@pytest.mark.parametrize(("name", "body", "expected"), REPLIES, ids=[c[0] for c in REPLIES])
def test_every_golden_reply_gets_250_and_its_text_is_stored(
    gateway: Daemon, name: str, body: str, expected: str
) -> None:
    code, text = _send(gateway, _reply_mail(name, body), "anna@client.test")
    assert code == 250, (name, code, text)
    (row,) = _stored(gateway, f"<{name}@client.test>")
    assert row["reply_text"] == expected.rstrip("\n")
