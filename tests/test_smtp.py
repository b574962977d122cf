"""Real SMTP against the running daemon; assertions on the store."""

from __future__ import annotations

import re
import socket
import uuid
from email import message_from_bytes
from email.policy import default

from tests.daemon import Daemon
from tests.mail import make_mail


def _sender() -> str:
    return f"client-{uuid.uuid4().hex[:8]}@client.test"


def _ack(d: Daemon, ref: str):  # type: ignore[no-untyped-def]
    rows = d.query(
        "SELECT o.* FROM outbox o JOIN tickets t ON t.id = o.ticket_id "
        "WHERE t.ref = ? AND o.kind = 'ack'",
        ref,
    )
    assert len(rows) == 1, f"expected one ack for {ref}, got {len(rows)}"
    return message_from_bytes(rows[0]["body"], policy=default), rows[0]


def test_new_mail_makes_a_ticket_with_everything_committed(daemon: Daemon) -> None:
    who = _sender()
    data = make_mail(sender=f"Carol <{who}>", subject="Printer on fire")
    code, text = daemon.send(data, sender=who)
    assert code == 250 and text.startswith("2.0.0"), text
    ref = daemon.ref(text)
    t = daemon.query("SELECT * FROM tickets WHERE ref = ?", ref)[0]
    assert (t["tenant"], t["subject"], t["status"]) == ("acme", "Printer on fire", "open")
    people = daemon.query("SELECT address, role FROM participants WHERE ticket_id = ?", t["id"])
    assert [(p["address"], p["role"]) for p in people] == [(who, "client")]
    audit = daemon.query("SELECT action FROM audit_events WHERE ticket_id = ?", t["id"])
    assert [a["action"] for a in audit] == ["ticket.created"]
    ack, row = _ack(daemon, ref)
    # queued; this test tenant has no outbound account, so it waits (the worker may hold it)
    assert row["mail_from"] == "" and row["status"] in ("pending", "sending")
    assert ack["Auto-Submitted"] == "auto-replied"
    assert ack["Subject"].startswith(f"[{ref}]")
    assert ack["To"].addresses[0].addr_spec == who
    assert re.fullmatch(r"support\+t\d+-[0-9a-f]{16}@acme\.test", ack["Reply-To"])
    raw = daemon.query("SELECT raw_sha256 FROM messages WHERE ticket_id = ?", t["id"])[0]
    assert daemon.blob(raw[0]) == data


def test_replies_thread_by_in_reply_to_ack_references_token_and_tag(daemon: Daemon) -> None:
    who = _sender()
    first = make_mail(sender=who, subject="VPN drops")
    ref = daemon.ref(daemon.send(first, sender=who)[1])
    first_id = message_from_bytes(first)["Message-ID"]
    ack, _ = _ack(daemon, ref)

    by_irt = make_mail(sender=who, subject="Re: VPN drops", headers={"In-Reply-To": first_id})
    by_ack = make_mail(sender=who, subject="Re: x", headers={"References": ack["Message-ID"]})
    by_tag = make_mail(sender=who, subject=f"Re: [{ref}] VPN drops")
    for data in (by_irt, by_ack, by_tag):
        code, text = daemon.send(data, sender=who)
        assert code == 250 and daemon.ref(text) == ref, text
    code, text = daemon.send(make_mail(sender=who, subject="no hints"), to=ack["Reply-To"])
    assert code == 250 and daemon.ref(text) == ref
    rows = daemon.query(
        "SELECT m.thread_by FROM messages m JOIN tickets t ON t.id = m.ticket_id "
        "WHERE t.ref = ? ORDER BY m.id",
        ref,
    )
    assert [r[0] for r in rows] == ["new", "references", "references", "tag", "token"]


def test_subject_tag_from_a_stranger_opens_a_new_ticket(daemon: Daemon) -> None:
    who = _sender()
    ref = daemon.ref(daemon.send(make_mail(sender=who), sender=who)[1])
    stranger = _sender()
    code, text = daemon.send(make_mail(sender=stranger, subject=f"[{ref}] hi"), sender=stranger)
    assert code == 250 and daemon.ref(text) != ref


