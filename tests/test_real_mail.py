"""Mail as real clients and MTAs write it (issue #19), through parsers.parse and `gateway parse`.

One fixture per class in fixtures/real/, written in the client's or MTA's own
format: old comment-form names (nested too), encoded names with commas and
quotes, a mailbox encoded whole, a bad From above a good one, raw 8-bit headers
in legacy charsets, broken encoded words, 8-bit bodies without a charset or
with the wrong one, Outlook's ISO-2022-JP, several HTML parts, junk before the
header, delivery reports (Postfix, Exchange, Gmail), a read receipt, an
attached message. tests/test_real_intake.py sends each through SMTP too.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from parsers import parse
from parsers.detect import detect_codec
from parsers.html import html_to_text
from parsers.legacy_headers import decode_raw_headers
from parsers.mime import decode_bytes, iso2022jp_ms, parse_tree

REAL = Path(__file__).resolve().parent.parent / "fixtures" / "real"

# fixture -> what a mail client shows: from, from_name, subject, and parts of the rest.
EXPECT: dict[str, dict[str, Any]] = {
    "from-comment-name.eml": {"from": "client@example.test", "name": "A. Client"},
    "from-encoded-comma.eml": {"from": "j.mueller@example.test", "name": "Müller, Jürgen"},
    "from-encoded-quotes.eml": {"from": "anna@example.test", "name": '"Anna" Berger (ACME)'},
    "from-encoded-unencoded-comma.eml": {"from": "anna@example.test", "name": "Berger, Anna"},
    "from-two-first-bad.eml": {
        "from": "anna@example.test",
        "name": "Anna Berger",
        "defects": {"multiple-from"},
    },
    "from-comment-nested.eml": {"from": "client@example.test", "name": "A. Client (Sales)"},
    "from-encoded-whole-mailbox.eml": {  # a broken mailer encoded name and address as one word
        "from": "j.mueller@example.test",
        "name": "Müller, Jürgen",
        "defects": {"encoded-address"},
    },
    "header-encoded-word-unclosed.eml": {
        "name": "Jürgen Müller",
        "subject": "Grüße aus dem Büro",
        "defects": {"bad-encoded-word"},
    },
    "body-8bit-no-charset-gbk.eml": {  # old Foxmail: 8-bit GBK body, no charset at all
        "name": "王小明",
        "subject": "打印机卡纸了",
        "text": ["三楼的打印机卡纸了，请尽快派人来修理。"],
        "defects": {"charset-mismatch:none"},
    },
    "body-8bit-no-charset-koi8r.eml": {  # an old Russian client: KOI8-R, named nowhere
        "subject": "Принтер на третьем этаже",
        "text": ["Принтер на третьем этаже сломался, помогите пожалуйста."],
        "defects": {"header-8bit-not-utf8", "charset-mismatch:none"},
    },
    "body-utf8-labelled-latin1.eml": {
        "text": ["Grüße aus Zürich: der Drucker läuft nicht."],
        "defects": {"charset-mismatch:iso-8859-1"},
    },
    "body-cp1252-labelled-utf8.eml": {
        "text": ["Grüße aus Zürich – der Drucker läuft nicht. “Papierstau”, sagt er."],
        "defects": {"charset-mismatch:utf-8"},
    },
    "body-iso-2022-jp-nec.eml": {  # Outlook's ISO-2022-JP carries cp932's ① and ㈱ (CP50220)
        "name": "山田太郎",
        "subject": "㈱山田商事\u3000プリンター①の件",
        "text": ["㈱山田商事の山田です。\nプリンター①が紙詰まりしています。"],
    },
    "html-meta-charset.eml": {  # no charset on the part: the HTML's own <meta> names it
        "from": "ivan@example.test",
        "html": ["Принтер на третьем этаже сломался."],
        "text": ["Принтер на третьем этаже сломался."],
    },
    "header-8bit-gbk.eml": {
        "from": "wang@example.test",
        "name": "王小明",
        "subject": "打印机卡纸了，请帮忙",
    },
    "header-8bit-shift-jis.eml": {
        "from": "yamada@example.test",
        "name": "山田太郎",
        "subject": "プリンターの紙詰まりについて",
    },
    "header-raw-iso-2022-jp.eml": {
        "from": "yamada@example.test",
        "name": "山田太郎",
        "subject": "プリンターの紙詰まり",
    },
    "header-8bit-windows-1252.eml": {
        "from": "j.mueller@example.test",
        "name": "Jürgen Müller",
        "subject": "Drucker im Büro – Papierstau",
    },
    "header-encoded-word-errors.eml": {
        "from": "j.mueller@example.test",
        "name": "Jürgen Müller",
        "subject": "Café au lait - élève - Grüße",
    },
    "html-parts-apple.eml": {
        "html": ["Here is the error:", "And this is what I clicked before."],
        "attachments": [("error.png", "image/png")],
    },
    "html-parts-only-html.eml": {
        "html": ["First part before the file.", "Second part after the file."],
        "text": ["First part before the file.", "Second part after the file."],
        "attachments": [("log.txt", "text/plain")],
    },
    "first-line-mbox-from.eml": {"from": "anna@example.test", "subject": "From an mbox"},
    "first-line-stray.eml": {
        "from": "anna@example.test",
        "subject": "After a stray line",
        "text": ["The printer jams."],
        "not_text": ["ESMTP", "Subject:"],
        "defects": {"junk-before-header"},
    },
    "bounce-postfix.eml": {
        "kind": "bounce",
        "html": None,
        "text": ["could not\nbe delivered", "550 5.1.1 User unknown"],
        "not_text": ["We fixed the printer", "Reporting-MTA"],
        "attachments": [
            ("Delivery report.txt", "message/delivery-status"),  # its Content-Description
            ("Re: [ACME-7] Printer.eml", "message/rfc822"),  # named by its subject
        ],
    },
    "bounce-exchange.eml": {  # Exchange Online's NDR: its own HTML, the returned headers only
        "kind": "bounce",
        "html": ["couldn't be delivered", "RecipientNotFound"],
        "text": ["old.user wasn't found at client.test."],
        "not_text": ["Reporting-MTA"],
        "attachments": [
            ("part-3.txt", "message/delivery-status"),
            ("part-4.txt", "text/rfc822-headers"),
        ],
    },
    "bounce-gmail-html.eml": {  # Gmail's: the report's HTML is the ticket's, never the returned
        "kind": "bounce",
        "html": ["Address not found", "550 5.1.1"],
        "not_html": ["password"],
        "text": ["Address not found"],
        "not_text": ["password", "Reporting-MTA"],
        "attachments": [
            ("icon.png", "image/png"),
            ("part-4.txt", "message/delivery-status"),
            ("[ACME-9] Login.eml", "message/rfc822"),
        ],
    },
    "mdn-read-receipt.eml": {  # Thunderbird's read receipt: a robot's mail, no answer
        "kind": "auto_reply",
        "html": None,
        "text": ["This is a Return Receipt"],
        "not_text": ["Reporting-UA"],
        "attachments": [
            ("MDNPart2.txt", "message/disposition-notification"),
            ("MDNPart3.txt", "text/rfc822-headers"),
        ],
    },
    # Multiparts whose parts the parser cannot find (parsers/broken_multipart.py): a
    # client shows their text, not a file named part-1.bin.
    "multipart-boundary-unindented.eml": {  # boundary= on an unindented line: header ends
        "from": "shop@orders.example.test",
        "text": ["the invoice for order 100234 charges the shipping twice.", "Grüße, Anna"],
        "not_text": ["Content-Type", "b2_5f9c2d1e8a7b4", "boundary="],
        "html": ["charges the shipping twice."],
        "attachments": [("invoice-100234.pdf", "application/pdf")],
        "defects": {"multipart-boundary-mended", "NoBoundaryInMultipartDefect"},
    },
    "multipart-boundary-mismatch.eml": {  # the header names one boundary, the parts another
        "text": ["The part arrived broken, photo attached. Señor Ruiz"],
        "not_text": ["Content-Type", "Multipart_Boundary"],
        "html": None,
        "attachments": [("broken-part.jpg", "image/jpeg")],
        "defects": {"multipart-boundary-mended", "StartBoundaryNotFoundDefect"},
    },
    "multipart-no-boundary.eml": {  # a contact form: a multipart type over plain text
        "subject": "Kontaktformular: Drucker",
        "text": ["Name: Jürgen Müller\nE-Mail: j.mueller@client.test\nNachricht: Der Drucker"],
        "html": None,
        "attachments": [],
        "defects": {"multipart-read-as-text"},
    },
    "multipart-boundary-not-found.eml": {  # "--Dana" then no part header: a signature
        "text": ["the VPN drops every hour", "--Dana\nContent: not a header"],
        "html": None,
        "attachments": [],
        "defects": {"multipart-read-as-text", "StartBoundaryNotFoundDefect"},
    },
    "uuencoded-cron-log.eml": {  # `... | uuencode`: a file inside the text, as before MIME
        "from": "root@db01.client.test",
        "text": ["The nightly backup of db01 failed. Its log follows.", "nightly-backup on db01"],
        "not_text": ["begin 644", "M1&5C"],
        "attachments": [("backup-2026-12-01.log", "application/octet-stream")],
        "defects": {"uuencoded-file"},
    },
    # Outlook's winmail.dat (parsers/tnef.py; the streams built to [MS-OXTNEF] by
    # tests/tnef_stream.py): the files inside it, not one file nobody can open.
    "outlook-winmail-dat.eml": {
        "name": "Jürgen Müller",
        "text": ["anbei unser Angebot und die Bestellliste für den Toner."],
        "html": None,
        "attachments": [
            ("Angebot März 2026.pdf", "application/pdf"),
            ("Bestellliste.csv", "text/csv"),
        ],
        "defects": {"tnef-read"},
    },
    "exchange-tnef-only.eml": {  # the whole mail a TNEF stream: its plain body is the text
        "text": ["der Drucker meldet den angehängten Fehler."],
        "attachments": [("Fehlermeldung.txt", "text/plain")],
        "defects": {"tnef-read"},
    },
    # format=flowed (RFC 3676, parsers/flowed.py): soft breaks joined as clients show them
    "thunderbird-flowed-reply.eml": {
        "text": [
            "aber seit heute früh zeigt der Drucker",
            "Am 01.12.26 um 10:14 schrieb Carl from ACME Support via Acme Support Desk:\n",
            "> Bitte installieren Sie den Treiber 5.2 von unserer Download-Seite und starten",
            ">\n>> Der Drucker im dritten Stock druckt nur leere Seiten.",
            "\n-- \nAnna Berger\n",
        ],
        "not_text": ["heute\nfrüh"],
        "html": None,
    },
    "iphone-flowed-delsp.eml": {  # delsp=yes: the space before a soft break was not typed
        "name": "山田太郎",
        "text": ["印刷ができません。至急対応をお願いします。"],
        "not_text": ["できませ\n", "できませ ん"],
    },
    # Forwards into the desk (parsers/quotes.py): the forwarded mail is what the sender
    # wants read, below Outlook's header block (WG:) as below Gmail's "Forwarded message".
    "outlook-forward-de.eml": {
        "name": "Jürgen Müller",
        "subject": "WG: Drucker im 3. Stock defekt",
        "text": ["bitte kümmert euch darum", "druckt seit Montag nur leere Seiten"],
        "html": ["bitte kümmert euch darum", "druckt seit Montag nur leere Seiten"],
    },
    "gmail-forward.eml": {
        "from": "ana.lopez@gmail.com",
        "text": ["Can you take it?", "charged twice for invoice 2026-118"],
        "html": ["Can you take it?", "charged twice for invoice 2026-118"],
    },
    # A PHP form's mail through a spam filter: fields wrapped without indenting the next
    # line. The stdlib ends the header at "by mx..."; sender and subject were lost.
    "header-unindented-continuation.eml": {
        "from": "formular@client.test",
        "name": "Webformular",
        "subject": "Kontaktformular: tiskarna",
        "text": ["Dobrý den, tiskárna ve třetím patře tiskne jen prázdné stránky."],
        "not_text": ["by mx.client.test", "Content-Type"],
        "defects": {"header-line-not-indented"},
    },
    "attached-message.eml": {
        "html": None,
        "text": ["See the attached offer.", "Our offer: 3 printers."],
        "attachments": [("offer.eml", "message/rfc822")],
    },
}


def _check(name: str, got: dict[str, Any]) -> None:
    want = EXPECT[name]
    for key in ("from", "name", "subject", "kind"):
        if key in want:
            assert got[key] == want[key], (name, key, got[key])
    if "html" in want:
        if want["html"] is None:
            assert got["html"] is None, (name, got["html"])
        else:
            positions = [got["html"].find(h) for h in want["html"]]
            assert -1 not in positions and positions == sorted(positions), (name, got["html"])
    for h in want.get("not_html", []):
        assert h not in got["html"], (name, h)
    for t in want.get("text", []):
        assert t in got["text"], (name, t, got["text"])
    for t in want.get("not_text", []):
        assert t not in got["text"], (name, t)
    if "attachments" in want:
        assert got["attachments"] == want["attachments"], name
    assert want.get("defects", set()) <= set(got["defects"]), (name, got["defects"])
    for value in (got["subject"], got["name"] or "", got["text"]):
        assert "\ufffd" not in value and "Ã" not in value, (name, value)  # no mojibake


def test_every_fixture_has_an_expectation() -> None:
    assert sorted(p.name for p in REAL.glob("*.eml")) == sorted(EXPECT)


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_parse(name: str) -> None:
    p = parse((REAL / name).read_bytes())
    _check(
        name,
        {
            "from": p.from_addr,
            "name": p.from_name,
            "subject": p.subject,
            "kind": p.kind,
            "html": p.html,
            "text": p.text,
            "attachments": [(a.filename, a.content_type) for a in p.attachments],
            "defects": p.defects,
        },
    )


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_gateway_parse(name: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "parse", str(REAL / name), "--json"],
        capture_output=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    obj = json.loads(out.stdout)
    _check(
        name,
        {
            "from": obj["from"],
            "name": obj["from_name"],
            "subject": obj["subject"],
            "kind": obj["kind"],
            "html": obj["html"],
            "text": obj["text"],
            "attachments": [(a["filename"], a["content_type"]) for a in obj["attachments"]],
            "defects": obj["defects"],
        },
    )


def test_a_flowed_reply_is_the_paragraph_its_writer_typed() -> None:
    p = parse((REAL / "thunderbird-flowed-reply.eml").read_bytes())
    assert p.reply_text == (
        "Hallo Carl,\n\ndanke, der neue Treiber hat einen Tag lang geholfen, aber seit heute "
        "früh zeigt der Drucker im dritten Stock wieder den Fehler 0x4F und druckt nur leere "
        "Seiten.\n\nViele Grüße\nAnna"
    )


@pytest.mark.parametrize(
    ("name", "own", "forwarded"),
    [
        ("outlook-forward-de.eml", "bitte kümmert euch darum", "druckt seit Montag nur leere"),
        ("gmail-forward.eml", "Can you take it?", "charged twice for invoice 2026-118"),
    ],
)
def test_a_forward_keeps_the_mail_it_forwards(name: str, own: str, forwarded: str) -> None:
    """The agents' notice sends reply_text and html_reply: both carry the customer's mail.

    Outlook's header block alone is a quote; its "WG:" says forward. Gmail's HTML puts
    the forwarded mail in the same gmail_quote div as a quote."""
    raw = (REAL / name).read_bytes()
    p = parse(raw)
    for shown in (p.reply_text, p.html_reply or ""):
        assert own in shown and forwarded in shown, (name, shown)
    reply = parse(re.sub(rb"\nSubject: (?:WG|Fwd): ", b"\nSubject: AW: ", raw, count=1))
    if name.startswith("outlook"):  # the same mail as a reply: the history is folded
        assert own in reply.reply_text and forwarded not in reply.reply_text
        assert forwarded not in (reply.html_reply or "")


def test_returned_message_is_kept_whole() -> None:
    p = parse((REAL / "bounce-postfix.eml").read_bytes())
    returned = next(a for a in p.attachments if a.content_type == "message/rfc822")
    assert b"<p>We fixed the <b>printer</b>.</p>" in returned.data
    assert p.dsn == (("gone@client.test", "failed", "5.1.1"),)
    assert p.thread_hints.subject_tag == "ACME-7"  # the bounce still finds its ticket


@pytest.mark.parametrize("name", sorted(n for n in EXPECT if EXPECT[n].get("kind") == "bounce"))
def test_bounce_reads_its_report(name: str) -> None:
    """The status and the returned headers are attachments and still read for the bounce logic."""
    p = parse((REAL / name).read_bytes())
    assert p.dsn and all(
        action == "failed" and status.startswith("5.") for _, action, status in p.dsn
    )
    assert p.thread_hints.subject_tag is not None
    status = next(a for a in p.attachments if a.content_type == "message/delivery-status")
    assert b"Final-Recipient:" in status.data and b"Status: 5." in status.data


def test_attached_message_is_kept_whole_and_its_html_stays_in_it() -> None:
    p = parse((REAL / "attached-message.eml").read_bytes())
    assert p.html is None
    assert b"<p>Our offer: <b>3 printers</b>.</p>" in p.attachments[0].data


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("王小明 打印机卡纸了，请帮忙".encode("gbk"), "王小明 打印机卡纸了，请帮忙"),
        (
            "山田太郎 プリンターの紙詰まりについて".encode("shift_jis"),
            "山田太郎 プリンターの紙詰まりについて",
        ),
        ("Jürgen Müller, Büro".encode("cp1252"), "Jürgen Müller, Büro"),
    ],
)
def test_header_charset_without_a_hint_from_the_body(raw: bytes, expected: str) -> None:
    """A UTF-8 body says nothing about the header bytes: they are detected."""
    msg = parse_tree(b"Subject: " + raw + b"\nContent-Type: text/plain; charset=utf-8\n\nx\n")
    defects: list[str] = []
    decode_raw_headers(msg, defects)
    assert msg["Subject"] == expected
    assert defects == ["header-8bit-not-utf8"]


@pytest.mark.parametrize(
    ("raw", "label", "expected"),
    [
        ("转发：整体提升企业服务水平".encode("gbk"), "iso-8859-1", "转发：整体提升企业服务水平"),
        ("Jürgen Müller, Büro".encode("latin-1"), "iso-8859-1", "Jürgen Müller, Büro"),
        ("Привет, принтер".encode("koi8_r"), "koi8-r", "Привет, принтер"),
    ],
)
def test_a_single_byte_label_gives_way_to_a_multi_byte_header(
    raw: bytes, label: str, expected: str
) -> None:
    """A Latin-1 label decodes any bytes (a spam filter's report part around a Chinese
    mail): detection's multi-byte finding wins over it, its own single-byte guess not."""
    msg = parse_tree(
        b"Subject: " + raw + b'\nContent-Type: multipart/mixed; boundary="b"\n\n--b\n'
        b"Content-Type: text/plain; charset=" + label.encode() + b"\n\nx\n--b--\n"
    )
    decode_raw_headers(msg, [])
    assert msg["Subject"] == expected


