"""The whole email-first conversation through a real SMTP account (issue 5's proof).

The tenant's account is a real aiosmtpd server (tests/smtp_sink.py) with
STARTTLS from a private CA and AUTH; the gateway logs in with a password
that gateway.toml holds only encrypted. Every step is real SMTP both ways.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from email.message import Message
from email.utils import getaddresses
from pathlib import Path

import pytest

from routing.secrets import load_keyring
from tests.clamd_harness import Clamd
from tests.daemon import Daemon
from tests.mail import make_mail
from tests.smtp_sink import Sink

FAST = """
[outbound]
retry_base = 0.2
retry_max = 1
poll_interval = 0.1
timeout = 10
"""


def _addr(header: str | None) -> str:
    return getaddresses([header or ""])[0][1].lower()


def _to(addr: str):  # type: ignore[no-untyped-def]
    return lambda r: addr in [a.lower() for a in r.rcpt_tos]


def _kind(prefix: str):  # type: ignore[no-untyped-def]
    return lambda r: r.msg["Message-ID"].startswith(f"<{prefix}.")


@pytest.fixture
def account(tmp_path: Path) -> Iterator[Sink]:
    sink = Sink(tmp_path).start()
    yield sink
    sink.stop()


def _daemon(tmp_path: Path, sink: Sink, extra: str = FAST, scanner: str = "127.0.0.1:9") -> Daemon:
    home = tmp_path / "gw"
    keys = load_keyring(home / "var" / "keys.toml")
    secret = keys.encrypt(sink.password, tenant="acme", field="password")
    outbound = f"""