def test_forged_token_and_other_tenants_hints_stay_out(daemon: Daemon) -> None:
    who = _sender()
    data = make_mail(sender=who, to="help@globex.test")
    gref = daemon.ref(daemon.send(data, to="help@globex.test", sender=who)[1])
    assert gref.startswith("GLOBEX-")
    gack, _ = _ack(daemon, gref)
    gid = message_from_bytes(data)["Message-ID"]
    token = gack["Reply-To"].split("+", 1)[1].split("@")[0]
    # globex's valid token, In-Reply-To and tag, all sent to acme
    attempts = [
        (make_mail(sender=who, subject="x"), f"support+{token}@acme.test"),
        (make_mail(sender=who, headers={"In-Reply-To": gid}), "support@acme.test"),
        (make_mail(sender=who, subject=f"Re: [{gref}]"), "support@acme.test"),
        (make_mail(sender=who), "support+t1-0123456789abcdef@acme.test"),
    ]
    for mail, rcpt in attempts:
        code, text = daemon.send(mail, to=rcpt, sender=who)
        assert code == 250 and daemon.ref(text).startswith("ACME-"), text
    t = daemon.query("SELECT id FROM tickets WHERE ref = ?", gref)[0]
    assert daemon.query("SELECT count(*) FROM messages WHERE ticket_id = ?", t[0])[0][0] == 1


def test_same_message_twice_is_one_row(daemon: Daemon) -> None:
    who = _sender()
    data = make_mail(sender=who)
    first = daemon.send(data, sender=who)
    again = daemon.send(data, sender=who)
    assert first[0] == again[0] == 250
    assert daemon.kept(first[1]) == 1 and daemon.kept(again[1]) == 0  # the duplicate
    mid = message_from_bytes(data)["Message-ID"]
    assert daemon.query("SELECT count(*) FROM messages WHERE message_id = ?", mid)[0][0] == 1


def test_reused_message_id_with_other_bytes_is_kept_and_flagged(daemon: Daemon) -> None:
    who = _sender()
    mid = f"<{uuid.uuid4().hex}@client.test>"
    daemon.send(make_mail(sender=who, message_id=mid, body="one"), sender=who)
    code, _ = daemon.send(make_mail(sender=who, message_id=mid, body="two"), sender=who)
    assert code == 250
    rows = daemon.query("SELECT flags, text FROM messages WHERE message_id = ? ORDER BY id", mid)
    assert len(rows) == 2
    assert "message-id-reused" in rows[1]["flags"] and "two" in rows[1]["text"]


def test_no_message_id_is_deduplicated_by_content(daemon: Daemon) -> None:
    who = _sender()
    data = make_mail(sender=who, message_id=None, body=f"unique {uuid.uuid4()}")
    assert daemon.send(data, sender=who)[0] == 250
    assert daemon.kept(daemon.send(data, sender=who)[1]) == 0
    assert daemon.query("SELECT count(*) FROM messages WHERE from_addr = ?", who)[0][0] == 1


def test_unknown_recipient_is_refused_at_rcpt(daemon: Daemon) -> None:
    with daemon.smtp() as s:
        s.ehlo()
        s.mail("a@b.test")
        code, msg = s.rcpt("nobody@acme.test")
        assert (code, msg.split()[0]) == (550, b"5.1.1")
        code, msg = s.rcpt("support@elsewhere.test")
        assert code == 550


def test_one_message_to_two_tenants_makes_a_ticket_in_each(daemon: Daemon) -> None:
    who = _sender()
    data = make_mail(sender=who, to="support@acme.test, help@globex.test")
    code, _text = daemon.send(data, to=["support@acme.test", "help@globex.test"], sender=who)
    assert code == 250
    rows = daemon.query(
        "SELECT t.tenant FROM messages m JOIN tickets t ON t.id = m.ticket_id "
        "WHERE m.from_addr = ? ORDER BY t.tenant",
        who,
    )
    assert [r[0] for r in rows] == ["acme", "globex"]