_HTML_REPLIES = {
    # Gmail: the attribution in div.gmail_attr (with U+202F before AM), the quote a blockquote.
    "gmail": '<div dir="ltr">Serial is XK-4471-B</div><br><div class="gmail_quote">'
    '<div dir="ltr" class="gmail_attr">On Mon, Mar 4, 2024 at 10:15\u202fAM Support &lt;'
    '<a href="mailto:s@acme.test">s@acme.test</a>&gt; wrote:<br></div>'
    '<blockquote class="gmail_quote">Hello Anna,<br>please send the serial.</blockquote></div>',
    # Outlook on the web / new Outlook: an <hr>, then divRplyFwdMsg with bold keys, no quote.
    "outlook": '<div>Serial is XK-4471-B</div><div id="appendonsend"></div><hr tabindex="-1">'
    '<div id="divRplyFwdMsg" dir="ltr"><font face="Calibri, sans-serif"><b>From:</b> Support '
    "&lt;s@acme.test&gt;<br><b>Sent:</b> Monday, March 4, 2024 10:15 AM<br><b>To:</b> Anna "
    "&lt;a@b.test&gt;<br><b>Subject:</b> Re: x</font><div>&nbsp;</div></div>"
    "<div>Hello Anna, please send the serial.</div>",
    # Apple Mail: the attribution inside blockquote type=cite.
    "apple": '<html><body>Serial is XK-4471-B<br><div><br><blockquote type="cite"><div>On 4 '
    "Mar 2024, at 10:15, Support &lt;s@acme.test&gt; wrote:</div><br><div>Hello Anna</div>"
    "</blockquote></div></body></html>",
}


