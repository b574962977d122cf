"""``parse``: raw bytes in, one frozen ParsedMessage out, or a ParseError.

Order matters: limits are checked on the raw bytes first (bounded time and
memory), then the full parse runs; anything unexpected from the libraries
falls back to a headers-and-raw-text view so a strange message is still
stored, and only input with nothing in it is Unreadable.
"""

from __future__ import annotations

import re
from dataclasses import replace
from email.message import Message
from urllib.parse import unquote

from parsers.addresses import normalise_msg_id, parse_address, parse_address_list, split_list
from parsers.autoreply import classify
from parsers.body import walk
from parsers.broken_multipart import mend
from parsers.dates import iso_date
from parsers.errors import ParseError, Unreadable
from parsers.header_index import HeaderIndex
from parsers.html import html_to_text, sanitise
from parsers.html_quotes import strip_html_quote
from parsers.legacy_headers import decode_raw_headers
from parsers.limits import Limits, prescan
from parsers.mime import decode_bytes, decode_words, header_text, parse_tree
from parsers.quotes import is_forward, read_reply
from parsers.thread_hints import build_hints
from parsers.types import Attachment, ParsedMessage

__all__ = ["parse"]

_DEFAULT_LIMITS = Limits()
_BAD_CHARS = re.compile(r"[\x00\ud800-\udfff]")
_BLANKS = re.compile(r"[\r\n\t]+")
_SURROGATES = re.compile(r"[\ud800-\udfff]")


def parse(data: bytes, *, limits: Limits | None = None) -> ParsedMessage:
    """Parse one raw message; raises only ParseError subclasses."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise Unreadable("input is not bytes")
    data = bytes(data)
    if not data.strip():
        raise Unreadable("empty message")
    limits = limits or _DEFAULT_LIMITS
    prescan(data, limits)
    try:
        return _parse(data, [], limits)
    except ParseError:
        raise
    except RecursionError as exc:  # cannot happen within the limits; never crash intake
        raise Unreadable("structure too complex") from exc
    except Exception as exc:
        try:
            return _fallback(data, f"parser-fallback:{type(exc).__name__}")
        except Exception as exc2:
            raise Unreadable(f"unreadable message: {type(exc).__name__}") from exc2


def _parse(data: bytes, defects: list[str], limits: Limits) -> ParsedMessage:
    msg = parse_tree(_indent_stray_lines(_skip_leading_junk(data, defects), defects))
    mend(msg, defects, limits, len(data))
    decode_raw_headers(msg, defects)
    if not msg.keys() and not str(msg.get_payload() or "").strip():
        raise Unreadable("no headers and no body")
    found = walk(msg, defects)
    texts = [html_to_text(t, defects) if kind == "html" else t for kind, t in found.texts]
    text = "\n".join(t for t in texts if t)
    html = sanitise(found.html) if found.html is not None else None
    html_reply = html
    if found.html is not None:
        stripped = strip_html_quote(found.html)
        if len(stripped) != len(found.html):
            # Nothing above the quote: a reply below it (Thunderbird's default), which
            # the HTML cut would lose whole; the text (reply_text) carries it alone.
            html_reply = sanitise(stripped) if _shows_text(stripped) else None
    attachments = found.attachments
    if found.html is not None and any(a.content_id for a in attachments):
        shown = {unquote(c).lower() for c in _CID_URL.findall(found.html)}
        attachments = [_as_shown(a, shown) for a in attachments]
    return _assemble(
        msg,
        defects,
        text,
        html,
        tuple(attachments),
        found.part_types,
        found.returned,
        html_reply=html_reply,
        dsn=tuple(found.dsn),
    )


_MARKUP = re.compile(r"<[^>]*>|&nbsp;|&#160;|&#xa0;|\s", re.IGNORECASE)


def _shows_text(markup: str) -> bool:
    return bool(_MARKUP.sub("", markup))


# A cid: URL (RFC 2392) in the HTML: the Content-ID it shows, URL-encoded.
_CID_URL = re.compile(r"\bcid:([^\s\"'<>()]+)", re.IGNORECASE)


def _as_shown(att: Attachment, shown: set[str]) -> Attachment:
    """A part with a Content-ID is inline when the HTML shows it (cid:), and only then.

    Outside multipart/related too; and a part inside it that the HTML never shows (an
    Apple Mail attachment with a Content-ID, a sender's image whose cid the HTML does not
    name) is a file to list and send on as one, or the agents' mail clients hide it."""
    inline = att.content_id is not None and att.content_id.lower() in shown
    return att if att.inline == inline else replace(att, inline=inline)


