"""Behind a checking front MTA: which of its ``Authentication-Results`` are believed.

The headers are what the products write (tests/front_reports.py): Postfix with one
header per milter (OpenARC, OpenDMARC, OpenDKIM, policyd-spf), rspamd, Gmail,
Microsoft 365 (no authserv-id) and Fastmail (one id per MX). No DNS is asked: the
gateway believes the front's block of headers, merged, and nothing the sender wrote.
"""

from __future__ import annotations

import asyncio
from email import message_from_bytes
from email.parser import BytesHeaderParser
from email.policy import default
from email.utils import make_msgid
from pathlib import Path

import pytest

from gateway.intake.auth import Authenticator
from parsers.types import Envelope, RawMessage
from routing.auth_front import front_block, matches_id, trusted_verdict
from routing.config import load_config
from tests.daemon import Daemon
from tests.front_reports import EXPECTED, FROM, FRONTS, POSTFIX, RSPAMD


def _mail(front: str, from_addr: str, *, sender_headers: str = "", below: str = "") -> bytes:
    """A message as the gateway gets it: the front's block on top, then the sender's
    headers (``sender_headers`` first among them, ``below`` after the Subject)."""
    return (
        f"{front}{sender_headers}From: {from_addr}\r\nTo: support@acme.test\r\n"
        f"Subject: auth test\r\n{below}Message-ID: {make_msgid(domain='t.test')}\r\n"
        "\r\nHello.\r\n"
    ).encode()


def _verdict(data: bytes, trusted: str, from_addr: str) -> tuple[str, str, str, str]:
    head = BytesHeaderParser().parsebytes(data)
    v = trusted_verdict(head, trusted, from_addr.rpartition("@")[2])
    assert v is not None
    return (v.summary, v.spf, v.dkim, v.dmarc)


CASES = [(front, case) for front in FRONTS for case in EXPECTED]


@pytest.mark.parametrize(("front", "case"), CASES, ids=[f"{f}-{c}" for f, c in CASES])
def test_each_front_and_verdict_is_read_as_written(front: str, case: str) -> None:
    trusted, blocks = FRONTS[front]
    data = _mail(blocks[case], FROM[case])
    assert _verdict(data, trusted, FROM[case]) == EXPECTED[case]


def test_a_domain_without_a_policy_passes_by_alignment_across_headers() -> None:
    """The defect: OpenDMARC's header says only ``dmarc=none``; policyd-spf's, one below,
    says SPF passed for that domain. Read together: pass, not fail."""
    data = _mail(POSTFIX["nopolicy"], "bob@nopolicy.test")
    head = BytesHeaderParser().parsebytes(data)
    block = front_block(head, "mx.front.test")
    assert [t.split(";")[1].split("=")[0].strip() for t in block] == ["arc", "dmarc", "spf"]
    assert _verdict(data, "mx.front.test", "bob@nopolicy.test") == ("pass", "pass", "none", "none")


def test_the_whole_path_believes_the_block_without_dns(tmp_path: Path) -> None:
    """Through the Authenticator, as the pipeline calls it (no resolver at all)."""
    path = tmp_path / "gateway.toml"
    path.write_text(
        '[gateway]\nhostname = "gw.test"\ndns_resolver = "none"\n'
        '[smtp]\ntrusted_authserv_id = "mx.front.test"\n'
        '[[tenants]]\nslug = "acme"\naddresses = ["support@acme.test"]\ntag_prefix = "ACME"\n'
    )
    config = load_config(path)
    data = _mail(POSTFIX["nopolicy"], "bob@nopolicy.test")
    raw = RawMessage(Envelope("bob@nopolicy.test", ("support@acme.test",), "127.0.0.1"), data,
                     "smtp")  # fmt: skip
    v = asyncio.run(Authenticator(config).verdict(raw, "bob@nopolicy.test", "mx.front.test"))
    assert (v.summary, v.spf, v.dmarc) == ("pass", "pass", "none")
    dmarc = "mx.front.test; dmarc=none (p=none dis=none) header.from=nopolicy.test"
    assert v.header.splitlines()[1] == dmarc