@pytest.mark.parametrize("client", sorted(_HTML_REPLIES))
def test_html_only_reply_keeps_only_the_new_text(client: str) -> None:
    head = (
        "From: a@b.test\r\nTo: s@acme.test\r\nSubject: Re: x\r\nMessage-ID: <1@b.test>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    )
    p = parse((head + _HTML_REPLIES[client]).encode())
    assert p.reply_text == "Serial is XK-4471-B"
    assert "Hello Anna" in p.text


@pytest.mark.parametrize(
    ("text", "encoding", "codec"),
    [
        ("您好，三楼的打印机卡纸了，请尽快派人来修理。", "gbk", "gb18030"),  # not cp949
        ("打印机卡纸了，请帮忙看看。", "gbk", "gb18030"),
        ("프린터가 고장났습니다. 도와주세요", "cp949", "cp949"),
        ("プリンターの紙詰まりについて、ご確認ください。", "shift_jis", "cp932"),
        ("Grüße aus Zürich", "utf-8", "utf_8"),
        ("Grüße aus Zürich", "cp1252", "cp1252"),  # no single-byte guess: what clients assume
        ("Ça a été très épuisé, à côté", "cp1252", "cp1252"),
        ("Принтер сломался, помогите", "cp1251", "cp1251"),  # Cyrillic by its shape
        ("Принтер сломался, помогите", "koi8_r", "koi8_r"),  # and by where lower case lies
        ("Привіт, принтер не працює", "cp1251", "cp1251"),
        # four Latin letters in a row are two Han characters in Big5: not taken on so few
        ("äöüß ad asd\r\n\r\n-Martin\r\n", "cp1252", "cp1252"),
    ],
)
def test_detect_codec(text: str, encoding: str, codec: str) -> None:
    raw = text.encode(encoding)
    assert detect_codec(raw) == codec
    assert raw.decode(codec) == text


def test_iso2022jp_as_outlook_writes_it() -> None:
    plain = "プリンターの紙詰まり、山田太郎です。"
    assert iso2022jp_ms(plain.encode("iso2022_jp")) == plain
    assert iso2022jp_ms(b"\x1b$B-!-j\x1b(B ok") == "①㈱ ok"  # NEC row 13 (CP50220)
    assert iso2022jp_ms(b"\x1b$B-\x1b(B") is None  # half a character: not ISO-2022-JP
    assert iso2022jp_ms("Grüße".encode()) is None
    # no ESC ( B before a line break (RFC 1468 wants one): the break ends two-byte mode
    assert iso2022jp_ms(b"\x1b$B$3$l\n\x1b$BFs9TL\\\x1b(B") == "これ\n二行目"


def test_iso2022jp_without_its_label_is_read_as_iso2022jp() -> None:
    """7-bit, so it decodes as ASCII and would show its escape sequences."""
    head = "From: a@b.test\r\nSubject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n"
    body = "プリンターが壊れました。\n山田"
    p = parse(head.encode() + body.encode("iso2022_jp"))
    assert p.text.rstrip("\n") == body and "\x1b" not in p.text
    assert "charset-mismatch:none" in p.defects


def test_outlooks_html_reads_as_the_text_outlook_wrote_beside_it() -> None:
    """Word's HTML draws every line as a <p class="MsoNormal"> without margins and a
    blank line as one holding &nbsp;: an HTML-only mail must not turn each line into a
    paragraph. Outlook's own text/plain alternative is the answer to compare with."""
    tree = parse_tree((REAL / "outlook-forward-de.eml").read_bytes())
    plain, markup = (p.get_payload(decode=True).decode("iso-8859-1") for p in tree.get_payload())
    assert html_to_text(markup.replace("\r\n", "\n"), []) == plain.replace("\r\n", "\n")


@pytest.mark.parametrize(
    ("raw", "label", "text"),
    [
        (b"\xc3\xc0\xb9\xfa\xa1\xaa\xa1\xaa50", "gb2312", "美国——50"),  # em dash, not U+2015
        (b"\x93Hi\x94 \x80 5", "iso-8859-1", "“Hi” € 5"),  # Windows' bytes, not C1 controls
        (b"\x82\xa0\x81\x60", "shift_jis", "あ～"),  # the wave dash Windows writes
        (b"caf\xe9 \x81", "iso-8859-1", "café \x81"),  # not windows-1252: the label's own
    ],
)
def test_a_label_is_read_as_its_superset_first(raw: bytes, label: str, text: str) -> None:
    """As WHATWG decodes these labels, and so the browsers and webmail the mail was
    written in: where the two differ, the writer's system meant the superset."""
    defects: list[str] = []
    assert decode_bytes(raw, label, defects) == text
    assert defects == []


@pytest.mark.parametrize(
    ("raw", "label", "text"),
    [
        (
            "在庫データを添付いたします。".encode("euc_jp"),
            "iso-2022-jp",
            "在庫データを添付いたします。",
        ),
        (
            "在庫データを添付いたします。".encode("cp932"),
            "iso-2022-jp",
            "在庫データを添付いたします。",
        ),
        ("Уважаемый коллега".encode("mac_cyrillic"), "x-mac-cyrillic", "Уважаемый коллега"),
    ],
)
def test_a_label_of_the_right_family_is_followed(raw: bytes, label: str, text: str) -> None:
    """A Japanese label on another Japanese encoding's 8-bit bytes is read as Japanese (on a
    line detection reads EUC-JP as Chinese); an unregistered "x-" label as its charset."""
    assert decode_bytes(raw, label, []) == text


def test_utf8_cut_in_the_middle_of_a_character_stays_utf8() -> None:
    """Yahoo cut a long raw UTF-8 file name in the middle of its last character: the
    rest of the name is still UTF-8, in a part's header as in the message's."""
    name = "Картинка с очень длинным именем".encode()[:-1]
    head = (
        b"From: a@b.test\r\nSubject: " + "Привет, мир".encode()[:-1] + b"\r\nMIME-Version: 1.0\r\n"
    )
    raw = (
        head + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nhi\r\n--b\r\n"
        b'Content-Type: image/png; name="' + name + b'"\r\nContent-Transfer-Encoding: base64\r\n'
        b"\r\niVBORw0KGgo=\r\n--b--\r\n"
    )
    p = parse(raw)
    assert p.subject.startswith("Привет, ми")
    assert p.attachments[0].filename.startswith("Картинка с очень длинным имене")


def test_gbk_labelled_utf8_is_not_read_as_utf8_with_stray_bytes() -> None:
    """GBK's byte pairs form a valid UTF-8 sequence now and then, beside as many bytes
    that do not: not "mostly UTF-8"; detection reads it as the GBK it is."""
    text = "您好，三楼的打印机卡纸了，请尽快派人来修理。这台打印机从周一开始就一直有问题。"
    assert decode_bytes(text.encode("gbk"), "utf-8", []) == text


def test_a_gbk_file_name_from_outlook_express() -> None:
    """No charset anywhere: Outlook Express on Chinese Windows wrote the raw GBK bytes of
    "New Text Document.txt"; a header full of ASCII around them."""
    raw = (
        b"From: a@b.test\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: application/octet-stream;\r\n\tname="'
        + "新建 文本文档.txt".encode("gbk")
        + b'"\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n'
    )
    assert parse(raw).attachments[0].filename == "新建 文本文档.txt"
