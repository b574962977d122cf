"""The parser on hostile and odd input: it answers with a ParseError or a clean
ParsedMessage, never anything else, and the limits act before the real parse.

The large hostile messages are built at test time (tests/parser_fixtures.py),
one per known hostile input (named there); the small real ones are in fixtures/.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import struct
from email.errors import InvalidBase64LengthDefect
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parsers import HeaderTooLarge, Limits, ParsedMessage, ParseError, StructureTooDeep, parse
from parsers.flowed import unflow
from parsers.html import html_to_text
from tests import parser_fixtures as hostile
from tests import tnef_stream

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = sorted((ROOT / "fixtures").glob("*.eml"))
_BAD = re.compile(r"[\x00\ud800-\udfff]")


def _clean(p: ParsedMessage) -> None:
    """What may reach the store: no NUL, no lone surrogate, in any text field."""
    for value in (p.subject, p.from_addr, p.from_name, p.text, p.reply_text, p.html or ""):
        assert not _BAD.search(value)
    for a in p.attachments:
        assert not _BAD.search(a.filename)
    for name, value in p.headers:
        assert not _BAD.search(name) and not _BAD.search(value)


@pytest.mark.parametrize(
    ("build", "error"),
    [
        (lambda: hostile.deep_nest(10_000), StructureTooDeep),
        (lambda: hostile.many_parts(100_000), StructureTooDeep),
        (lambda: hostile.deep_rfc822(10_000), StructureTooDeep),
        (lambda: hostile.huge_to(5 * 1024 * 1024), HeaderTooLarge),
    ],
    ids=["10000-deep-multipart", "100000-parts", "10000-deep-rfc822", "5MB-To"],
)
def test_bombs_are_refused_by_the_prescan(build, error) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error):
        parse(build())


def test_limits_are_the_configured_ones() -> None:
    nest = hostile.deep_nest(60)
    with pytest.raises(StructureTooDeep):
        parse(nest)  # default depth 50
    parsed = parse(nest, limits=Limits(max_mime_depth=100, max_parts=200))
    assert "bottom" not in parsed.text and parsed.text.strip() == "hi"


def _headless(body: str) -> bytes:
    """A mail whose multipart type names no boundary: its parts are all in ``body``."""
    head = "From: a@client.test\r\nSubject: s\r\nContent-Type: multipart/mixed\r\n\r\n"
    return (head + body).encode()


def test_mending_a_multipart_keeps_to_the_limits() -> None:
    """parsers/broken_multipart.py parses a body again with the boundary its parts use:
    the parts it finds count against the message's limits, and so does nesting."""
    parts = "".join(f"--x\r\nContent-Type: text/plain\r\n\r\npart {i}\r\n" for i in range(50))
    mended = parse(_headless(parts + "--x--\r\n"))
    assert "multipart-boundary-mended" in mended.defects
    assert "part 0" in mended.text and "part 49" in mended.text and "--x" not in mended.text
    refused = parse(_headless(parts + "--x--\r\n"), limits=Limits(max_parts=20))
    assert "multipart-not-mended" in refused.defects  # read as the text it is instead
    assert "part 49" in refused.text and not refused.attachments
    nest = "".join(
        f"--b{i}\r\nContent-Type: multipart/mixed; boundary=b{i + 1}\r\n\r\n" for i in range(10)
    )
    deep = parse(_headless(nest + "--b10\r\nContent-Type: text/plain\r\n\r\nbottom\r\n"))
    assert deep.text.strip() == "bottom"
    with_room = Limits(max_mime_depth=5)
    assert "multipart-not-mended" in parse(_headless(nest), limits=with_room).defects
    big_header = f"--x\r\nContent-Type: text/plain\r\nX-Pad: {'p' * 2048}\r\n\r\nhi\r\n--x--\r\n"
    kept = parse(_headless(big_header), limits=Limits(max_header_bytes=1024))
    assert "multipart-not-mended" in kept.defects  # the message is not refused for it


def test_mending_parses_a_body_again_at_most_twice() -> None:
    """Multiparts with no boundary, each inside the last: each would be parsed again
    with everything inside it, the square of the message. Twice its size, then no more."""
    chain = "".join(f"--m{i}\r\nContent-Type: multipart/mixed\r\n\r\n" for i in range(40))
    parsed = parse(_headless(chain + "--m40\r\nContent-Type: text/plain\r\n\r\nend\r\n"))
    assert parsed.defects.count("multipart-boundary-mended") <= 2
    assert "multipart-not-mended" in parsed.defects


def _text_mail(body: str) -> bytes:
    head = "From: a@client.test\r\nSubject: s\r\nContent-Type: text/plain\r\n\r\n"
    return (head + body.replace("\n", "\r\n")).encode()