def test_plus_address_and_second_tenant_address_route_to_the_tenant(daemon: Daemon) -> None:
    who = _sender()
    for rcpt in ("Support+anything@ACME.test", "billing@acme.test"):
        code, text = daemon.send(make_mail(sender=who), to=rcpt, sender=who)
        assert code == 250 and daemon.ref(text).startswith("ACME-")


def test_auto_replies_and_bounces_open_no_ticket_and_get_no_ack(daemon: Daemon) -> None:
    who = _sender()
    first = make_mail(sender=who)
    ref = daemon.ref(daemon.send(first, sender=who)[1])
    first_id = message_from_bytes(first)["Message-ID"]
    before = daemon.query("SELECT count(*) FROM tickets")[0][0]
    robots = [
        make_mail(sender=who, headers={"Auto-Submitted": "auto-replied", "In-Reply-To": first_id}),
        make_mail(sender=who, headers={"X-Auto-Response-Suppress": "All"}),
        make_mail(sender=who, headers={"Precedence": "bulk"}),
        make_mail(sender=who, headers={"List-Id": "<news.client.test>"}),
    ]
    for data in robots:
        assert daemon.send(data, sender=who)[0] == 250
    assert daemon.send(make_mail(sender=who), sender="")[0] == 250  # null return path
    assert daemon.query("SELECT count(*) FROM tickets")[0][0] == before
    rows = daemon.query("SELECT sender_role, ticket_id FROM messages WHERE from_addr = ?", who)
    assert sorted(r[0] for r in rows) == ["client"] + ["machine"] * 5
    t = daemon.query("SELECT id FROM tickets WHERE ref = ?", ref)[0][0]
    assert sum(1 for r in rows if r[1] == t) == 2  # the first mail and the threaded auto-reply
    assert len(daemon.query("SELECT id FROM outbox WHERE ticket_id = ? AND kind = 'ack'", t)) == 1


def test_too_many_received_headers_is_a_loop(daemon: Daemon) -> None:
    hops = {f"Received-{i}": "x" for i in range(0)}
    data = make_mail(headers=hops)
    data = b"".join(b"Received: from hop%d by mx.test\r\n" % i for i in range(60)) + data
    code, text = daemon.send(data)
    assert (code, text.split()[0]) == (554, "5.4.0")