[tenants.outbound]
host = "127.0.0.1"
port = {sink.port}
security = "starttls"
username = "{sink.user}"
password = "{secret}"
ca_file = "{sink.ca_file}"
"""
    return Daemon(home, acme_extra=outbound, extra=extra, scanner=scanner)


def _client_mail(who: str, subject: str = "Printer jammed") -> bytes:
    return make_mail(sender=f"Carol Client <{who}>", subject=subject, body="It jams on page 2.")


def _reply(
    to_mail: Message, sender: str, body: str, *, to: str | None = None, subject: str | None = None
) -> bytes:
    return make_mail(
        sender=sender,
        to=to or str(to_mail["Reply-To"]),
        subject=subject or f"Re: {to_mail['Subject']}",
        body=body,
        headers={
            "In-Reply-To": str(to_mail["Message-ID"]),
            "References": str(to_mail["Message-ID"]),
        },
    )


def test_the_whole_conversation(tmp_path: Path, account: Sink) -> None:
    d = _daemon(tmp_path, account).start()
    try:
        who = f"carol.{uuid.uuid4().hex[:6]}@client.test"
        first = _client_mail(who)
        code, text = d.send(first, sender=who)
        assert code == 250, text
        ref = d.ref(text)
        first_id = re.search(rb"Message-ID: (<[^>]+>)", first).group(1).decode()  # type: ignore[union-attr]

        (ack,) = account.wait_for(lambda r: _to(who)(r) and _kind("ack")(r))
        assert ack.mail_from in ("", "<>") and f"[{ref}]" in ack.msg["Subject"]  # null sender
        assert ack.msg["Auto-Submitted"] == "auto-replied" and ack.msg["In-Reply-To"] == first_id
        (notice,) = account.wait_for(lambda r: _to("alice@acme.test")(r) and _kind("notice")(r))
        n = notice.msg
        assert n["Auto-Submitted"] == "auto-generated" and n["X-Loop"] == "gw.test"
        assert (
            _addr(n["Reply-To"]).startswith("support+t") and "It jams on page 2." in n.get_content()
        )
        assert n["Thread-Topic"] and n["Thread-Index"]
        assert account.logins >= 2 or not account.require_auth  # AUTH over STARTTLS

        # The agent presses Reply in their own mail client, quoting the notice.
        quoted = "\n".join("> " + line for line in n.get_content().splitlines())
        answer = _reply(
            n,
            "Alice Agent <alice@acme.test>",
            "Hello Carol, the tray was loose; fixed.\n\n"
            f"On Mon, 4 Mar 2024, Helpdesk wrote:\n{quoted}\n",
        )
        code, text = d.send(answer, to=_addr(n["Reply-To"]), sender="alice@acme.test")
        assert code == 250 and d.ref(text) == ref, text
        (relay,) = account.wait_for(lambda r: _to(who)(r) and _kind("reply")(r))
        r = relay.msg
        assert _addr(r["From"]) == "support@acme.test" and relay.mail_from == "support@acme.test"
        assert r["In-Reply-To"] == first_id and first_id in r["References"]
        assert f"[{ref}]" in r["Subject"] and r["Auto-Submitted"] is None
        body = r.get_content()
        assert "the tray was loose" in body and "It jams on page 2" not in body, body

        # The client answers the relay: same ticket, and the agent hears of it.
        again = _reply(r, f"Carol Client <{who}>", "Thanks, works now!")
        code, text = d.send(again, to=_addr(r["Reply-To"]), sender=who)
        assert code == 250 and d.ref(text) == ref, text
        notices = account.wait_for(
            lambda x: _to("alice@acme.test")(x) and _kind("notice")(x), count=2
        )
        assert len(notices) == 2 and "works now" in notices[1].msg.get_content()
        assert d.query("SELECT count(*) FROM tickets")[0][0] == 1
        roles = [row[0] for row in d.query("SELECT sender_role FROM messages ORDER BY id")]
        assert roles == ["client", "agent", "client"]
        assert len(account.wait_for(_to(who))) == 2  # ack + relay, nothing else to the client
    finally:
        d.stop()


def test_agent_commands_and_notes(tmp_path: Path, account: Sink) -> None:
    d = _daemon(tmp_path, account).start()
    try:
        who = f"dave.{uuid.uuid4().hex[:6]}@client.test"
        _, text = d.send(_client_mail(who), sender=who)
        ref = d.ref(text)
        (notice,) = account.wait_for(lambda r: _to("alice@acme.test")(r) and _kind("notice")(r))
        note = _reply(notice.msg, "alice@acme.test", "#note\n#priority urgent\nCustomer is VIP.")
        assert d.send(note, to=_addr(notice.msg["Reply-To"]), sender="alice@acme.test")[0] == 250
        close = _reply(
            notice.msg, "alice@acme.test", "#close\n#assign alice@acme.test\nDone, closing."
        )
        assert d.send(close, to=_addr(notice.msg["Reply-To"]), sender="alice@acme.test")[0] == 250
        relays = account.wait_for(lambda r: _to(who)(r) and _kind("reply")(r))
        assert len(relays) == 1
        body = relays[0].msg.get_content()
        assert "Done, closing." in body and "#close" not in body and "VIP" not in body
        (t,) = d.query("SELECT status, priority, assignee FROM tickets WHERE ref = ?", ref)
        assert tuple(t) == ("closed", "urgent", "alice@acme.test")
    finally:
        d.stop()


def test_forged_agent_mail_is_never_relayed(tmp_path: Path, account: Sink) -> None:
    d = _daemon(tmp_path, account).start()
    try:
        who = f"erin.{uuid.uuid4().hex[:6]}@client.test"
        _, text = d.send(_client_mail(who), sender=who)
        ref = d.ref(text)
        (notice,) = account.wait_for(lambda r: _to("alice@acme.test")(r) and _kind("notice")(r))
        # Someone else uses the agent's reply address (a leaked notice): kept, not relayed.
        forged = _reply(notice.msg, "mallory@evil.test", "Please pay to IBAN XX00.")
        assert (
            d.send(forged, to=_addr(notice.msg["Reply-To"]), sender="mallory@evil.test")[0] == 250
        )
        # The agent's From without any token, with the tag: not an agent reply either.
        no_token = make_mail(
            sender="alice@acme.test", subject=f"Re: [{ref}] Printer jammed", body="Pay now."
        )
        assert d.send(no_token, sender="alice@acme.test")[0] == 250
        account.wait_for(lambda r: False, timeout=1.5)  # give the worker time to send anything
        assert not [r for r in account.received if _kind("reply")(r)]
        flags = d.query("SELECT flags FROM messages WHERE from_addr = 'mallory@evil.test'")
        assert "agent-token-from-mismatch" in flags[0][0]
        assert d.query("SELECT count(*) FROM outbox WHERE kind = 'relay'")[0][0] == 0
    finally:
        d.stop()


def test_account_refuses_then_recovers_delivered_once(tmp_path: Path, account: Sink) -> None:
    account.data_script = ["451 4.3.0 try later", "451 4.3.0 try later"]
    d = _daemon(tmp_path, account).start()
    try:
        who = f"finn.{uuid.uuid4().hex[:6]}@client.test"
        assert d.send(_client_mail(who), sender=who)[0] == 250
        # The acknowledgement and the agent's notice go out side by side: the two
        # refusals hit whichever DATAs come first, and each refused mail comes again.
        assert account.wait_for(lambda r: _to(who)(r) and _kind("ack")(r))
        deadline = time.monotonic() + 60
        while d.query("SELECT count(*) FROM outbox WHERE status != 'sent'")[0][0]:
            assert time.monotonic() < deadline, "the refused mail never went out"
            time.sleep(0.1)
        account.wait_for(lambda r: False, timeout=1.5)
        rows = d.query("SELECT attempts FROM outbox")
        assert sum(r["attempts"] for r in rows) == len(rows) + 2  # each refusal tried again
        ids = [r.msg["Message-ID"] for r in account.received]
        assert len(ids) == len(set(ids)) == len(rows)  # and each delivered once
    finally:
        d.stop()


def test_connection_dropped_after_data_resends_the_same_mail(tmp_path: Path, account: Sink) -> None:
    account.data_script = ["drop"]
    d = _daemon(tmp_path, account).start()
    try:
        who = f"gina.{uuid.uuid4().hex[:6]}@client.test"
        assert d.send(_client_mail(who), sender=who)[0] == 250
        # The acknowledgement and the agent's notice go out side by side: the script's
        # drop hits whichever DATA comes first, and that one must come again.
        (dropped,) = account.wait_for(lambda r: True)[:1]
        mid = dropped.msg["Message-ID"]
        # Bounded generously: under a loaded machine the retry has come after 30 s.
        copies = account.wait_for(lambda r: r.msg["Message-ID"] == mid, count=2, timeout=120)
        assert len(copies) == 2  # one lost reply = at most one duplicate
        assert copies[0].msg["Message-ID"] == copies[1].msg["Message-ID"]
        assert copies[0].data == copies[1].data
        assert account.wait_for(lambda r: _to(who)(r) and _kind("ack")(r))  # acknowledged
    finally:
        d.stop()


def test_permanent_refusal_gives_up_and_tells_the_agents(tmp_path: Path, account: Sink) -> None:
    who = f"hugo.{uuid.uuid4().hex[:6]}@client.test"
    account.refuse[who] = "550 5.1.1 no such user"
    d = _daemon(tmp_path, account).start()
    try:
        assert d.send(_client_mail(who), sender=who)[0] == 250
        (failure,) = account.wait_for(lambda r: _to("alice@acme.test")(r) and _kind("failure")(r))
        assert who in failure.msg.get_content() and "550" in failure.msg.get_content()
        # Named by the ticket, as the bounce's notice is (one helper builds both).
        ref = d.query("SELECT ref FROM tickets")[0][0]
        assert failure.msg["Subject"] == f"[{ref}] Undelivered: Printer jammed"
        (row,) = d.query("SELECT status, attempts FROM outbox WHERE kind = 'ack'")
        assert (row["status"], row["attempts"]) == ("failed", 1)
        audit = d.query("SELECT detail FROM audit_events WHERE action = 'outbox.failed'")
        assert len(audit) == 1 and who in audit[0][0]
    finally:
        d.stop()


def test_autoresponder_loop_stops_at_the_rate_limit(tmp_path: Path, account: Sink) -> None:
    d = _daemon(tmp_path, account, extra=FAST.replace("[outbound]", "[outbound]\nack_limit = 3"))
    try:
        d.start()
        bot = f"bot.{uuid.uuid4().hex[:6]}@client.test"
        # An autoresponder that strips every header we could recognise it by, and
        # the thread: each of its mails opens a ticket; acknowledgements stop at 3.
        for i in range(6):
            code, _ = d.send(_client_mail(bot, subject=f"Out of office {i}"), sender=bot)
            assert code == 250
        assert d.query("SELECT count(*) FROM outbox WHERE kind = 'ack'")[0][0] == 3
        assert len(account.wait_for(lambda r: _to(bot)(r), count=3)) == 3
    finally:
        d.stop()


def test_tenant_without_a_password_in_clear(tmp_path: Path) -> None:
    d = Daemon(
        tmp_path / "gw",
        acme_extra='[tenants.outbound]\nhost = "127.0.0.1"\npassword = "hunter2"\n',
    )
    out = d.cli("config", "check")
    assert out.returncode == 1  # `config check`: 1 per the issue; other commands say 78
    err = out.stderr.decode()
    assert "tenants[0].outbound.password" in err and "hunter2" not in err
    assert re.search(r"gateway\.toml:\d+:", err)


def _dsn(rcpt: str, about: Message) -> bytes:
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.client.test>\r\n"
        "To: support@acme.test\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@mx.client.test>\r\nAuto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nThe mail could not be delivered.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.client.test\r\n\r\n"
        f"Final-Recipient: rfc822; {rcpt}\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        "--b\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: {about['Message-ID']}\r\nSubject: {about['Subject']}\r\n\r\n"
        "--b--\r\n"
    ).encode()


def test_bounce_of_our_mail_stops_mail_to_that_address(
    tmp_path: Path, account: Sink, clamd: Clamd
) -> None:
    d = _daemon(tmp_path, account, scanner=clamd.address).start()  # a report's parts are scanned
    try:
        who = f"ivy.{uuid.uuid4().hex[:6]}@client.test"
        assert d.send(_client_mail(who), sender=who)[0] == 250
        (ack,) = account.wait_for(lambda r: _to(who)(r) and _kind("ack")(r))
        (notice,) = account.wait_for(lambda r: _to("alice@acme.test")(r) and _kind("notice")(r))
        # A forged DSN about a mail we never sent changes nothing.
        fake = _dsn(who, make_mail_obj(f"<{uuid.uuid4().hex}@elsewhere.test>"))
        assert d.send(fake, sender="")[0] == 250
        assert d.query("SELECT count(*) FROM bouncing")[0][0] == 0
        assert d.send(_dsn(who, ack.msg), sender="")[0] == 250
        (b,) = d.query("SELECT address, status FROM bouncing")
        assert tuple(b) == (who, "5.1.1")
        (told,) = account.wait_for(lambda r: _to("alice@acme.test")(r) and _kind("failure")(r))
        assert who in told.msg.get_content()
        ref = d.query("SELECT ref FROM tickets")[0][0]
        assert told.msg["Subject"] == f"[{ref}] Undelivered: Printer jammed"
        # The agent answers: nothing goes to the bouncing address.
        answer = _reply(notice.msg, "alice@acme.test", "Any news?")
        assert d.send(answer, to=_addr(notice.msg["Reply-To"]), sender="alice@acme.test")[0] == 250
        assert d.query("SELECT count(*) FROM outbox WHERE kind = 'relay'")[0][0] == 0
        # The client writes again: the mark is gone.
        assert d.send(_reply(ack.msg, who, "I am back."), sender=who)[0] == 250
        assert d.query("SELECT count(*) FROM bouncing")[0][0] == 0
    finally:
        d.stop()


def make_mail_obj(message_id: str) -> Message:
    msg = Message()
    msg["Message-ID"] = message_id
    msg["Subject"] = "something"
    return msg