def test_uuencoded_files_in_a_text_are_files_and_only_whole_blocks_are() -> None:
    """parsers/uuencoded.py: a block that decodes line by line is a file; prose that
    only looks like one stays text."""
    data = bytes(range(256)) * 3
    uu = "".join(binascii.b2a_uu(data[i : i + 45]).decode() for i in range(0, len(data), 45))
    b64 = base64.encodebytes(b"second file").decode()
    parsed = parse(_text_mail(
        f"Two files.\nbegin 600 C:\\tmp\\dump.bin\n{uu}`\nend\nbetween\n"
        f"begin-base64 644 notes.txt\n{b64}====\nafter\n"
    ))  # fmt: skip
    assert [(a.filename, a.content_type, a.data) for a in parsed.attachments] == [
        ("dump.bin", "application/octet-stream", data),
        ("notes.txt", "text/plain", b"second file"),
    ]
    assert parsed.text == "Two files.\nbetween\nafter\n"
    prose = "We begin 644 steps early.\nbegin 644 plan.txt\nthis is not uuencoded at all\nend\n"
    kept = parse(_text_mail(prose))
    assert kept.text == prose and not kept.attachments and "uuencoded-file" not in kept.defects
    many = "begin 644 a.bin\n" * 20_000 + "end\n"  # each line read once, not once a begin
    assert not parse(_text_mail(many)).attachments


def _winmail(data: bytes, ctype: str = "application/ms-tnef") -> bytes:
    return (
        "From: a@client.test\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
        f'--b\r\nContent-Type: {ctype}; name="winmail.dat"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(data).decode()
        + "--b--\r\n"
    ).encode()


def test_a_winmail_dat_that_does_not_read_whole_stays_one_file() -> None:
    """parsers/tnef.py checks every count and length against the bytes left (tnefparse
    loops over a count it is given, bench/results/s32/tnef_dos.py.txt): a property list
    that lies is passed over; a frame that does not fit ends the reading, the files
    before it are taken and the stream is kept too; no file is half read."""
    good = tnef_stream.stream([("a.txt", b"first", None), ("b.txt", b"second", None)])
    lying_count = tnef_stream.attribute(
        1, tnef_stream.MAPI_PROPS, struct.pack("<I", 0xFFFFFFFF) + b"\x03\x00\x00\x10" + bytes(4)
    )
    lying_values = tnef_stream.attribute(
        2,
        tnef_stream.ATTACHMENT,
        struct.pack("<IHHII", 1, 0x1102, 0x3701, 0x7FFFFFFF, 8) + bytes(8),
    )
    for name, data in {"count": good + lying_count, "values": good + lying_values}.items():
        parsed = parse(_winmail(data))  # a lying property list is passed over, unread
        assert [(a.filename, a.data) for a in parsed.attachments] == [
            ("a.txt", b"first"),
            ("b.txt", b"second"),
        ], name
    one = tnef_stream.stream([("a.txt", b"first", None)])
    hostile = {  # a frame that does not fit: the files before it, and the stream as it came
        "truncated": (one + good[len(one) :][:40], [("a.txt", b"first")]),
        "length": (
            one + struct.pack("<BII", 1, 0x9003, 0xFFFFFFF0) + bytes(16),
            [("a.txt", b"first")],
        ),
        "level": (one + tnef_stream.attribute(7, 0x8000, b"x"), [("a.txt", b"first")]),
        "first": (good[:6] + bytes(30), []),
    }
    for name, (data, files) in hostile.items():
        parsed = parse(_winmail(data))
        got = [(a.filename, a.data) for a in parsed.attachments]
        assert got == [*files, ("winmail.dat", data)], name
        assert "tnef-partly-read" in parsed.defects, name
    not_tnef = b"MZ\x90\x00" + bytes(60)
    parsed = parse(_winmail(not_tnef))
    assert [(a.filename, a.data) for a in parsed.attachments] == [("winmail.dat", not_tnef)]
    assert "tnef-unread" in parsed.defects
    read = parse(_winmail(good, "application/octet-stream"))  # relabelled on the way
    assert [(a.filename, a.data) for a in read.attachments] == [
        ("a.txt", b"first"),
        ("b.txt", b"second"),
    ]
    assert read.text.strip() == "See attached."


def test_flowed_text_joins_soft_breaks_by_quote_depth() -> None:
    """RFC 3676: a line ending in a space flows into the next of the same quote depth;
    a stuffed space goes; "-- " stays the signature separator; delsp=yes drops the
    space it added before a break."""
    text = (
        "One para \ngraph.\n \n From here, stuffed.\n> quoted \n> on.\n>> deeper \n"
        "> back\n-- \nsig\n"
    )
    assert unflow(text, delsp=False) == (
        "One para graph.\n\nFrom here, stuffed.\n> quoted on.\n>> deeper \n> back\n-- \nsig\n"
    )
    assert unflow("プリン \nター\n", delsp=True) == "プリンター\n"
    assert unflow("no soft breaks\nat all\n", delsp=False) == "no soft breaks\nat all\n"


