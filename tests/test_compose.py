"""What the gateway writes: templates an admin can override, headers robots respect."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from email import message_from_bytes, message_from_string
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

import pytest

from outbound.compose import (
    MailContext,
    Templates,
    acknowledgement,
    agent_notice,
    failure_notice,
    magic_link_mail,
    relay,
    report_mail,
    thread_index,
)
from outbound.mime import build, downgrade, encoded_words, needs_smtputf8, new_message_id
from outbound.sla_mail import sla_notice
from parsers import parse
from routing.commands import split_commands
from routing.config import Agent, Tenant

ACME = Tenant(slug="acme", name="Acme Support", addresses=("support@acme.test",), tag_prefix="ACME")
GLOBEX = Tenant(slug="globex", name="Globex", addresses=("help@globex.test",), tag_prefix="GLOBEX")


def _ack(tenant: Tenant, templates: Templates, subject: str = "Drucker kaputt — Zürich") -> bytes:
    return acknowledgement(
        tenant=tenant,
        hostname="gw.test",
        ref="ACME-7",
        subject=subject,
        to_addr="zoe@client.test",
        to_name="Zoë Ünal",
        reply_address="support+t7-abc@acme.test",
        in_reply_to="<orig@client.test>",
        now=datetime(2026, 11, 23, tzinfo=UTC),
        templates=templates,
    ).body


def test_a_tenant_template_overrides_ours_and_only_for_that_tenant(tmp_path: Path) -> None:
    (tmp_path / "acme").mkdir()
    (tmp_path / "acme" / "ack.txt.j2").write_text("Moin {{ name }}, Ticket {{ ref }}.\n")
    t = Templates(tmp_path)
    acme = message_from_bytes(_ack(ACME, t), policy=default)
    assert acme.get_content().replace("\r\n", "\n") == "Moin Zoë Ünal, Ticket ACME-7.\n"
    globex = message_from_bytes(_ack(GLOBEX, t), policy=default)
    assert "we have received your message" in globex.get_content()


def test_the_ack_reads_back_as_an_auto_reply_in_the_clients_thread() -> None:
    raw = _ack(ACME, Templates())
    p = parse(raw)
    assert p.kind == "auto_reply" and p.auto_submitted == "auto-replied"
    assert p.subject == "[ACME-7] Drucker kaputt — Zürich" and p.from_addr == "support@acme.test"
    assert p.thread_hints.in_reply_to == "<orig@client.test>" and p.loop_markers == ("gw.test",)
    msg = message_from_bytes(raw, policy=default)
    assert msg["Thread-Index"] == thread_index("acme", "ACME-7") and msg["Thread-Topic"]
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")


def test_header_injection_through_the_subject_is_flattened() -> None:
    raw = _ack(ACME, Templates(), subject="hi\r\nBcc: victim@x.test")
    msg = message_from_bytes(raw, policy=default)
    assert msg["Bcc"] is None and "Bcc: victim" in msg["Subject"]


def test_commands_only_count_on_leading_lines() -> None:
    cmds, text = split_commands("#close\n#priority high\n\nThanks!\n#note is not a command here")
    assert (cmds.status, cmds.priority, cmds.note) == ("closed", "high", False)
    assert text == "Thanks!\n#note is not a command here"
    # A leading "#word" that is no command is a problem (the reply is refused whole),
    # so a mistyped #note cannot pass for text; "#1" or "# heading" are text.
    cmds, text = split_commands("#nte the customer is rude\nhello")
    assert not cmds.note and cmds.problems[0].startswith("#nte: unknown command")
    assert "#note" in cmds.problems[0]
    cmds, text = split_commands("#1 check the cable\n# Steps\nhello")
    assert not cmds.any and not cmds.problems and text.startswith("#1 check")
    cmds, _ = split_commands("#priority whenever")
    assert cmds.priority is None
    assert cmds.problems == ("#priority whenever: use one of low, normal, high, urgent",)
    cmds, _ = split_commands("#pending\nWaiting for your logs.")
    assert cmds.status == "pending"
    cmds, text = split_commands("#cc add Dave@x.test\n#cc remove e@x.test\n#cc frob\nHi")
    assert (cmds.cc_add, cmds.cc_remove, text) == (("dave@x.test",), ("e@x.test",), "Hi")
    assert cmds.problems == ("#cc needs add or remove and one plain address",)


def test_the_ack_points_to_the_portal_only_when_there_is_one() -> None:
    def text(portal: str) -> str:
        mail = acknowledgement(
            tenant=ACME,
            hostname="gw.test",
            ref="ACME-7",
            subject="Hi",
            to_addr="zoe@client.test",
            to_name="",
            reply_address="support+t7-abc@acme.test",
            in_reply_to=None,
            now=datetime(2026, 11, 23, tzinfo=UTC),
            portal=portal,
        )
        return message_from_bytes(mail.body, policy=default).get_content()

    assert "https://help.acme.test/t/acme/" in text("https://help.acme.test/t/acme/")
    assert "browser" not in text("")


# --- round trip: what we write, the stdlib parser reads back as meant ---------------

NOW = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
ALICE = Agent(address="alice@acme.test", name="Älice O'Agent")
BOB = Agent(address="bob@acme.test", name="Bob, the second")

TRICKY_TEXTS = [
    "plain",
    "Grüße aus Zürich — ça va? 🎉\nzweite Zeile\n",
    "a line much longer than seventy-six characters, so quoted-printable must break it "
    "softly and the parser must join it again without a trace\n",
    "=3D is not an escape here, nor is =\n.a dot first\nFrom the start of a line\n",
    "trailing spaces   \ntab\tinside\n\nblank line above\n",
    "windows\r\nline\r\nends\r\n",
    "",
]

TRICKY_SUBJECTS = [
    "Printer jammed",
    "Drucker kaputt — Zürich",
    "a long ascii subject " * 6,
    "eine lange Betreffzeile mit Umlauten: äöü " * 4,
    "x" * 120,  # one word longer than a line
    'quotes "and" (comments) and, commas; and: colons',
]


def _read(raw: bytes) -> EmailMessage:
    """The mail as the stdlib reads it, with no defect anywhere."""
    msg = message_from_bytes(raw, policy=default)
    assert isinstance(msg, EmailMessage)
    assert msg.defects == [], msg.defects
    for name, value in msg.items():
        assert value.defects == (), (name, value.defects)
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    return msg


def _people(header: object) -> list[tuple[str, str]]:
    return [(a.display_name, a.addr_spec) for a in header.addresses]  # type: ignore[attr-defined]


@pytest.mark.parametrize("text", TRICKY_TEXTS)
@pytest.mark.parametrize("subject", TRICKY_SUBJECTS)
def test_every_header_and_the_body_read_back_through_the_stdlib_parser(
    subject: str, text: str
) -> None:
    refs = [f"<r{i}.{'x' * 30}@client.test>" for i in range(25)]
    ctx = MailContext(ACME, "gw.test", "ACME-7", NOW, in_reply_to=refs[-1], references=refs)
    to = [("Zoë Ünal", "zoe@client.test"), ("Doe, Jane", "jane@client.test"), ("", "x@y.test")]
    mid, raw = build(
        ctx,
        kind="reply",
        subject=subject,
        from_name="Älice O'Agent (Acme Support)",
        to=to,
        text=text,
        reply_to="support+t7-abc@acme.test",
        auto_submitted="auto-generated",
    )
    msg = _read(raw)
    topic = " ".join(subject.split())
    assert msg["Message-ID"] == mid and mid.endswith("@gw.test>")
    assert msg["Date"].datetime == NOW
    assert _people(msg["From"]) == [("Älice O'Agent (Acme Support)", "support@acme.test")]
    assert _people(msg["To"]) == to
    assert msg["Reply-To"] == "support+t7-abc@acme.test"
    assert msg["Subject"] == f"[ACME-7] {topic}"
    assert msg["Thread-Topic"] == topic
    assert msg["Thread-Index"] == thread_index("acme", "ACME-7")
    assert msg["In-Reply-To"] == refs[-1]
    assert msg["References"].split() == refs[-20:]  # the newest 20, in order
    assert (msg["Auto-Submitted"], msg["X-Loop"]) == ("auto-generated", "gw.test")
    assert msg.get_content_type() == "text/plain" and msg.get_content_charset() == "utf-8"
    sent = text.replace("\r\n", "\n")
    assert msg.get_content().replace("\r\n", "\n") == (sent if sent.endswith("\n") else sent + "\n")


def test_every_kind_of_mail_reads_back_with_its_addresses_and_thread() -> None:
    templates = Templates()
    common = {"tenant": ACME, "hostname": "gw.test", "now": NOW}
    mails = {
        "ack": acknowledgement(
            **common,
            ref="ACME-7",
            subject="Drucker — Zürich",
            to_addr="zoe@client.test",
            to_name="Zoë Ünal",
            reply_address="support+t7-abc@acme.test",
            in_reply_to="<orig@client.test>",
            templates=templates,
        ),
        "notice": agent_notice(
            **common,
            agent=ALICE,
            event="new",
            ref="ACME-7",
            subject="Drucker — Zürich",
            client="Zoë Ünal",
            text="Der Drucker ist kaputt.",
            reply_address="support+t7-agent@acme.test",
            in_reply_to="<orig@client.test>",
            references=["<first@client.test>", "<orig@client.test>"],
            templates=templates,
        ),
        "relay": relay(
            **common,
            agent=ALICE,
            ref="ACME-7",
            subject="Re: Drucker — Zürich",
            to=[("Zoë Ünal", "zoe@client.test")],
            text="Wir kümmern uns darum.   \n",
            reply_address="support+t7-abc@acme.test",
            in_reply_to="<orig@client.test>",
            references=["<orig@client.test>"],
        ),
        "failure": failure_notice(
            **common,
            agents=[ALICE, BOB],
            ref="ACME-7",
            subject="Drucker — Zürich",
            recipients=["zoe@client.test"],
            reason="550 5.1.1 no such user\r\nBcc: x@y.test",
            templates=templates,
        ),
        "link": magic_link_mail(
            **common,
            to_addr="zoe@client.test",
            subject="Ihr Anmeldelink — Acme",
            text="https://help.acme.test/t/acme/login?s=abc&v=def\n",
        ),
    }
    [sla] = sla_notice(
        **common,
        agents=[ALICE],
        ref="ACME-7",
        subject="Drucker — Zürich",
        reply_to={ALICE.address: "support+t7-alice@acme.test"},
        values={
            "state": "breached",
            "clock": "first response",
            "target": "4h",
            "calendar": "24x7",
            "elapsed": "5h",
            "due": "",
        },
        templates=templates,
    )
    mails["sla"] = sla
    read = {kind: _read(mail.body) for kind, mail in mails.items()}
    for kind, msg in read.items():
        assert msg["Message-ID"] == mails[kind].message_id, kind
        assert msg["X-Loop"] == "gw.test" and msg["Date"].datetime == NOW, kind
        assert _people(msg["From"])[0][1] == "support@acme.test", kind
        assert [a for _, a in _people(msg["To"])] == list(mails[kind].rcpt_tos), kind
    assert read["ack"]["Subject"] == "[ACME-7] Drucker — Zürich"
    assert _people(read["ack"]["To"]) == [("Zoë Ünal", "zoe@client.test")]
    assert "Zoë Ünal" in read["ack"].get_content()
    assert _people(read["notice"]["From"]) == [("Zoë Ünal via Acme Support", "support@acme.test")]
    assert read["notice"]["References"].split() == ["<first@client.test>", "<orig@client.test>"]
    assert "Der Drucker ist kaputt." in read["notice"].get_content()
    assert read["relay"]["Auto-Submitted"] is None  # a person speaking
    assert read["relay"].get_content().replace("\r\n", "\n") == (
        "Wir kümmern uns darum.\n\n--\nAcme Support, ticket ACME-7: "
        "simply reply to this mail to answer.\n"
    )
    assert _people(read["relay"]["From"]) == [("Älice O'Agent (Acme Support)", "support@acme.test")]
    assert read["failure"]["Bcc"] is None and read["failure"]["Subject"].startswith("[ACME-7]")
    assert read["link"]["Subject"] == "Ihr Anmeldelink — Acme"
    assert "login?s=abc&v=def" in read["link"].get_content()
    assert read["sla"]["Reply-To"] == "support+t7-alice@acme.test"
    assert read["sla"]["Subject"] == "[ACME-7] SLA breached: Drucker — Zürich"


def test_the_report_mail_carries_the_pdf_byte_for_byte() -> None:
    pdf = b"%PDF-1.7\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"
    mail = report_mail(
        tenant=ACME,
        hostname="gw.test",
        to=["boss@acme.test", "cfo@acme.test"],
        month="2026-10",
        filename="acme-2026-10.pdf",
        pdf=pdf,
        now=NOW,
    )
    msg = _read(mail.body)
    assert msg["Message-ID"] == mail.message_id
    assert msg["Subject"] == "Acme Support: support report for 2026-10"
    [attachment] = list(msg.iter_attachments())
    assert attachment.get_filename() == "acme-2026-10.pdf"
    assert attachment.get_content() == pdf


def test_a_utf8_address_is_written_as_utf8_and_needs_smtputf8() -> None:
    """RFC 6532: the address has no ASCII form, so the header is UTF-8, not RFC 2047
    (composing it raised UnicodeEncodeError once, and the intake answered 451)."""
    mail = acknowledgement(
        tenant=ACME,
        hostname="gw.test",
        ref="ACME-7",
        subject="Grüße",
        to_addr="jdöe@mächine.example",
        to_name="Jöhn",
        reply_address="support+t7-abc@acme.test",
        in_reply_to=None,
        now=datetime(2026, 11, 23, tzinfo=UTC),
    )
    head = mail.body.split(b"\r\n\r\n", 1)[0]
    assert 'To: "Jöhn" <jdöe@mächine.example>'.encode() in head.split(b"\r\n")
    msg = message_from_string(mail.body.decode("utf-8"), policy=default)
    assert msg["Subject"] == "[ACME-7] Grüße"
    assert needs_smtputf8(mail.mail_from, mail.rcpt_tos, mail.body)
    assert not needs_smtputf8("", ("zoe@client.test",), _ack(ACME, Templates()))


def test_text_goes_as_it_is_unless_a_line_is_too_long_for_smtp() -> None:
    from outbound.mime import encode_text

    link = "https://help.acme.test/t/acme/login?s=abc&v=" + "x" * 300
    assert encode_text(f"Sign in:\n\n{link}\n") == ("7bit", f"Sign in:\r\n\r\n{link}\r\n".encode())
    cte, body = encode_text("Grüße\n")
    assert (cte, body) == ("8bit", "Grüße\r\n".encode())
    cte, body = encode_text("a" * 999 + "\n")  # over 998 octets: only then quoted-printable
    assert cte == "quoted-printable" and max(len(x) for x in body.split(b"\r\n")) <= 76
    assert encode_text("bare\rCR")[0] == "7bit"  # a lone CR is a line end, as everywhere
    assert encode_text("nul\x00byte")[0] == "quoted-printable"


def test_a_notice_without_a_web_side_names_the_files_it_left_out() -> None:
    from outbound.compose import LeftOut, Part

    mail = agent_notice(
        tenant=ACME,
        hostname="gw.test",
        agent=ALICE,
        event="new",
        ref="ACME-7",
        subject="Scan",
        client="Zoë",
        text="See attached.",
        reply_address="support+t7-agent@acme.test",
        in_reply_to=None,
        references=[],
        now=NOW,
        files=[Part("small.txt", "text/plain", b"tiny\x00\xff")],
        left_out=LeftOut((("huge.iso", 3 * 1024**3, "limit"),), 10 * 1024**2),
    )
    msg = message_from_bytes(mail.body, policy=default)
    text = msg.get_body(("plain",)).get_content()
    assert "huge.iso (3.0 GiB; over this mail's limit of 10.0 MiB" in text
    assert "no web side is configured" in text and "/a/acme/t/" not in text
    (small,) = [p for p in msg.iter_attachments()]
    assert small.get_filename() == "small.txt" and small.get_payload(decode=True) == b"tiny\x00\xff"


def test_an_8bit_mail_becomes_7bit_for_a_server_without_8bitmime() -> None:
    from outbound.mime import as_7bit, needs_8bitmime

    mail = relay(
        tenant=ACME,
        hostname="gw.test",
        agent=ALICE,
        ref="ACME-7",
        subject="Re: Zürich",
        to=[("", "zoe@client.test")],
        text="Grüße aus Köln.\n",
        reply_address="support+t7-abc@acme.test",
        in_reply_to=None,
        references=[],
        now=NOW,
        html="<p>Grüße aus <b>Köln</b>.</p>",
    )
    assert needs_8bitmime(mail.body)
    seven = as_7bit(mail.body)
    assert seven.isascii() and not needs_8bitmime(seven)
    before, after = (message_from_bytes(b, policy=default) for b in (mail.body, seven))
    for kind in ("plain", "html"):
        assert before.get_body((kind,)).get_content() == after.get_body((kind,)).get_content()
    assert after["Message-ID"] == mail.message_id


def test_a_relay_downgraded_for_a_server_without_smtputf8() -> None:
    """The ASCII recipients of a mixed relay get ASCII headers (RFC 6857): their
    addresses stay, the UTF-8 one is only a group name; an ASCII mail is unchanged."""
    mail = relay(
        tenant=ACME,
        hostname="gw.test",
        agent=Agent(address="alice@acme.test", name="Alice"),
        ref="ACME-7",
        subject="Grüße",
        to=[("Jöhn Döe", "jdöe@mächine.example"), ("Bob Müller", "bob@client.test")],
        text="Fixed.",
        reply_address="support+t7-abc@acme.test",
        in_reply_to=None,
        references=(),
        now=datetime(2026, 11, 23, tzinfo=UTC),
    )
    assert needs_smtputf8(mail.mail_from, ("bob@client.test",), mail.body)
    down = downgrade(mail.body)
    assert down is not None
    head, body = down.split(b"\r\n\r\n", 1)
    assert head.isascii() and body == mail.body.split(b"\r\n\r\n", 1)[1]
    assert not needs_smtputf8(mail.mail_from, ("bob@client.test",), down)
    msg = message_from_bytes(down, policy=default)
    to = msg["To"]
    assert [(a.display_name, a.addr_spec) for a in to.addresses] == [
        ("Bob Müller", "bob@client.test")
    ]
    assert [g.display_name for g in to.groups if g.display_name] == [
        "Jöhn Döe <jdöe@mächine.example>"
    ]
    assert msg["Subject"] == "[ACME-7] Grüße" and msg["Message-ID"] == mail.message_id
    ascii_ack = _ack(ACME, Templates())
    assert downgrade(ascii_ack) == ascii_ack


@pytest.mark.parametrize("length", [1, 14, 15, 16, 44, 45, 46, 120, 400])
@pytest.mark.parametrize("alphabet", ["é", "日本", "a🙂", "Grüße, Ärger "])
def test_encoded_words_read_back_exactly_and_fold_below_78(length: int, alphabet: str) -> None:
    """Our RFC 2047 writer (it replaced email.header's, for speed): a subject of any
    length and script reads back as written, every line under 78 columns and every
    word under 75, and no character is cut between two words."""
    value = (alphabet * length)[:length]
    raw = f"Subject: {encoded_words(value, len('Subject: '))}\r\n\r\n".encode("ascii")
    lines = raw.split(b"\r\n\r\n")[0].split(b"\r\n")
    assert all(len(line) <= 78 for line in lines), lines
    words = [w for line in lines for w in line.split() if w.startswith(b"=?")]
    assert all(len(w) <= 75 for w in words) and len(words) == len(lines)
    for w in words:  # each word is whole UTF-8: no character split across two
        assert w.startswith(b"=?utf-8?b?") and w.endswith(b"?=")
        base64.b64decode(w[10:-2]).decode("utf-8")  # strict: raises on a cut character
    assert message_from_bytes(raw, policy=default)["Subject"] == value


def test_our_message_ids_sort_in_the_order_made_and_stay_unguessable() -> None:
    """The time first, so the outbox's unique index and the threading table take each
    new one at the end (a batch dirties one index page, not one each); 80 random bits
    after it, so nobody can name one of ours in a forged References."""
    ids = [new_message_id("ack", "gw.acme.test") for _ in range(500)]
    assert len(set(ids)) == len(ids)
    stamps = [i.removeprefix("<ack.")[:13] for i in ids]
    assert stamps == sorted(stamps)
    randoms = {i.removeprefix("<ack.")[13:33] for i in ids}
    assert len(randoms) == len(ids)
    assert all(
        i.endswith("@gw.acme.test>") and len(i) == len("<ack.@gw.acme.test>") + 33 for i in ids
    )
