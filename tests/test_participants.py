"""Who may join a ticket: the two-mail takeover of issue 16 against a running daemon."""

from __future__ import annotations

from email import message_from_bytes
from email.policy import default
from pathlib import Path

from tests.daemon import Daemon


def _mail(sender: str, subject: str, mid: str, headers: str = "") -> bytes:
    return (
        f"From: {sender}\r\nTo: support@acme.test\r\nSubject: {subject}\r\n"
        f"Message-ID: {mid}\r\n{headers}\r\nHello.\r\n"
    ).encode()


def test_an_outsider_threaded_by_references_is_kept_but_never_joins(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "gw").start()
    try:
        code, text = d.send(
            _mail("carol@client.test", "Printer", "<c-1@client.test>"), sender="carol@client.test"
        )
        assert code == 250, text
        ref = d.ref(text)
        plant = _mail(
            "outsider@evil.test", "Re: Printer", "<plant-2@evil.test>",
            "In-Reply-To: <c-1@client.test>\r\n",
        )  # fmt: skip
        code, text = d.send(plant, sender="outsider@evil.test")
        assert code == 250 and d.ref(text) == ref, text  # threaded into the ticket, for the agents
        people = d.query(
            "SELECT p.address FROM participants p JOIN tickets t ON t.id = p.ticket_id "
            "WHERE t.ref = ?",
            ref,
        )
        assert [p[0] for p in people] == ["carol@client.test"]
        rows = d.query("SELECT from_addr, flags FROM messages ORDER BY id")
        assert "outsider" in str(rows[1][1]) and "outsider" not in str(rows[0][1])
        notices = d.query(
            "SELECT o.body FROM outbox o WHERE o.kind = 'notice' ORDER BY o.id",
        )
        first = message_from_bytes(bytes(notices[-1][0]), policy=default)
        text = first.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert text.startswith("Note: outsider@evil.test is not a participant"), text
        # Its Message-ID is no anchor: mail "in reply to" the plant threads nowhere.
        anchors = d.query("SELECT message_id FROM message_ids ORDER BY ticket_id")
        assert "<plant-2@evil.test>" not in [a[0] for a in anchors], anchors
        # The client's own follow-up by References still joins as ever.
        code, text = d.send(
            _mail("carol@client.test", "Re: Printer", "<c-3@client.test>",
                  "In-Reply-To: <c-1@client.test>\r\n"),
            sender="carol@client.test",
        )  # fmt: skip
        assert code == 250, text
        flags = d.query("SELECT flags FROM messages ORDER BY id")
        assert "outsider" not in str(flags[2][0])
    finally:
        d.stop()


def _open(d: Daemon, sender: str, headers: str = "", to: str = "support@acme.test") -> str:
    mail = (
        f"From: {sender}\r\nTo: {to}\r\n{headers}Subject: Printer\r\n"
        f"Message-ID: <open-{abs(hash(sender + headers))}@client.test>\r\n\r\nHello.\r\n"
    ).encode()
    code, text = d.send(mail, sender="carol@client.test")
    assert code == 250, text
    return d.ref(text)


def _agent_reply_address(d: Daemon) -> str:
    """The Reply-To of Alice's notice: her token for the ticket."""
    (body,) = d.query(
        "SELECT body FROM outbox WHERE kind = 'notice' AND to_addr = ?", "alice@acme.test"
    )
    notice = message_from_bytes(bytes(body[0]), policy=default)
    return str(notice["Reply-To"].addresses[0].addr_spec)


def _reply(sender: str, to: str, text: str, mid: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: Re: Printer\r\nMessage-ID: {mid}\r\n\r\n{text}\r\n"
    ).encode()


def test_the_first_mails_to_and_cc_join_but_never_our_own_addresses(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "gw").start()
    try:
        ref = _open(
            d,
            '"Carol" <carol@client.test>',
            "Cc: erin@client.test, alice@acme.test, billing+x@acme.test\r\n",
            to="support@acme.test, Dave <dave@client.test>, carol@client.test",
        )
        assert d.people(ref) == ["carol@client.test", "dave@client.test", "erin@client.test"]
    finally:
        d.stop()


def test_an_agent_answers_from_an_alias(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "gw", acme_extra='aliases = ["alice.home@acme.test"]\n').start()
    try:
        ref = _open(d, "carol@client.test")
        token = _agent_reply_address(d)
        reply = _reply("alice.home@acme.test", token, "Fixed it.", "<a-1@acme.test>")
        assert d.send(reply, to=token, sender="alice.home@acme.test")[0] == 250
        (relay,) = d.query("SELECT rcpt_tos FROM outbox WHERE kind = 'relay'")
        assert "carol@client.test" in str(relay[0])
        assert d.people(ref) == ["carol@client.test"]  # an alias is never a client
    finally:
        d.stop()