@pytest.mark.parametrize("path", FIXTURES, ids=[p.name for p in FIXTURES])
def test_fixtures_parse_clean(path: Path) -> None:
    parsed = parse(path.read_bytes())
    _clean(parsed)
    assert parsed.message_id and parsed.from_addr and parsed.subject


def test_the_stdlibs_own_test_messages_never_break_the_parser() -> None:
    """CPython ships ~60 odd messages for its own email tests (broken boundaries,
    8-bit headers, nested message/rfc822, bad encodings)."""
    try:
        import test.test_email as stdlib_tests
    except ImportError:
        pytest.skip("this Python has no test package")
    folder = Path(os.path.dirname(stdlib_tests.__file__)) / "data"
    files = sorted(folder.glob("msg_*.txt"))
    assert len(files) > 30
    parsed = 0
    for f in files:
        try:
            _clean(parse(f.read_bytes()))
            parsed += 1
        except ParseError:
            pass
    assert parsed >= len(files) - 3  # at most a few are not messages at all


_SEED = (ROOT / "fixtures" / "invoice-with-pdf.eml").read_bytes()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cuts=st.lists(st.tuples(st.integers(0, len(_SEED)), st.binary(max_size=12)), max_size=6),
)
def test_mutated_mail_is_parsed_or_refused_never_raises_otherwise(
    cuts: list[tuple[int, bytes]],
) -> None:
    data = bytearray(_SEED)
    for pos, junk in cuts:  # splice random bytes in (boundaries, headers, base64 all get hit)
        data[pos : pos + len(junk) // 2] = junk
    try:
        parsed = parse(bytes(data))
    except ParseError:
        return
    _clean(parsed)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=2000))
def test_random_bytes_are_parsed_or_refused(data: bytes) -> None:
    try:
        parsed = parse(data)
    except ParseError:
        return
    _clean(parsed)


HTML_REPLIES = sorted((ROOT / "fixtures" / "html-replies").glob("*.html"))


@pytest.mark.parametrize("path", HTML_REPLIES, ids=lambda p: p.stem)
def test_html_reply_loses_the_quoted_notice(path: Path) -> None:
    """One agent's answer per mail client, quoting our notice below it: the quote goes,
    the answer (with its markup) stays; ``html`` keeps the whole mail."""
    markup = path.read_text(encoding="utf-8")
    mail = (
        b"From: Alice <alice@acme.test>\r\nTo: support@acme.test\r\nSubject: Re: x\r\n"
        b"Message-ID: <r@acme.test>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: text/html; charset="utf-8"\r\n\r\n' + markup.encode("utf-8")
    )
    p = parse(mail)
    assert p.html is not None and "QUOTED-NOTICE" in p.html
    assert p.html_reply is not None
    assert "QUOTED-NOTICE" not in p.html_reply and "wrote:" not in p.html_reply
    assert "From:" not in p.html_reply and "<hr" not in p.html_reply
    assert "<b>attached guide</b>" in p.html_reply and "Hello Carol," in p.html_reply
    assert "QUOTED-NOTICE" not in p.reply_text  # the text side agrees


def test_html_without_a_quote_is_the_whole_html() -> None:
    from parsers.html_quotes import drop_leading_lines, strip_html_quote

    assert strip_html_quote("<p>Just this</p>") == "<p>Just this</p>"
    html = "<div>#close</div><div>#priority&nbsp;high</div><div>Fixed &amp; done</div>"
    assert drop_leading_lines(html, ["#close", "#priority high"]) == (
        "<div></div><div></div><div>Fixed &amp; done</div>"
    )
    assert drop_leading_lines("<p>Hello</p><p>#close</p>", ["#close"]) is None


# --- the tree and the decoded bodies, in fewer copies (parsers/mime.py) -----------------

_B64ISH = st.lists(
    st.sampled_from(["QUJD", "RA==", "RA=", "Q", "\r\n", "\n", "\r", " ", "*", "=", "\xff", "é"]),
    max_size=60,
).map("".join)