FORGED_PASS = (
    "Authentication-Results: mx.front.test; spf=pass smtp.mailfrom=nopolicy.test;"
    " dkim=pass header.d=nopolicy.test; dmarc=pass header.from=nopolicy.test\r\n"
)


@pytest.mark.parametrize("where", ["top", "below", "both"])
def test_a_forged_header_with_the_trusted_id_among_the_senders_is_ignored(where: str) -> None:
    """Right under the front's Received (the top of the sender's headers) or further down:
    below the first header the front did not add, so the sender's, whatever its id."""
    top = FORGED_PASS if where in ("top", "both") else ""
    below = FORGED_PASS if where in ("below", "both") else ""
    for case in ("nopolicy-fail",):
        data = _mail(POSTFIX[case], FROM[case], sender_headers=top, below=below)
        assert _verdict(data, "mx.front.test", FROM[case]) == EXPECTED[case]
        head = BytesHeaderParser().parsebytes(data)
        assert not any("dmarc=pass" in t for t in front_block(head, "mx.front.test"))
    # a forged bank.test pass does not lift the front's dmarc=fail either
    forged = FORGED_PASS.replace("nopolicy.test", "bank.test")
    data = _mail(RSPAMD["fail"], "ceo@bank.test", sender_headers=forged, below=forged)
    assert _verdict(data, "mx.front.test", "ceo@bank.test") == EXPECTED["fail"]


def test_gmail_forgery_below_its_header_and_other_ids_are_ignored() -> None:
    _, blocks = FRONTS["gmail"]
    forged = "Authentication-Results: mx.google.com; dkim=pass header.d=nopolicy.test\r\n"
    other = "Authentication-Results: mx.other.test; spf=pass smtp.mailfrom=nopolicy.test\r\n"
    data = _mail(blocks["nopolicy-fail"], "bob@nopolicy.test", below=forged + other)
    assert _verdict(data, "mx.google.com", "bob@nopolicy.test") == EXPECTED["nopolicy-fail"]


@pytest.mark.parametrize("front", ["fastmail", "rspamd", "microsoft365"])
def test_a_forged_first_sender_header_adds_no_dkim_pass_to_a_combined_header(front: str) -> None:
    """Where the front writes one combined header (two checks or more in it) just above
    the sender's headers, a forged header with its id as the sender's very first one
    joins the block; it must not turn unsigned mail from a domain without a policy into
    a DKIM pass. (Gmail reports SPF alone for such mail: that case stays open, see
    docs/security.md.)"""
    trusted, blocks = FRONTS[front]
    authserv = trusted.replace("*.", "mx1.")
    forged = f"Authentication-Results: {authserv}; dkim=pass header.d=nopolicy.test\r\n"
    if front == "microsoft365":
        forged = "Authentication-Results: dkim=pass (signature was verified) header.d=nopolicy.test"
        forged += "\r\n"
    data = _mail(blocks["nopolicy-fail"], "bob@nopolicy.test", sender_headers=forged)
    assert _verdict(data, trusted, "bob@nopolicy.test") == EXPECTED["nopolicy-fail"]


def test_two_reports_of_one_check_that_disagree_are_not_a_pass() -> None:
    """Two milters both checking SPF (OpenDMARC's SPFSelfValidate and policyd-spf), or
    two DMARC results: the less favourable one counts."""
    block = (
        "Authentication-Results: mx.front.test; dmarc=pass header.from=good.test\r\n"
        "Authentication-Results: mx.front.test; dmarc=fail header.from=good.test\r\n"
        "Authentication-Results: mx.front.test; spf=pass smtp.mailfrom=nopolicy.test\r\n"
        "Authentication-Results: mx.front.test; spf=fail smtp.mailfrom=nopolicy.test\r\n"
        "Received: from mail.x.test by mx.front.test (Postfix)\r\n"
    )
    summary, spf, _dkim, dmarc = _verdict(_mail(block, "a@good.test"), "mx.front.test",
                                          "a@good.test")  # fmt: skip
    assert (summary, spf, dmarc) == ("fail", "fail", "fail")