def _assemble(
    msg: Message,
    defects: list[str],
    text: str,
    html: str | None,
    attachments: tuple,
    part_types: set[str],
    returned: list[Message],
    *,
    html_reply: str | None = None,
    dsn: tuple[tuple[str, str, str], ...] = (),
) -> ParsedMessage:
    """Every field in one construction: a frozen dataclass's ``replace`` costs as much
    as building it, and the parse worker pays it per message."""
    heads = HeaderIndex(msg)
    subject = decode_words(header_text(heads.get("Subject"), defects), defects)
    subject = " ".join(_BLANKS.sub(" ", subject).split(" ")).strip()
    from_name, from_addr = _sender(heads, defects)
    if not from_addr:
        defects.append("no-from")
    message_id = normalise_msg_id(header_text(heads.get("Message-ID"), defects))
    if message_id is None:
        defects.append("no-message-id")
    kind = classify(msg, heads, from_addr, part_types)
    recipients = [
        header_text(v, defects)
        for name in ("To", "Cc", "Delivered-To")
        for v in (heads.get_all(name) or [])
    ]
    bounce_sources = []
    if kind == "bounce":
        for r in returned:
            subject_back = decode_words(header_text(r.get("Subject"), defects), [])
            bounce_sources.append((r, subject_back.strip()))
    hints = build_hints(
        in_reply_to=header_text(heads.get("In-Reply-To"), defects),
        references=" ".join(header_text(v, defects) for v in heads.get_all("References") or []),
        subject=subject,
        recipients=recipients,
        returned=bounce_sources,
    )
    auto = heads.get("Auto-Submitted")
    clean = _Cleaner(defects)
    text = clean(text)
    reply, forwarded = read_reply(text, forward=is_forward(subject))
    if forwarded:  # the forwarded mail is what the sender wants read, in HTML too
        html_reply = html
    fields = dict(  # in this order: the cleaner notes its defects as it goes
        message_id=message_id,
        subject=clean(subject),
        from_addr=clean(from_addr),
        from_name=clean(" ".join(from_name.split())),
        to=tuple(clean(a) for a in _addresses(heads, "To", defects)),
        cc=tuple(clean(a) for a in _addresses(heads, "Cc", defects)),
        reply_to=tuple(clean(a) for a in _addresses(heads, "Reply-To", defects)),
        date=_date(header_text(heads.get("Date"), defects), defects),
        kind=kind,
        text=text,
        reply_text=clean(reply),
        html=clean(html) if html is not None else None,
        attachments=tuple(
            a if a.filename == clean(a.filename) else _rename(a, clean) for a in attachments
        ),
        thread_hints=hints,
        received_count=len(heads.get_all("Received") or []),
        auto_submitted=clean(header_text(auto, defects).strip().lower())
        if auto is not None
        else None,
        loop_markers=tuple(
            clean(header_text(v, defects).strip().lower()) for v in heads.get_all("X-Loop") or []
        ),
        content_types=tuple(sorted(clean(t) for t in part_types)),
        headers=_headers(heads, clean),
    )
    return ParsedMessage(
        **fields, defects=tuple(dict.fromkeys(defects)), dsn=dsn, html_reply=html_reply
    )


def _sender(heads: HeaderIndex, defects: list[str]) -> tuple[str, str]:
    """(name, address) of the first usable mailbox of the From headers.

    A broken relay may put an unparseable From above the real one; clients
    show the first one they can read, and so do we (with a defect noted).
    """
    values = heads.get_all("From") or []
    mailboxes = [m for v in values for m in split_list(header_text(v, defects))]
    if len(mailboxes) > 1:
        defects.append("multiple-from")
    for mailbox in mailboxes:
        name, addr = parse_address(mailbox, defects)
        if addr:
            return name, addr
    return "", ""


# A header line; and the names that show a block of them is a message's header.
_HEADER_LINE = re.compile(rb"^[!-9;-~]+:")
_KNOWN = re.compile(
    rb"^(?:from|to|subject|date|received|return-path|message-id|mime-version):", re.IGNORECASE
)


# In a header: a line that is no field, no continuation and not the blank line after.
_STRAY = re.compile(rb"\n(?![ \t]|[!-9;-~]+:|\r?\n|\r?$)")
_FIELD_NEXT = re.compile(
    rb"^(?:from|to|cc|subject|date|received|return-path|message-id|mime-version|reply-to"
    rb"|delivered-to|content-[a-z-]+|x-[a-z0-9-]+|dkim-signature|arc-[a-z-]+"
    rb"|authentication-results|in-reply-to|references):",
    re.IGNORECASE,
)