def _shape(msg):  # type: ignore[no-untyped-def]
    return [
        (p.items(), None if p.is_multipart() else p.get_payload(), [type(d) for d in p.defects])
        for p in msg.walk()
    ]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=_B64ISH, cte=st.sampled_from(["base64", "BASE64", " base64", "7bit", "quoted-printable"])
)
def test_the_tree_and_the_decoded_body_are_the_standard_librarys(body: str, cte: str) -> None:
    """parse_tree feeds the parser in chunks and decoded_payload drops base64's line
    ends in one pass: both give exactly what compat32's own calls give."""
    from email.parser import BytesParser

    from parsers.mime import _POLICY, decoded_payload, parse_tree, written_as_text

    data = (
        "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: {cte}\r\n\r\n"
        f"{body}\r\n--b--\r\n"
    ).encode()
    mine, theirs = parse_tree(data), BytesParser(policy=_POLICY).parsebytes(data)
    assert _shape(mine) == _shape(theirs)
    part, ref = mine.get_payload()[0], theirs.get_payload()[0]
    try:
        want = ref.get_payload(decode=True)
    except Exception as exc:  # decode errors must stay errors (body.py reports them)
        with pytest.raises(type(exc)):
            decoded_payload(part)
        return
    # The two differences, where the stdlib gives garbage or nothing: text that is no
    # base64 comes back as written, its line ends kept; base64 a character too long is
    # decoded without its stray characters, where the stdlib hands back the base64.
    written = ref._payload  # as the parser read it: 8-bit bytes as surrogate escapes
    base64_cte = cte.strip().lower() == "base64"
    if base64_cte and any(isinstance(d, InvalidBase64LengthDefect) for d in ref.defects):
        raw = written.encode("ascii", "surrogateescape").decode("latin-1")
        alphabet = re.sub(r"[^A-Za-z0-9+/]", "", raw)[:-1]
        want = base64.b64decode(alphabet + "=" * (-len(alphabet) % 4))
    if base64_cte and ref.defects and written_as_text(written):
        want = written.encode("ascii", "surrogateescape")
    assert decoded_payload(part) == want
    assert [type(d) for d in part.defects] == [type(d) for d in ref.defects]