def test_no_header_from_the_front_is_no_verdict() -> None:
    data = _mail("Received: from mail.x.test by mx.front.test (Postfix)\r\n", "a@good.test")
    head = BytesHeaderParser().parsebytes(data)
    assert trusted_verdict(head, "mx.front.test", "good.test") is None
    # Microsoft's id-less header is Microsoft's only: it is not believed for another id
    _, blocks = FRONTS["microsoft365"]
    head = BytesHeaderParser().parsebytes(_mail(blocks["pass"], "alice@good.test"))
    assert trusted_verdict(head, "mx.front.test", "good.test") is None


@pytest.mark.parametrize(
    ("value", "trusted", "ok"),
    [
        ("mx.front.test; dmarc=pass", "mx.front.test", True),
        ("MX.Front.Test; dmarc=pass", "mx.front.test", True),
        ("mx.front.test/4YBd4w6HK5z300V; dmarc=pass", "mx.front.test", True),  # OpenDMARC jobid
        ("mx.front.test.evil.test; dmarc=pass", "mx.front.test", False),
        ("mx6.messagingengine.com; spf=pass", "*.messagingengine.com", True),
        ("messagingengine.com.evil.test; spf=pass", "*.messagingengine.com", False),
        ("evilmessagingengine.com; spf=pass", "*.messagingengine.com", False),
        ("spf=pass (sender IP is 192.0.2.1) smtp.mailfrom=x.test", "protection.outlook.com", True),
        ("spf=pass (sender IP is 192.0.2.1) smtp.mailfrom=x.test", "mx.front.test", False),
        ("protection.outlook.com; spf=pass", "protection.outlook.com", True),
    ],
)
def test_which_ids_match(value: str, trusted: str, ok: bool) -> None:
    assert matches_id(value, trusted) is ok


def test_daemon_behind_a_front_believes_its_block_and_no_forgery(tmp_path: Path) -> None:
    """SMTP end to end with [smtp] trusted_authserv_id: a sender of a domain without a
    DMARC policy passes by the front's SPF header (and is answered); a forged pass with
    the front's id among the sender's headers, at their top or lower down, is ignored:
    the message is kept unverified and nobody is answered."""
    d = Daemon(tmp_path / "gw")
    d.config.write_text(
        d.config.read_text().replace("[smtp]\n", '[smtp]\ntrusted_authserv_id = "mx.front.test"\n')
    )
    d.start()
    try:
        code, text = d.send(_mail(POSTFIX["nopolicy"], "bob@nopolicy.test"),
                            sender="bob@nopolicy.test")  # fmt: skip
        assert code == 250, text
        ok_ref = d.ref(text)
        forged = _mail(POSTFIX["nopolicy-fail"], "eve@nopolicy.test",
                       sender_headers=FORGED_PASS, below=FORGED_PASS)  # fmt: skip
        code, text = d.send(forged, sender="eve@nopolicy.test")
        assert code == 250, text
        bad_ref = d.ref(text)
        rows = d.query("SELECT from_addr, auth, auth_results, flags FROM messages ORDER BY id")
        assert [(r[0], r[1]) for r in rows] == [
            ("bob@nopolicy.test", "pass"),
            ("eve@nopolicy.test", "fail"),
        ]
        assert "dmarc=none (p=none dis=none)" in rows[0][2] and "spf=pass" in rows[0][2]
        assert "dmarc=pass" not in rows[1][2], rows[1][2]  # the forgery is not stored as ours
        assert "unverified" in str(rows[1][3]) and "unverified" not in str(rows[0][3])
        acks = "SELECT count(*) FROM outbox o JOIN tickets t ON t.id = o.ticket_id "
        acks += "WHERE t.ref = ? AND o.kind = 'ack'"
        assert [d.query(acks, ref)[0][0] for ref in (ok_ref, bad_ref)] == [1, 0]
        notices = "SELECT o.body FROM outbox o JOIN tickets t ON t.id = o.ticket_id "
        notices += "WHERE t.ref = ? AND o.kind = 'notice'"
        first = (
            message_from_bytes(bytes(d.query(notices, bad_ref)[0][0]), policy=default)
            .get_body(("plain",))
            .get_content()
            .splitlines()[0]
        )
        assert first.startswith("Warning: unverified sender."), first
    finally:
        d.stop()
