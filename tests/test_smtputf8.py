"""Internationalised mail end to end (RFC 6530-6533), over real SMTP both ways.

A mail from a UTF-8 address with UTF-8 headers is taken (it once got
``451 4.3.0`` forever), stored and threaded; the acknowledgement goes back with
SMTPUTF8 when the tenant's server offers it, and when it does not, the
acknowledgement fails with a reason the agents are told of, never the intake.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from email import message_from_string
from email.message import Message
from email.policy import default
from pathlib import Path

import pytest

from routing.secrets import load_keyring
from tests.daemon import Daemon
from tests.mail import make_mail
from tests.smtp_sink import Received, Sink

FAST = """
[outbound]
retry_base = 0.2
retry_max = 1
poll_interval = 0.1
timeout = 10
"""
SENDER = "jdöe@mächine.example"


def _mail(subject: str = "Drucker klemmt", headers: str = "") -> bytes:
    return (
        f'From: "Jöhn Döe" <{SENDER}>\r\n'
        "To: support@acme.test\r\n"
        f"Subject: {subject}\r\n"
        "Date: Mon, 04 Mar 2024 08:06:00 +0000\r\n"
        "Message-ID: <grüße.1@mächine.example>\r\n"
        f"{headers}"
        "MIME-Version: 1.0\r\n"
        'Content-Type: text/plain; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        "Der Drucker klemmt auf Seite 2.\r\n"
    ).encode()


def _send(d: Daemon, data: bytes, to: str = "support@acme.test") -> str:
    """One SMTPUTF8 transaction; the reply to DATA, which must be 250."""
    with d.smtp() as s:
        s.ehlo()
        assert s.has_extn("smtputf8")  # we advertise it
        s.mail(SENDER, ["SMTPUTF8"])
        code, text = s.rcpt(to)
        assert code == 250, text
        code, text = s.data(data)
        assert code == 250, (code, text)  # never a 4xx
        return text.decode()


def _parsed(r: Received) -> Message:
    return message_from_string(r.data.decode("utf-8"), policy=default)


def _daemon(tmp_path: Path, sink: Sink) -> Daemon:
    home = tmp_path / "gw"
    secret = load_keyring(home / "var" / "keys.toml").encrypt(
        sink.password, tenant="acme", field="password"
    )
    outbound = f"""