def test_a_big_message_is_parsed_whole_across_the_feed_chunks() -> None:
    from parsers.mime import _FEED_CHUNK, parse_tree

    line = "QUJD" * 19 + "\r\n"
    body = line * (3 * _FEED_CHUNK // len(line))
    data = (
        "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi"
        f"\r\n--b\r\nContent-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        f"{body}--b--\r\n"
    ).encode()
    p = parse(data)
    assert p.attachments[0].data == b"ABC" * 19 * (3 * _FEED_CHUNK // len(line))
    assert len(parse_tree(data).get_payload()) == 2


def _alternative(plain: str | None, html: str) -> bytes:
    parts = []
    if plain is not None:
        parts.append(f"--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{plain}\r\n")
    parts.append(f"--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n")
    return (
        "From: Kim <kim@client.test>\r\nTo: support@acme.test\r\nSubject: Toner\r\n"
        'Content-Type: multipart/alternative; boundary="alt"\r\n\r\n'
        + "".join(parts)
        + "--alt--\r\n"
    ).encode()


def test_an_alternatives_html_is_rendered_only_when_it_is_the_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Most mail carries its text twice (plain and HTML): the HTML is kept for the agents'
    view, and rendered to text (html.parser, ~0.1 ms a KB) only when no plain text is
    there to be the ticket's text."""
    from parsers import core

    rendered: list[str] = []
    real = core.html_to_text

    def counting(markup: str, defects: list[str]) -> str:
        rendered.append(markup)
        return real(markup, defects)

    monkeypatch.setattr(core, "html_to_text", counting)
    html = "<p>The toner is <b>empty</b>.</p><p>Kim</p>"
    both = parse(_alternative("The toner is empty.\r\n\r\nKim", html))
    assert rendered == [] and both.text.startswith("The toner is empty.")
    assert both.html is not None and "<b>empty</b>" in both.html
    only_html = parse(_alternative(None, html))
    assert rendered == [html]
    assert only_html.text == "The toner is empty.\n\nKim\n"


# --- a message's header alone (parsers.mime.head_of) ---------------------------------

_HEAD_CASES = [
    b"From: a@example.com\r\nSubject: crlf\r\n\r\nbody\r\n\r\nmore\r\n",
    b"From: a@example.com\nSubject: lf\n\nbody\n\nmore\n",
    b"From: a@example.com\nSubject: mixed\n\r\nbody\n",
    b"From: a@example.com\r\nSubject: no body\r\n",
    b"From: a@example.com\r\nSubject: header only, ends in its empty line\r\n\r\n",
    b"\r\nFrom: not-a-header@example.com\r\n\r\nbody",  # an empty header
    b"Subject: folded\r\n over two lines\r\nX-8bit: caf\xc3\xa9\r\n\r\nbody",
    b"X-Long: " + b"a" * 70000 + b"\r\n\r\nbody",  # longer than the limit
    b"Subject: " + b"b" * 65520 + b"\r\n\r\nbody",  # its empty line across the limit
]


@pytest.mark.parametrize(
    "data",
    _HEAD_CASES
    + [p.read_bytes() for p in FIXTURES + sorted((ROOT / "fixtures" / "real").glob("*.eml"))],
)
def test_head_of_parses_to_the_same_header_as_the_message_cut_at_the_limit(data: bytes) -> None:
    """Return-Path, Delivered-To and a front MTA's results are read from ``head_of``:
    the header fields must be what the header parser read from the whole first 64 KiB."""
    from email.parser import BytesHeaderParser
    from email.policy import compat32

    from parsers.mime import head_of

    def fields(raw: bytes) -> list[tuple[str, str]]:
        return [(k, str(v)) for k, v in BytesHeaderParser(policy=compat32).parsebytes(raw).items()]

    assert fields(head_of(data)) == fields(data[:65536])
    assert len(head_of(data)) <= 65536


@pytest.mark.parametrize(
    ("markup", "text"),
    [
        # Outlook on the web: the margins inline
        ('<p style="margin-top:0;margin-bottom:0">Hi,</p>'
         '<p style="margin-top:0px;margin-bottom:0px">the VPN drops.</p>',
         "Hi,\nthe VPN drops.\n"),
        ('<p style="margin:0cm">a</p><p style="margin: 0 0 0 36pt">b</p>', "a\nb\n"),
        ('<p style="margin: 0 0 1em 0">a</p><p style="margin:0.5em">b</p>', "a\n\nb\n"),
        ("<p>Thunderbird's</p><p>paragraphs</p>", "Thunderbird's\n\nparagraphs\n"),
        # Word: a blank line is a paragraph holding only &nbsp;
        ('<p class="MsoNormal">a<o:p></o:p></p><p class="MsoNormal"><o:p>&nbsp;</o:p></p>'
         '<p class="MsoNormal">b</p><p class="MsoListParagraph">c</p>', "a\n\nb\nc\n"),
    ],
)  # fmt: skip
def test_a_paragraph_without_margins_is_a_line(markup: str, text: str) -> None:
    assert html_to_text(markup, []) == text


def _related(html: str, *parts: str) -> bytes:
    head = (
        "From: a@b.test\r\nTo: s@acme.test\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/related; boundary="r"\r\n\r\n'
        f"--r\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n"
    )
    return (head + "".join(f"--r\r\n{p}\r\n" for p in parts) + "--r--\r\n").encode()


def _image(name: str, cid: str, disposition: str = "") -> str:
    return (
        f'Content-Type: image/jpeg; name="{name}"\r\nContent-ID: <{cid}>\r\n{disposition}'
        "Content-Transfer-Encoding: base64\r\n\r\n/9j/4AAQ"
    )


def test_a_part_with_a_content_id_is_inline_only_when_the_html_shows_it() -> None:
    """Apple Mail gives attachments a Content-ID inside multipart/related; a sender's
    image may carry a cid its HTML does not name. Sent on as inline, an unshown part is
    hidden by the agents' mail clients: it is a file."""
    p = parse(
        _related(
            '<p>See <img src="CID:logo%40acme">.</p>',
            _image("logo.jpg", "logo@acme"),  # shown: the URL's case and %-encoding aside
            _image("photo.jpg", "photo@home", "Content-Disposition: attachment\r\n"),
            _image("scan.jpg", "scan@home"),  # named by no cid: URL
            _image("sig.jpg", "sig@home", "Content-Disposition: inline\r\n"),
        )
    )
    assert [(a.filename, a.inline) for a in p.attachments] == [
        ("logo.jpg", True),
        ("photo.jpg", False),
        ("scan.jpg", False),
        ("sig.jpg", False),
    ]


def _names(part: str) -> list[str]:
    """The file names the parser gives a mail whose second part is ``part``."""
    return [a.filename for a in parse(_mixed(part)).attachments]


def _mixed(*parts: str) -> bytes:
    head = (
        "From: a@b.test\r\nTo: s@acme.test\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\nContent-Type: text/plain\r\n'
        "\r\nSee the file.\r\n"
    )
    return (head + "".join(f"--m\r\n{p}\r\n" for p in parts) + "--m--\r\n").encode("latin-1")


@pytest.mark.parametrize("begin", ["begin 644 hello.txt\r\n", ""])
def test_an_x_uuencode_part_is_decoded_with_or_without_its_begin_line(begin: str) -> None:
    """Without ``begin``/``end`` the stdlib passed the encoded text through as the file."""
    end = "`\r\nend\r\n" if begin else ""
    p = parse(
        _mixed(
            'Content-Type: application/octet-stream; name="hello.txt"\r\n'
            f"Content-Transfer-Encoding: x-uuencode\r\n\r\n{begin},2&5L;&\\@6F%M;6%D\r\n{end}"
        )
    )
    assert [(a.filename, a.data) for a in p.attachments] == [("hello.txt", b"Hello Zammad")]


@pytest.mark.parametrize(
    ("param", "name"),
    [
        ("filename*=us-ascii''W%F6lbung.jpg", "Wölbung.jpg"),  # 8-bit under an ASCII label
        ("filename*=iso-8859-1''%C3%BCbersicht.pdf", "übersicht.pdf"),  # UTF-8 labelled Latin-1
        ("filename*=utf-8''%E8%AB%8B%E6%B1%82.pdf", "請求.pdf"),
        ("filename*0*=utf-8''%C3%A9t; filename*1=\"%C3%A9.pdf\"", "ét%C3%A9.pdf"),  # *1 not encoded
    ],
)
def test_an_rfc2231_file_name_is_read_as_its_writer_meant(param: str, name: str) -> None:
    assert _names(
        f"Content-Type: image/jpeg\r\nContent-Disposition: attachment; {param}\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n/9j/4AAQ"
    ) == [name]


@pytest.mark.parametrize(
    ("head", "name"),
    [
        ("", "Invoice 118-2026 =- paid.eml"),  # its subject, a path's slashes made dashes
        ('; filename="original.eml"', "original.eml"),  # a name of its own first
    ],
)
def test_an_attached_message_is_named_by_its_subject(head: str, name: str) -> None:
    assert _names(
        f"Content-Type: message/rfc822\r\nContent-Disposition: attachment{head}\r\n\r\n"
        "From: c@d.test\r\nSubject: =?utf-8?q?Invoice_118/2026_=3D/_paid?=\r\n\r\nold\r\n"
    ) == [name]


def test_a_long_field_wrapped_without_indent_stays_in_the_header() -> None:
    """A list archive's copy: a DKIM signature's value wrapped over a dozen unindented
    lines, the fields after it. The body starts at the blank line, as clients read it."""
    signature = "\r\n".join(
        ["DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;", "d=gmail.com; s=20120113;"]
        + [f"b={'A' * 60}{i}" for i in range(10)]
    )
    raw = (
        f"Return-Path: <a@b.test>\r\n{signature}\r\nMIME-Version: 1.0\r\n"
        "From: Ferenc <ferenc@b.test>\r\nSubject: Re: [RFC] constructors\r\n"
        "Content-Type: text/plain\r\n\r\n+1 from me.\r\n"
    ).encode()
    p = parse(raw)
    assert (p.from_addr, p.subject, p.text.strip()) == (
        "ferenc@b.test",
        "Re: [RFC] constructors",
        "+1 from me.",
    )
    assert "header-line-not-indented" in p.defects


def test_a_header_without_its_blank_line_keeps_its_body() -> None:
    """A line no field follows is where the body starts: it is not folded into the header."""
    p = parse(b"From: a@b.test\r\nSubject: hi\r\nHello,\r\nthe printer jams.\r\n")
    assert p.subject == "hi" and "the printer jams." in p.text


def test_a_file_name_wrapped_in_its_encoded_word_keeps_its_words_apart() -> None:
    word = "=?UTF-8?b?S29udG91dHNrcmlmdCBmb3IgMTUwNi4xNC45MDQ2NgpCZWRyaWZ0c2tvbnRvLnBkZg==?="
    assert _names(
        f'Content-Type: application/pdf\r\nContent-Disposition: attachment; filename="{word}"'
        "\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK"
    ) == ["Kontoutskrift for 1506.14.90466 Bedriftskonto.pdf"]


def _alternative_mail(plain: str, html: str) -> bytes:
    return (
        "From: a@b.test\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/alternative; boundary="a"\r\n\r\n'
        f"--a\r\nContent-Type: text/plain\r\n\r\n{plain}\r\n"
        f"--a\r\nContent-Type: text/html\r\n\r\n{html}\r\n--a--\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("plain", "shown"),
    [
        ("This is an HTML message. Please use an HTML capable mail program to read it.", True),
        ("Your mail program cannot display HTML: view this e-mail in your browser.", True),
        ("HTML newsletter could be read here: http://news.example.test/42", True),
        ("The printer jams on every second page.", False),  # a plain part of its own
    ],
)
def test_a_plain_part_that_only_points_to_the_html_gives_way_to_it(plain: str, shown: bool) -> None:
    p = parse(_alternative_mail(plain, "<p>Hello Anna,</p><p>the part ships <b>Monday</b>.</p>"))
    assert ("the part ships Monday." in p.text) is shown
    assert (plain in p.text) is not shown


def test_a_boundary_folded_inside_its_quotes_still_finds_the_parts() -> None:
    """Outlook 2000 folded its long boundary parameter inside the quotes; the parts'
    delimiter lines hold the space the fold left. Before: the whole mail as text."""
    raw = (
        b"From: a@b.test\r\nSubject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed;\r\n"
        b'    boundary="----=_NextPart\r\n _000_0002_01BFC036.AE309650"\r\n\r\n'
        b"This is a multi-part message in MIME format.\r\n\r\n"
        b"------=_NextPart _000_0002_01BFC036.AE309650\r\nContent-Type: text/plain\r\n\r\n"
        b"The Hare and the Tortoise\r\n\r\n"
        b"------=_NextPart _000_0002_01BFC036.AE309650\r\n"
        b'Content-Type: image/png; name="redball.png"\r\nContent-Transfer-Encoding: base64\r\n'
        b"\r\niVBORw0KGgo=\r\n\r\n------=_NextPart _000_0002_01BFC036.AE309650--\r\n"
    )
    p = parse(raw)
    assert p.text.strip() == "The Hare and the Tortoise"
    assert [a.filename for a in p.attachments] == ["redball.png"]


def test_an_attached_message_whose_header_has_a_blank_line_before_its_type() -> None:
    """Exchange writes a blank line into the header of a message forwarded as an
    attachment: its Content-Type and parts were read as text, base64 and all."""
    inner = (
        "From: Microsoft <foo@example.test>\r\nSubject: Updates to our terms of use\r\n"
        "X-Message-Delivery: Vj0xLjE7dXM9MDs=\r\n\r\n"
        'Content-Type: multipart/alternative;\r\n\tboundary="_000_dd32_"\r\nMIME-Version: 1.0\r\n'
        "\r\n--_000_dd32_\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\ndGhpcyBpcyBhIHRlc3QK\r\n\r\n--_000_dd32_--\r\n"
    )
    p = parse(
        _mixed(f"Content-Type: message/rfc822\r\nContent-Disposition: attachment\r\n\r\n{inner}")
    )
    assert "this is a test" in p.text
    assert "dGhpcyBpcyBhIHRlc3QK" not in p.text and "_000_dd32_" not in p.text
    assert [a.filename for a in p.attachments] == ["Updates to our terms of use.eml"]
    assert "header-in-body-mended" in p.defects


def test_utf8_with_a_few_stray_bytes_stays_utf8() -> None:
    """A mailing list's Latin-1 footer under a UTF-8 mail: the stray byte is read alone,
    not the whole text in a guessed charset ("GrÃ¼ÃŸe" for every letter)."""
    raw = "Grüße aus München.\n-- \nList: ".encode() + b"caf\xe9\n"
    head = b"From: a@b.test\r\nSubject: x\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    p = parse(head + raw)
    assert p.text == "Grüße aus München.\n-- \nList: café\n"
    assert "charset-mismatch:utf-8" in p.defects


def test_text_enriched_is_a_body_not_a_file() -> None:
    p = parse(
        _alternative_mail("Hello Anna", "<p>Hello Anna</p>").replace(b"text/html", b"text/enriched")
    )
    assert p.attachments == () and p.text.strip() == "Hello Anna"
    alone = b"From: a@b.test\r\nSubject: x\r\nContent-Type: text/enriched\r\n\r\n"
    p = parse(alone + b"<bold>Hello</bold> <<you>\r\nsame line\r\n\r\nnew paragraph\r\n")
    assert p.text == "Hello <you> same line\nnew paragraph "


@pytest.mark.parametrize(
    ("headers", "name"),
    [
        ("Content-Type: image/jpeg\r\nContent-Location: Photo25.jpg", "Photo25.jpg"),
        (
            "Content-Type: image/jpg\r\nContent-Location: http://x.test/a/some%20file.jpg?x=1",
            "some file.jpg",
        ),
        ("Content-Type: image/jpg", "part-2.jpg"),
        ("Content-Type: application/pgp-signature", "signature.asc"),
        ("Content-Type: application/pkcs7-signature", "smime.p7s"),
        ("Content-Type: application/msword", "part-2.doc"),
    ],
)
def test_a_part_without_a_file_name_is_named_as_clients_name_it(headers: str, name: str) -> None:
    assert _names(f"{headers}\r\nContent-Transfer-Encoding: base64\r\n\r\n/9j/4AAQ") == [name]


@pytest.mark.parametrize(
    ("cte", "body", "text"),
    [
        ("quoted-printable              ", "Move =E2=99=9A to =E2=99=9B", "Move ♚ to ♛"),
        ("base64\t", "TW92ZSDimZo=", "Move ♚"),
    ],
)
def test_a_transfer_encoding_with_trailing_blanks_is_decoded(
    cte: str, body: str, text: str
) -> None:
    """The stdlib compares the field as written: "base64 " left the body encoded."""
    raw = (
        "From: a@b.test\r\nSubject: x\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Transfer-Encoding: {cte}\r\n\r\n{body}\r\n"
    ).encode()
    assert parse(raw).text.strip() == text


def test_a_message_part_sent_base64_is_read_as_the_message() -> None:
    """RFC 2046 forbids it, mailers do it: its text was the base64."""
    inner = "Subject: inner\nFrom: c@d.test\n\ninner body\n"
    encoded = base64.b64encode(inner.encode()).decode()
    p = parse(
        _mixed(
            f"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{encoded}"
        )
    )
    assert "inner body" in p.text and encoded not in p.text
    assert "encoded-message-decoded" in p.defects


def test_an_empty_plain_alternative_does_not_hide_the_html() -> None:
    """A missing closing delimiter leaves an empty last part; a plain part may be empty."""
    p = parse(_alternative_mail("", "<p>HTML Body</p>"))
    assert p.text.strip() == "HTML Body"


def test_an_empty_forwarded_message_adds_no_forward_header() -> None:
    p = parse(_mixed("Content-Type: message/rfc822\r\n\r\n"))
    assert "Forwarded message" not in p.text and p.text.strip() == "See the file."


def test_parts_after_an_early_closing_line_are_not_lost() -> None:
    """An inner multipart that reuses its outer boundary closes the outer one early: the
    parts after it, a file among them, were in the epilogue, neither shown nor scanned."""
    raw = (
        b"From: a@b.test\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n'
        b'--B\r\nContent-Type: multipart/alternative; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\nSee the zip.\r\n"
        b"--B\r\nContent-Type: text/html\r\n\r\n<p>See the zip.</p>\r\n--B--\r\n\r\n"
        b'--B\r\nContent-Type: application/zip; name="x.zip"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b"\r\nUEsDBAo=\r\n--B--\r\n"
    )
    p = parse(raw)
    assert [(a.filename, a.data) for a in p.attachments] == [("x.zip", b"PK\x03\x04\n")]
    assert "See the zip." in p.text and "epilogue-parts-mended" in p.defects


def test_an_html_reply_below_its_quote_is_sent_as_text() -> None:
    """Thunderbird's default: the answer below the quote. Cut at the quote's marker the
    HTML holds nothing, and the notice's or relay's HTML part would be empty."""
    p = parse(
        _alternative_mail(
            "Am 04.12.26 um 10:15 schrieb ACME Support:\r\n> Which model?\r\n\r\nA LaserJet.",
            '<div class="moz-cite-prefix">Am 04.12.26 um 10:15 schrieb ACME Support:<br></div>'
            '<blockquote type="cite">Which model?</blockquote><p>A LaserJet.</p>',
        )
    )
    assert p.reply_text == "A LaserJet." and p.html_reply is None
    assert p.html is not None and "A LaserJet." in p.html


def test_two_mailboxes_without_a_comma_are_two() -> None:
    p = parse(
        b"From: Bob Dunite <bob@extern.test> Bobby Dunite <bobby@extern.test>\r\n"
        b"To: a <a@acme.test> b <b@acme.test>\r\nSubject: x\r\n\r\nhi\r\n"
    )
    assert (p.from_name, p.from_addr) == ("Bob Dunite", "bob@extern.test")
    assert p.to == ("a@acme.test", "b@acme.test") and "multiple-from" in p.defects


def test_a_content_type_without_a_semicolon_before_its_parameter() -> None:
    assert (
        parse(
            _mixed(
                'Content-Type: application/pdf name="x.pdf"\r\nContent-Disposition: attachment; '
                'filename="x.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK'
            )
        )
        .attachments[0]
        .content_type
        == "application/pdf"
    )


def test_text_labelled_base64_keeps_its_lines() -> None:
    """No base64 at all: the stdlib dropped its line ends and ran the words together."""
    head = b"From: a@b.test\r\nSubject: x\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    p = parse(head + b"ploozdect nispplul fruftsist\r\nploystoov smohsless\r\n")
    assert p.text.split("\n")[:2] == ["ploozdect nispplul fruftsist", "ploystoov smohsless"]


def test_base64_one_character_too_long_is_decoded() -> None:
    """A stray last character: the stdlib gives up and hands back the base64 itself."""
    encoded = base64.b64encode(b"<html><body>Here goes some text</body></html>").decode()
    head = b"From: a@b.test\r\nSubject: x\r\nContent-Type: text/html\r\n"
    p = parse(head + b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded.encode() + b"I\r\n")
    assert p.text.strip() == "Here goes some text"