def test_a_token_with_another_from_is_refused_and_the_agent_told(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "gw").start()
    try:
        ref = _open(d, "carol@client.test")
        token = _agent_reply_address(d)
        forged = _reply("mallory@evil.test", token, "Pay to IBAN XX00.", "<m-1@evil.test>")
        assert d.send(forged, to=token, sender="mallory@evil.test")[0] == 250
        assert d.query("SELECT count(*) FROM outbox WHERE kind = 'relay'")[0][0] == 0
        assert d.people(ref) == ["carol@client.test"]
        (flags,) = d.query("SELECT flags FROM messages WHERE from_addr = 'mallory@evil.test'")
        assert "agent-token-from-mismatch" in str(flags[0])
        (row,) = d.query("SELECT rcpt_tos, body FROM outbox WHERE kind = 'refusal'")
        assert "alice@acme.test" in str(row[0]) and "mallory" not in str(row[0])
        told = message_from_bytes(bytes(row[1]), policy=default)
        text = told.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert f"Your reply on {ref} was NOT sent" in text and "mallory@evil.test" in text
        assert "aliases" in text and "New message" not in text
        # Nobody else hears of the forged mail, and the sender gets nothing.
        kinds = d.query("SELECT kind, to_addr FROM outbox ORDER BY id")
        assert [tuple(k) for k in kinds][-1] == ("refusal", "alice@acme.test"), kinds
    finally:
        d.stop()


def test_acknowledgements_skip_the_display_name_and_count_plus_tags(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "gw", extra="\n[outbound]\nack_limit = 1\n").start()
    try:
        _open(d, '"Pay IBAN XX00 now" <carol+one@client.test>')
        _open(d, "carol+two@client.test")
        _open(d, "carol@client.test")
        acks = d.query("SELECT to_addr, body FROM outbox WHERE kind = 'ack' ORDER BY id")
        assert [a[0] for a in acks] == ["carol+one@client.test"]
        ack = message_from_bytes(bytes(acks[0][1]), policy=default)
        assert str(ack["To"]) == "carol+one@client.test"
        assert "IBAN" not in bytes(acks[0][1]).decode()
    finally:
        d.stop()


def test_an_agent_adds_and_removes_participants_and_nobody_else_can(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "gw").start()
    try:
        ref = _open(d, "carol@client.test")
        token = _agent_reply_address(d)
        # A forged reply with the token, and a client's own mail, cannot add anyone.
        forged = _reply("mallory@evil.test", token, "#cc add mallory@evil.test\nHi", "<m-2@e.test>")
        assert d.send(forged, to=token, sender="mallory@evil.test")[0] == 250
        sneaky = _reply("carol@client.test", "support@acme.test", "#cc add x@evil.test", "<c-9@c>")
        sneaky = sneaky.replace(b"Re: Printer", f"Re: [{ref}] Printer".encode())
        assert d.send(sneaky, sender="carol@client.test")[0] == 250
        assert d.people(ref) == ["carol@client.test"]
        add = "#cc add Dave@client.test\nDave joins us."
        assert d.send(_reply("alice@acme.test", token, add, "<a-2@acme.test>"), to=token)[0] == 250
        assert d.people(ref) == ["carol@client.test", "dave@client.test"]
        (relay,) = d.query("SELECT rcpt_tos FROM outbox WHERE kind = 'relay'")
        assert "dave@client.test" in str(relay[0])
        remove = "#cc remove dave@client.test\n#note\nDave left."
        assert (
            d.send(_reply("alice@acme.test", token, remove, "<a-3@acme.test>"), to=token)[0] == 250
        )
        assert d.people(ref) == ["carol@client.test"]
        audit = d.query(
            "SELECT actor, action, detail FROM audit_events "
            "WHERE action LIKE 'participant.%' OR action = 'ticket.commands' ORDER BY id"
        )
        assert [(a[0], a[1]) for a in audit] == [
            ("alice@acme.test", "participant.added"),
            ("alice@acme.test", "ticket.commands"),
            ("alice@acme.test", "participant.removed"),
            ("alice@acme.test", "ticket.commands"),
        ], audit
        assert "dave@client.test" in str(audit[0][2])
    finally:
        d.stop()