[tenants.outbound]
host = "127.0.0.1"
port = {sink.port}
security = "starttls"
username = "{sink.user}"
password = "{secret}"
ca_file = "{sink.ca_file}"
"""
    return Daemon(home, acme_extra=outbound, extra=FAST)


@pytest.fixture
def utf8_account(tmp_path: Path) -> Iterator[Sink]:
    sink = Sink(tmp_path, smtputf8=True).start()
    yield sink
    sink.stop()


@pytest.fixture
def ascii_account(tmp_path: Path) -> Iterator[Sink]:
    sink = Sink(tmp_path).start()
    yield sink
    sink.stop()


def test_utf8_mail_is_stored_threaded_and_answered_with_smtputf8(
    tmp_path: Path, utf8_account: Sink
) -> None:
    d = _daemon(tmp_path, utf8_account).start()
    try:
        text = _send(d, _mail())
        ref = d.ref(text)
        (row,) = d.query("SELECT from_addr, subject FROM messages")
        assert (row["from_addr"], row["subject"]) == (SENDER, "Drucker klemmt")
        people = {r[0] for r in d.query("SELECT address FROM participants")}
        assert SENDER in people

        (ack,) = utf8_account.wait_for(lambda r: SENDER in r.rcpt_tos)
        a = _parsed(ack)
        (to,) = a["To"].addresses
        assert (to.addr_spec, to.display_name) == (SENDER, "")  # no display name: only a claim
        assert a["In-Reply-To"] == "<grüße.1@mächine.example>" and f"[{ref}]" in a["Subject"]
        # The sink has it before the gateway hears the 250 and records it: wait for that.
        deadline = time.monotonic() + 30
        while d.query("SELECT status FROM outbox WHERE kind = 'ack'")[0][0] != "sent":
            assert time.monotonic() < deadline, "the ack was never recorded as sent"
            time.sleep(0.05)

        # The client answers the acknowledgement: the same ticket.
        again = _mail(
            subject=f"Re: {a['Subject']}",
            headers=f"In-Reply-To: {a['Message-ID']}\r\n",
        ).replace(b"<gr\xc3\xbc\xc3\x9fe.1@", b"<gr\xc3\xbc\xc3\x9fe.2@")
        assert d.ref(_send(d, again, to=str(a["Reply-To"]))) == ref
        assert d.query("SELECT count(*) FROM tickets")[0][0] == 1
        assert d.query("SELECT count(*) FROM messages")[0][0] == 2
    finally:
        d.stop()


def test_without_smtputf8_the_agents_learn_the_client_was_not_answered(
    tmp_path: Path, ascii_account: Sink
) -> None:
    d = _daemon(tmp_path, ascii_account).start()
    try:
        ref = d.ref(_send(d, _mail()))
        (failure,) = ascii_account.wait_for(
            lambda r: r.rcpt_tos == ["alice@acme.test"] and b"<failure." in r.data
        )
        assert "SMTPUTF8" in _parsed(failure).get_content()
        (row,) = d.query("SELECT status, last_error FROM outbox WHERE kind = 'ack'")
        assert row["status"] == "failed" and "SMTPUTF8" in row["last_error"]
        assert "outbox.failed (ack)" in d.cli("tickets", "show", ref).stdout.decode()
        assert not [r for r in ascii_account.received if SENDER in r.rcpt_tos]
    finally:
        d.stop()


def test_a_relay_without_smtputf8_still_reaches_its_ascii_recipients(
    tmp_path: Path, ascii_account: Sink
) -> None:
    """Split per recipient: the ASCII one gets the agent's answer (its headers in ASCII),
    the UTF-8 one is recorded as not answered, and the agents are told who."""
    d = _daemon(tmp_path, ascii_account).start()
    try:
        text = _send(d, _mail(headers="Cc: Bob <bob@client.test>\r\n"))
        ref = d.ref(text)
        (notice,) = ascii_account.wait_for(
            lambda r: r.rcpt_tos == ["alice@acme.test"] and b"<notice." in r.data
        )
        n = _parsed(notice)
        answer = make_mail(
            sender="Alice Agent <alice@acme.test>",
            to=str(n["Reply-To"]),
            subject=f"Re: {n['Subject']}",
            body="The tray was loose; fixed.",
            headers={"In-Reply-To": str(n["Message-ID"])},
        )
        code, reply = d.send(answer, to=str(n["Reply-To"]), sender="alice@acme.test")
        assert code == 250 and d.kept(reply) == 1, reply

        (relayed,) = ascii_account.wait_for(lambda r: b"<reply." in r.data)
        assert relayed.rcpt_tos == ["bob@client.test"]
        assert relayed.data.split(b"\r\n\r\n", 1)[0].isascii()  # sent without SMTPUTF8
        r = _parsed(relayed)
        assert "The tray was loose" in r.get_content()
        assert [a.addr_spec for a in r["To"].addresses] == ["bob@client.test"]
        assert SENDER in str(r["To"])  # still shown who else it was for, as a group name
        # The account has it; the daemon records so a moment later (its send worker's answer).
        d.count_reaching("SELECT count(*) FROM outbox WHERE kind = 'relay' AND status = 'sent'", 1)
        (row,) = d.query("SELECT status, last_error FROM outbox WHERE kind = 'relay'")
        assert row["status"] == "sent" and SENDER in row["last_error"]

        told = ascii_account.wait_for(
            lambda r: r.rcpt_tos == ["alice@acme.test"] and b"<failure." in r.data, count=2
        )  # one for the acknowledgement, one for the relay
        assert all(SENDER.encode() in t.data for t in told)  # 8bit UTF-8 text, as written
        shown = d.cli("tickets", "show", ref).stdout.decode()
        assert "outbox.failed (relay)" in shown and "outbox.failed (ack)" in shown
    finally:
        d.stop()