def test_too_big_is_552_5_3_4(tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = Daemon(tmp_path / "gw", max_size=50_000).start()
    try:
        code, text = d.send(make_mail(body="x" * 60 + "\n" * 1 + ("y" * 70 + "\n") * 1000))
        assert (code, text.split()[0]) == (552, "5.3.4")
        with d.smtp() as s:
            s.ehlo()
            code, msg = s.docmd("MAIL FROM:<a@b.test> SIZE=999999")
            assert (code, msg.split()[0]) == (552, b"5.3.4")
    finally:
        d.stop()


def test_every_reply_has_an_enhanced_status_code(daemon: Daemon) -> None:
    with daemon.smtp() as s:
        code, msg = s.ehlo()
        assert b"ENHANCEDSTATUSCODES" in msg
        for cmd, want in [
            ("NOOP", "250 2.0.0"),
            ("RSET", "250 2.0.0"),
            ("RCPT TO:<support@acme.test>", "503 5.5.1"),
            ("MAIL FROM:<a@b.test>", "250 2.1.0"),
            ("MAIL FROM:<a@b.test>", "503 5.5.1"),
            ("BOGUS", "500 5.5.2"),
            ("RCPT TO:<support@acme.test>", "250 2.1.5"),
        ]:
            code, msg = s.docmd(cmd)
            assert f"{code} {msg.decode().split()[0]}" == want, (cmd, code, msg)


def _raw_session(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.recv(1024)
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out


def test_smtp_smuggling_stays_one_message(daemon: Daemon) -> None:
    who = _sender()
    hidden = _sender()
    payload = (
        b"EHLO client.test\r\nMAIL FROM:<" + who.encode() + b">\r\n"
        b"RCPT TO:<support@acme.test>\r\nDATA\r\n"
        b"From: "
        + who.encode()
        + b"\r\nSubject: outer\r\nMessage-ID: <"
        + uuid.uuid4().hex.encode()
        + b"@c.test>\r\n\r\nouter body\r\n"
        b"\n.\r\nMAIL FROM:<" + hidden.encode() + b">\r\nRCPT TO:<support@acme.test>\r\n"
        b"DATA\r\nFrom: " + hidden.encode() + b"\r\nSubject: smuggled\r\n\r\nhidden\r\n"
        b".\r\nQUIT\r\n"
    )
    out = _raw_session(daemon.port, payload)
    assert out.count(b"250 2.0.0 OK queued as ") == 1, out
    assert daemon.query("SELECT count(*) FROM messages WHERE from_addr = ?", hidden)[0][0] == 0
    row = daemon.query("SELECT text FROM messages WHERE from_addr = ?", who)[0]
    assert "smuggled" in row[0]


def test_hostile_structures_get_proper_codes(daemon: Daemon) -> None:
    huge_to = "To: " + ",\r\n ".join(f"u{i}@x.test" for i in range(40_000)) + "\r\n"
    code, text = daemon.send(huge_to.encode() + make_mail())
    assert (code, text.split()[0]) == (552, "5.3.4")

    one_line = "To: " + ", ".join(f"u{i}@x.test" for i in range(20_000)) + "\r\n"
    code, text = daemon.send(one_line.encode() + make_mail())
    assert (code, text.split()[0]) == (500, "5.5.2"), "a line over 64 KiB is refused whole"

    depth = 2000
    parts = [b"From: a@b.test\r\nSubject: deep\r\nMIME-Version: 1.0\r\n"]
    for i in range(depth):
        parts.append(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i))
    parts.append(b"Content-Type: text/plain\r\n\r\nbottom\r\n")
    code, text = daemon.send(b"".join(parts))
    assert (code, text.split()[0]) == (554, "5.6.0")


def test_nul_bytes_and_bad_charsets_are_stored_clean(daemon: Daemon) -> None:
    who = _sender()
    data = (
        f"From: {who}\r\nTo: support@acme.test\r\nSubject: nul\x00here\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@c.test>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=x-unknown-charset\r\n\r\n"
        "caf\xe9 with a NUL \x00 byte\r\n"
    ).encode("latin-1")
    code, _ = daemon.send(data, sender=who)
    assert code == 250
    row = daemon.query("SELECT subject, text, defects FROM messages WHERE from_addr = ?", who)[0]
    assert "\x00" not in row["subject"] and "\x00" not in row["text"]
    assert "with a NUL" in row["text"]
    assert row["defects"] != "[]"


def test_ambiguous_from_does_not_break_intake(daemon: Daemon) -> None:
    for frm in ("alice@acme.test<mallory@evil.test>", '"support@acme.test"@evil.test', "<>"):
        code, _ = daemon.send(make_mail(sender=frm), sender="mallory@evil.test")
        assert code == 250, frm


def test_no_acknowledgement_to_daemons_and_noreply_senders(daemon: Daemon) -> None:
    for local in ("postmaster", "MAILER-DAEMON", "no-reply"):
        who = f"{local}@{uuid.uuid4().hex[:8]}.test"
        code, text = daemon.send(make_mail(sender=who), sender=who)
        assert code == 250, text
        ref = daemon.ref(text)
        acks = daemon.query(
            "SELECT o.id FROM outbox o JOIN tickets t ON t.id = o.ticket_id "
            "WHERE t.ref = ? AND o.kind = 'ack'",
            ref,
        )
        assert acks == [], local
        notices = daemon.query(
            "SELECT o.id FROM outbox o JOIN tickets t ON t.id = o.ticket_id "
            "WHERE t.ref = ? AND o.kind = 'notice'",
            ref,
        )
        assert len(notices) == 1  # the agents still hear of it


def test_fast_address_path_agrees_with_aiosmtpd() -> None:
    """The shortcut for plain <local@domain> must answer exactly as aiosmtpd's parser."""
    from aiosmtpd.smtp import SMTP

    from gateway.intake.smtp import GatewaySMTP

    class Handler:
        pass

    ours, theirs = GatewaySMTP(Handler()), SMTP(Handler())
    for arg in [
        "<a@b.c>",
        " <x.y+z@ex-ample.com> SIZE=123",
        "<a@b.c>  BODY=8BITMIME SMTPUTF8 ",
        "<A.B@Example.COM>\tSIZE=1",
        '<"q q"@b.c>',
        "<>",
        "a@b.c",
        "<@relay:a@b.c>",
        "<a@b.c",
        "<ä@b.c>",
        "<" + "x" * 70 + "@b.c>",
    ]:
        assert ours._getaddr(arg) == theirs._getaddr(arg), arg


def test_a_listeners_later_sessions_are_set_up_as_aiosmtpd_would() -> None:
    """The factory builds the first session with aiosmtpd's __init__ and copies what it
    set into the later ones: they must hold the same settings and their own method
    tables. An aiosmtpd that sets something new in __init__ fails here."""
    import asyncio

    from aiosmtpd.smtp import SMTP

    from gateway.intake.lmtp import GatewayLMTP, LmtpHandler
    from gateway.intake.smtp import GatewaySMTP, IntakeHandler, session_options
    from gateway.intake.smtp_setup import PER_SESSION, session_factory

    async def check(cls: type[SMTP], handler: object) -> None:
        options = session_options("mx.test", 1000)
        make = session_factory(cls, handler, **options)
        first, later = make(), make()
        reference = cls(handler, **options)
        assert type(later) is cls
        assert set(vars(later)) == set(vars(reference))
        for key, value in vars(reference).items():
            if key in PER_SESSION or key == "_handle_hooks":
                continue
            assert vars(later)[key] == value, key
        assert later._handle_hooks == reference._handle_hooks
        assert later._handle_hooks is not first._handle_hooks
        for table in ("_smtp_methods", "_auth_methods"):
            ours, theirs = getattr(later, table), getattr(reference, table)
            assert list(ours) == list(theirs), table
        assert all(m.__self__ is later for m in later._smtp_methods.values())
        assert all(a.method.__self__ is later for a in later._auth_methods.values())
        assert later._stream_reader_wr() is not first._stream_reader_wr()
        assert later._closed is not first._closed

    async def main() -> None:
        await check(GatewaySMTP, IntakeHandler(None))  # type: ignore[arg-type]
        await check(GatewayLMTP, LmtpHandler(None))  # type: ignore[arg-type]

    asyncio.run(main())


def test_an_idle_session_is_closed_after_its_timeout_even_after_commands() -> None:
    """The idle timer is moved lazily (not a new timer per command): a session that
    sent a command and then went quiet must still be closed once the timeout has
    passed since that command."""
    import asyncio

    from gateway.intake.smtp import GatewaySMTP, IntakeHandler, session_options
    from gateway.intake.smtp_setup import session_factory

    async def main() -> tuple[bytes, bytes, bytes]:
        loop = asyncio.get_running_loop()
        options = session_options("mx.test", 1000) | {"timeout": 0.5}
        factory = session_factory(GatewaySMTP, IntakeHandler(None), **options)  # type: ignore[arg-type]
        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            greeting = await asyncio.wait_for(r.readline(), 10)
            await asyncio.sleep(0.3)
            w.write(b"NOOP\r\n")
            noop = await asyncio.wait_for(r.readline(), 10)
            rest = await asyncio.wait_for(r.read(), 30)  # EOF once the server closes
            w.close()
            return greeting, noop, rest
        finally:
            server.close()

    greeting, noop, rest = asyncio.run(main())
    assert greeting.startswith(b"220 ")
    assert noop.startswith(b"250 ")
    assert rest == b""
