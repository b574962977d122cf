"""Issue 17's loop against a running daemon, every mail through a real SMTP account
(tests/smtp_sink.py): a refused command is answered and not relayed, a reply from an
agent's other address is told as not sent, a client's reply reopens, pending by
command and by setting, auto-close with its last mail, and one ticket for the same
mail delivered to two addresses of a tenant. Time is moved with
$GATEWAY_TEST_CLOCK_FILE (seven days cannot be waited)."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
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
SETTINGS = 'pending_on_agent_reply = true\nauto_close_after = "7d"\n'


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Sink, Path]]:
    home = tmp_path_factory.mktemp("loop")
    sink = Sink(home).start()
    keys = load_keyring(home / "gw" / "var" / "keys.toml")
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
    clock = home / "clock"
    clock.write_text("0")
    d = Daemon(
        home / "gw",
        acme_extra=outbound,
        acme_settings=SETTINGS,
        extra=FAST,
        env={"GATEWAY_TEST_CLOCK_FILE": str(clock)},
    ).start()
    try:
        yield d, sink, clock
    finally:
        d.stop()
        sink.stop()


def _text(r: Received) -> str:
    return r.msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def _mails(sink: Sink, to: str, kind: str, count: int = 1, ref: str = "") -> list[Received]:
    """The mails of one kind (its Message-ID's prefix) that reached ``to``, about ``ref``
    if given, once there are ``count`` of them."""

    def pred(r: Received) -> bool:
        m = r.msg
        return (
            to in [a.lower() for a in r.rcpt_tos]
            and m["Message-ID"].startswith(f"<{kind}.")
            and f"[{ref}]" in m["Subject"]
        )

    found = sink.wait_for(pred, count=count)
    assert len(found) >= count, (to, kind, [r.msg["Subject"] for r in sink.received])
    return found


def _open(d: Daemon, sink: Sink) -> tuple[str, str, str]:
    """A client's new ticket: (client address, ref, alice's reply address)."""
    who = f"carol.{uuid.uuid4().hex[:6]}@client.test"
    code, text = d.send(make_mail(sender=who, subject="Printer jammed"), sender=who)
    assert code == 250, text
    ref = d.ref(text)
    (notice,) = _mails(sink, "alice@acme.test", "notice", 1, ref)
    return who, ref, str(notice.msg["Reply-To"])


def _agent(d: Daemon, token: str, body: str, sender: str = "alice@acme.test") -> None:
    mail = make_mail(sender=sender, to=token, subject="Re: Printer jammed", body=body)
    code, text = d.send(mail, to=token, sender=sender)
    assert code == 250, text


def _client(d: Daemon, who: str, ref: str, body: str) -> None:
    mail = make_mail(sender=who, subject=f"Re: [{ref}] Printer jammed", body=body)
    code, text = d.send(mail, sender=who)
    assert code == 250 and d.ref(text) == ref, text


def _status(d: Daemon, ref: str) -> str:
    return str(d.query("SELECT status FROM tickets WHERE ref = ?", ref)[0][0])


def _wait(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(what)


def _relays(d: Daemon, ref: str) -> list[bytes]:
    rows = d.query(
        "SELECT o.body FROM outbox o JOIN tickets t ON t.id = o.ticket_id "
        "WHERE o.kind = 'relay' AND t.ref = ? ORDER BY o.id",
        ref,
    )
    return [bytes(r[0]) for r in rows]


def test_a_refused_command_is_answered_and_nothing_is_relayed(
    loop: tuple[Daemon, Sink, Path],
) -> None:
    d, sink, _ = loop
    who, ref, token = _open(d, sink)
    _agent(d, token, "#priority asap\nYour printer is fixed.")
    _agent(d, token, "#nte this customer is rude\nLet us see.")
    _agent(d, token, "#assign nobody@x.test\nHello.")
    told = [_text(r) for r in _mails(sink, "alice@acme.test", "refused", 3, ref)]
    assert len(told) == 3, told
    assert all(t.startswith(f"Your reply on {ref} was NOT sent to the client") for t in told)
    assert "#priority asap: use one of low, normal, high, urgent" in told[0]
    assert "#nte: unknown command" in told[1] and "#note" in told[1]
    assert "#assign nobody@x.test: not an agent here; use one of alice@acme.test" in told[2]
    # Nothing reached the client, nothing changed, and the replies are internal.
    assert _relays(d, ref) == []
    assert not [r for r in sink.received if who in r.rcpt_tos and b"rude" in r.data]
    row = d.query("SELECT priority, assignee, status FROM tickets WHERE ref = ?", ref)[0]
    assert (row[0], row[1], row[2]) == ("normal", None, "open")
    flags = d.query(
        "SELECT m.flags FROM messages m JOIN tickets t ON t.id = m.ticket_id "
        "WHERE t.ref = ? AND m.sender_role = 'agent'",
        ref,
    )
    assert len(flags) == 3 and all("internal" in str(f[0]) for f in flags)
    audit = d.query("SELECT detail FROM audit_events WHERE action = 'ticket.commands'")
    assert any(json.loads(a[0])["relayed"] is False and "asap" in a[0] for a in audit)
    # The refusal's Reply-To is Alice's token: answering it fixed answers the ticket.
    refusal = _mails(sink, "alice@acme.test", "refused", 3, ref)[-1]
    fixed = str(refusal.msg["Reply-To"])
    _agent(d, fixed, "#priority urgent\nYour printer is fixed.")
    (relay,) = _mails(sink, who, "reply", 1, ref)
    assert "Your printer is fixed." in _text(relay) and "#priority" not in _text(relay)


def test_a_reply_from_another_address_is_told_as_not_sent(
    loop: tuple[Daemon, Sink, Path],
) -> None:
    d, sink, _ = loop
    _, ref, token = _open(d, sink)
    _agent(d, token, "Fixed it from home.", sender="alice.home@private.test")
    (told,) = _mails(sink, "alice@acme.test", "refusal", 1, ref)
    text = _text(told)
    assert told.msg["Subject"].startswith(f"[{ref}] Not sent")
    assert f"Your reply on {ref} was NOT sent to the client" in text
    assert "alice.home@private.test" in text and "aliases" in text
    assert "New message" not in text
    assert _relays(d, ref) == []


def test_pending_reopen_and_auto_close(loop: tuple[Daemon, Sink, Path]) -> None:
    d, sink, clock = loop
    who, ref, token = _open(d, sink)
    # pending_on_agent_reply: a relayed answer waits on the client ...
    _agent(d, token, "Which model is it?")
    assert _status(d, ref) == "pending"
    # ... and the client's answer sets it open again (no "reopened": it was not closed).
    _client(d, who, ref, "An HP 4050.")
    assert _status(d, ref) == "open"
    (answered,) = sink.wait_for(
        lambda r: "alice@acme.test" in r.rcpt_tos and b"An HP 4050." in r.data
    )
    assert _text(answered).startswith(f"New message on {ref}")

    # Closed, then the client writes again: reopened, and the agents are told so.
    _agent(d, token, "#close\nThe toner was empty; fixed.")
    assert _status(d, ref) == "closed"
    # A stranger's mail threaded by References is kept on it but reopens nothing.
    (first_id,) = d.query(
        "SELECT m.message_id FROM messages m JOIN tickets t ON t.id = m.ticket_id "
        "WHERE t.ref = ? ORDER BY m.id LIMIT 1",
        ref,
    )
    stranger = f"x.{uuid.uuid4().hex[:6]}@evil.test"
    plant = make_mail(sender=stranger, subject="Reopen", headers={"References": first_id[0]})
    code, text = d.send(plant, sender=stranger)
    assert code == 250 and d.ref(text) == ref, text
    assert _status(d, ref) == "closed"
    _client(d, who, ref, "It jammed again.")
    assert _status(d, ref) == "open"
    reopened = sink.wait_for(
        lambda r: "alice@acme.test" in r.rcpt_tos and b"It jammed again." in r.data
    )
    assert reopened and _text(reopened[0]).startswith(f"Ticket {ref} reopened")
    audit = d.query(
        "SELECT a.actor, a.detail FROM audit_events a JOIN tickets t ON t.id = a.ticket_id "
        "WHERE a.action = 'ticket.status' AND t.ref = ? ORDER BY a.id",
        ref,
    )
    moves = [(a[0], json.loads(a[1])["from"], json.loads(a[1])["to"]) for a in audit]
    assert moves == [
        ("alice@acme.test", "open", "pending"),
        (who, "pending", "open"),
        ("alice@acme.test", "open", "closed"),
        (who, "closed", "open"),
    ], moves

    # #pending, then seven days of silence: closed, and the client's last mail says a
    # reply reopens it.
    _agent(d, token, "#pending\nPlease send the printer's log.")
    assert _status(d, ref) == "pending"
    listed = d.cli("tickets", "list").stdout.decode()
    assert re.search(rf"{ref}\s+pending", listed), listed
    clock.write_text(str(7 * 86400 + 60))
    _wait(lambda: _status(d, ref) == "closed", f"{ref} not auto-closed\n{d.log_text()}")
    (last,) = _mails(sink, who, "autoclose", 1, ref)
    assert last.msg["Auto-Submitted"] == "auto-generated"
    assert "7 days" in _text(last) and "reply to this mail" in _text(last)
    detail = d.query(
        "SELECT a.actor, a.detail FROM audit_events a JOIN tickets t ON t.id = a.ticket_id "
        "WHERE a.action = 'ticket.status' AND t.ref = ? ORDER BY a.id DESC LIMIT 1",
        ref,
    )[0]
    assert detail[0] == "gateway" and json.loads(detail[1])["by"] == "auto_close_after"
    # Answering the last mail reopens the ticket.
    answer = make_mail(
        sender=who, to=str(last.msg["Reply-To"]), subject=f"Re: {last.msg['Subject']}",
        body="Here is the log.",
    )  # fmt: skip
    assert d.send(answer, to=str(last.msg["Reply-To"]), sender=who)[0] == 250
    assert _status(d, ref) == "open"


def test_the_same_mail_to_and_cc_is_one_ticket(loop: tuple[Daemon, Sink, Path]) -> None:
    d, sink, _ = loop
    who = f"dora.{uuid.uuid4().hex[:6]}@client.test"
    mid = f"<{uuid.uuid4().hex}@client.test>"
    mail = make_mail(
        sender=who, subject="Invoice and printer", message_id=mid,
        headers={"Cc": "billing@acme.test"}, body="Both teams, please.",
    )  # fmt: skip
    # The provider forwards each address on its own: same mail, other Received lines.
    first = b"Received: from mx1.provider.test by in.provider.test; for support\r\n" + mail
    second = b"Received: from mx2.provider.test by in.provider.test; for billing\r\n" + mail
    code, text = d.send(first, to="support@acme.test", sender=who)
    assert code == 250, text
    ref = d.ref(text)
    code, text = d.send(second, to="billing@acme.test", sender=who)
    assert code == 250 and d.kept(text) == 0, text  # a duplicate reads like any 250
    tickets = d.query("SELECT count(*) FROM messages WHERE message_id = ?", mid)
    assert tickets[0][0] == 1
    acks = d.query("SELECT count(*) FROM outbox WHERE kind = 'ack' AND to_addr = ?", who)
    assert acks[0][0] == 1
    (event,) = d.query(
        "SELECT a.detail, t.ref FROM audit_events a JOIN tickets t ON t.id = a.ticket_id "
        "WHERE a.action = 'message.redelivered' AND a.actor = ?",
        who,
    )
    detail = json.loads(event[0])
    assert event[1] == ref and detail["recipient"] == "billing@acme.test"
    assert len(_mails(sink, who, "ack", 1, ref)) == 1
    # A Message-ID reused for another mail is still its own message, flagged.
    other = make_mail(sender=who, subject="Something else", message_id=mid, body="New.")
    code, text = d.send(other, sender=who)
    assert code == 250 and d.kept(text) == 1, text
    flags = d.query("SELECT flags FROM messages WHERE message_id = ? ORDER BY id", mid)
    assert len(flags) == 2 and "message-id-reused" in str(flags[1][0])