def _indent_stray_lines(data: bytes, defects: list[str]) -> bytes:
    """Read a field's unindented next line as its continuation, when fields follow it.

    PHP mailers and spam filters wrap a long field (``Received: from x`` then ``by y
    with ESMTP``) without indenting; the stdlib ends the header at such a line, and
    sender, subject and the body's type become body text. A line that no known field
    follows (before a blank line, within 24 lines: a DKIM signature's wrapped value
    runs to a dozen) is where the body begins, in a header without its blank line:
    the rest is left as it is.
    """
    blank = re.search(rb"\n\r?\n", data)
    end = blank.start() if blank else min(len(data), 65536)
    if _STRAY.search(data, 0, end) is None:  # nearly all mail: one C-level scan
        return data
    lines = data[:end].split(b"\n")
    fixed = 0
    for i in range(1, len(lines)):
        line = lines[i]
        if line[:1] in (b" ", b"\t") or _HEADER_LINE.match(line) or not line.strip():
            continue
        if not _field_follows(lines, i + 1):
            break
        lines[i] = b" " + line
        fixed += 1
    if not fixed:
        return data
    defects.append("header-line-not-indented")
    return b"\n".join(lines) + data[end:]


def _field_follows(lines: list[bytes], start: int) -> bool:
    for line in lines[start : start + 24]:
        if not line.strip():
            return False
        if _FIELD_NEXT.match(line):
            return True
    return False


def _skip_leading_junk(data: bytes, defects: list[str]) -> bytes:
    """Drop a few lines before the header that are no header, as clients do.

    A stray line (an SMTP banner, a broken client's status line) would make the
    whole header the body. An mbox ``From `` line the stdlib parser handles.
    """
    if _HEADER_LINE.match(data) or data.startswith(b"From "):
        return data
    lines = data.split(b"\n", 6)[:6]
    for i, line in enumerate(lines[1:5], 1):
        if not line.strip():
            return data  # a blank line first: there is no header to find
        if _HEADER_LINE.match(line) and any(_KNOWN.match(x) for x in lines[i:]):
            defects.append("junk-before-header")
            return data[sum(len(x) + 1 for x in lines[:i]) :]
    return data


_MAX_HEADERS = 200
_MAX_HEADER_VALUE = 2000


def _headers(heads: HeaderIndex, clean: _Cleaner) -> tuple[tuple[str, str], ...]:
    """Decoded, one line each, bounded: a rule's regex must never meet a megabyte header."""
    out: list[tuple[str, str]] = []
    for name, value in heads.items[:_MAX_HEADERS]:
        if isinstance(value, str) and value.isascii() and "=?" not in value:
            text = value  # nothing to decode; unfolding is in the split below
        else:
            text = decode_words(header_text(value, []), [])
        text = " ".join(text.split())[:_MAX_HEADER_VALUE]
        out.append((clean(str(name)).strip().lower(), clean(text)))
    return tuple(out)


class _Cleaner:
    """No NUL and no lone surrogate may reach the store (PostgreSQL rejects NUL)."""

    def __init__(self, defects: list[str]) -> None:
        self.defects = defects

    def __call__(self, s: str) -> str:
        if "\x00" not in s and (s.isascii() or not _BAD_CHARS.search(s)):
            return s  # isascii is a C loop: most text never meets the regex
        if "\x00" in s:
            self.defects.append("nul-bytes")
        if _SURROGATES.search(s):
            self.defects.append("lone-surrogates")
        return _BAD_CHARS.sub("\ufffd", s)


def _rename(att: Attachment, clean: _Cleaner) -> Attachment:
    return replace(att, filename=clean(att.filename))


def _addresses(heads: HeaderIndex, name: str, defects: list[str]) -> tuple[str, ...]:
    out: list[str] = []
    for value in heads.get_all(name) or []:
        for a in parse_address_list(header_text(value, defects), defects):
            if a not in out:
                out.append(a)
    return tuple(out)


def _date(value: str, defects: list[str]) -> str | None:
    if not value.strip():
        return None
    try:
        return iso_date(value.strip())
    except (ValueError, TypeError, IndexError, OverflowError):
        defects.append("bad-date")
        return None


def _fallback(data: bytes, reason: str) -> ParsedMessage:
    """Headers as far as they parse, the rest as UTF-8 text: better stored than lost."""
    defects = [reason]
    head, sep, body = data.replace(b"\r\n", b"\n").partition(b"\n\n")
    if not sep:
        head, body = b"", data
    msg = parse_tree(head + b"\n\n")
    text = decode_bytes(body, "utf-8", defects)
    return _assemble(msg, defects, text, None, (), set(), [])
