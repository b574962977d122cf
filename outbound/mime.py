"""The MIME writer for the mails the gateway sends: headers, a text body, and when
there are any an HTML alternative, inline images and attachments.

Written out directly: the stdlib generator (even compat32) folded every header
through Header objects and cost a fifth of the writer's time per message, and
these mails are built inside the writer's transaction. Non-ASCII header text goes
as RFC 2047 B-words written here (``encoded_words``: email.header's Header.encode
cost ~6% of figure 1's CPU per message); an internationalised address (RFC 6532) is
written as UTF-8, as it must be, and such a mail can only go with SMTPUTF8
(``needs_smtputf8``). A text part goes as it is (7bit, or 8bit for UTF-8) when
its lines allow, so a link copied from the raw mail works; quoted-printable
only for a line over 998 octets or a stray control character (``encode_text``).
Attachments are base64: their bytes arrive exactly as stored.
tests/test_compose.py reads every kind of mail back through the stdlib parser.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.header import Header
from email.utils import encode_rfc2231, formataddr, getaddresses, quote
from functools import cached_property, lru_cache

from outbound.dates import mail_date
from outbound.random_ids import random_hex
from routing.config import Tenant

__all__ = [
    "Body",
    "Composed",
    "MailContext",
    "Part",
    "as_7bit",
    "build",
    "clean",
    "downgrade",
    "encode_text",
    "mailbox",
    "mailboxes",
    "needs_8bitmime",
    "needs_smtputf8",
    "new_message_id",
    "render",
    "thread_index",
]


class Utf8(str):
    """A header value written as UTF-8 (RFC 6532), not as RFC 2047 words: an address
    with a UTF-8 local part or domain has no other form."""


@dataclass(frozen=True, slots=True)
class MailContext:
    """What every mail about one ticket shares: whose it is, where our Message-IDs
    end, the ticket, the client's thread it continues and the moment it is made."""

    tenant: Tenant
    hostname: str
    ref: str
    now: datetime
    in_reply_to: str | None = None
    references: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class Composed:
    """A mail ready for the outbox: its Message-ID, envelope and bytes."""

    message_id: str
    mail_from: str  # envelope sender; "" for the null sender (RFC 3834 section 3)
    rcpt_tos: tuple[str, ...]
    body: bytes


@dataclass(frozen=True)
class Part:
    """A file a mail carries: an attachment, or an inline image its HTML shows by
    ``cid:`` (then it goes in multipart/related with that Content-ID).

    Its base64 is made once however many mails carry it (one notice per agent):
    about 17 ms a MiB, in the writer's transaction."""

    filename: str
    content_type: str
    data: bytes = field(repr=False)
    content_id: str | None = None
    inline: bool = False

    @cached_property
    def encoded(self) -> bytes:
        return base64.encodebytes(self.data).replace(b"\n", b"\r\n")


@dataclass(frozen=True, slots=True)
class Body:
    """What a mail says: the text, an HTML alternative when there is one, the files."""

    text: str
    html: str | None = None
    parts: Sequence[Part] = ()


def new_message_id(kind: str, hostname: str) -> str:
    """Unguessable (80 random bits: a reply's References must not be forged into a
    ticket), but in the order they are made: the microseconds first. The outbox's
    unique index and the threading table take each new one at the end of their range,
    so a batch of acknowledgements dirties one index page, not one page each."""
    return f"<{kind}.{time.time_ns() // 1000:013x}{random_hex(10)}@{hostname}>"


def clean(value: str) -> str:
    """No CR, LF or NUL ever reaches a header we write (header injection)."""
    return " ".join(value.replace("\x00", " ").split())


def mailboxes(pairs: Sequence[tuple[str, str]]) -> str:
    """An address header's value: RFC 2047 names beside ASCII addresses; once any
    address is UTF-8, the whole value is (RFC 6532), names included."""
    if all(a.isascii() for _, a in pairs):
        return ", ".join([mailbox(n, a) for n, a in pairs])
    return Utf8(", ".join(f'"{quote(clean(n))}" <{a}>' if n else a for n, a in pairs))


@lru_cache(maxsize=4096)
def mailbox(name: str, address: str) -> str:
    """One ASCII address with its cleaned name, as ``formataddr`` writes it: the same
    few (the tenant's, its agents', the clients of the moment) for mail after mail."""
    return formataddr((clean(name), address), "utf-8")


def needs_smtputf8(mail_from: str, rcpt_tos: Sequence[str], body: bytes) -> bool:
    """UTF-8 in the envelope or in the headers: only an SMTPUTF8 server may take it
    (RFC 6531); an 8bit body needs only 8BITMIME (``needs_8bitmime``)."""
    head = body.split(b"\r\n\r\n", 1)[0]
    return not (mail_from.isascii() and all(r.isascii() for r in rcpt_tos) and head.isascii())


def needs_8bitmime(body: bytes) -> bool:
    """An 8bit part (UTF-8 text sent as it is): the delivery declares BODY=8BITMIME."""
    return b"Content-Transfer-Encoding: 8bit" in body


def as_7bit(body: bytes) -> bytes:
    """``body`` with its 8bit parts quoted-printable: for the rare server without
    8BITMIME (RFC 6152), where 8bit text is the one thing that must be encoded."""
    from email import encoders, message_from_bytes
    from email.policy import compat32

    msg = message_from_bytes(body, policy=compat32)
    for part in msg.walk():
        if str(part.get("Content-Transfer-Encoding", "")).lower() != "8bit":
            continue
        payload = part.get_payload(decode=True)
        del part["Content-Transfer-Encoding"]
        part.set_payload(payload)
        encoders.encode_quopri(part)
    return msg.as_bytes(policy=compat32.clone(linesep="\r\n"))


_ADDRESS_HEADERS = {"from", "to", "cc", "reply-to", "sender"}


def downgrade(body: bytes) -> bytes | None:
    """The same mail with ASCII headers only, for recipients behind a server without
    SMTPUTF8; None when that cannot be done. An ASCII mailbox keeps its address (its
    name as an RFC 2047 word); a UTF-8 one, which no ASCII mail can address, is shown
    as an empty group named by it in RFC 2047 words, as RFC 6857 section 3.1.3 does."""
    head, sep, rest = body.partition(b"\r\n\r\n")
    if not sep:
        return None
    fields: list[list[bytes]] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    out: list[bytes] = []
    for lines in fields:
        raw = b"\r\n".join(lines)
        if raw.isascii():
            out.append(raw + b"\r\n")
            continue
        name, _, value = raw.decode("utf-8", "replace").partition(":")
        value = " ".join(value.split())
        if name.strip().lower() in _ADDRESS_HEADERS:
            value = ", ".join(
                formataddr((clean(n), a), "utf-8") if a.isascii() else _group(n, a)
                for n, a in getaddresses([value])
            )
        out.append(_header_line(name.strip(), value).encode("ascii", "replace"))
    downgraded = b"".join(out) + b"\r\n" + rest
    return downgraded if downgraded.split(b"\r\n\r\n", 1)[0].isascii() else None


def _group(name: str, address: str) -> str:
    shown = f"{clean(name)} <{address}>" if name else address
    return f"{Header(shown, 'utf-8').encode()} :;"


@lru_cache(maxsize=1024)
def thread_index(tenant: str, ref: str) -> str:
    """Outlook's Thread-Index: 22 bytes, the same for every mail of a ticket.

    Outlook groups a conversation by this header and Thread-Topic, not by
    References; a stable value per ticket keeps the whole ticket together.
    """
    return base64.b64encode(hashlib.sha256(f"{tenant}/{ref}".encode()).digest()[:22]).decode()


def build(
    ctx: MailContext,
    *,
    kind: str,
    subject: str,
    from_name: str,
    to: Sequence[tuple[str, str]],
    text: str | Body,
    reply_to: str,
    auto_submitted: str | None,
) -> tuple[str, bytes]:
    """A mail of the ticket's thread: (its Message-ID, its bytes).

    Every one carries our loop marker (``X-Loop``), a Message-ID in our domain,
    ``In-Reply-To``/``References`` that keep the client's thread, the subject tag,
    and Outlook's ``Thread-Topic``/``Thread-Index``; ``auto_submitted`` (RFC 3834)
    for machine-made mail, so robots do not answer it.
    """
    mid = new_message_id(kind, ctx.hostname)
    topic = clean(subject)
    ref, in_reply_to = ctx.ref, ctx.in_reply_to
    refs = [r for r in ctx.references if r] or ([in_reply_to] if in_reply_to else [])
    headers: list[tuple[str, str]] = [
        ("Message-ID", mid),
        ("Date", mail_date(ctx.now)),
        ("From", mailbox(from_name, ctx.tenant.from_address)),
        ("To", mailboxes(to)),
        ("Reply-To", reply_to),
        ("Subject", f"[{ref}] {topic}" if f"[{ref}]" not in topic else topic),
    ]
    if in_reply_to:
        headers.append(("In-Reply-To", in_reply_to))
    if refs:
        headers.append(("References", " ".join(dict.fromkeys(refs[-20:]))))
    headers += [("Thread-Topic", topic), ("Thread-Index", thread_index(ctx.tenant.slug, ref))]
    if auto_submitted:
        headers += [("Auto-Submitted", auto_submitted), ("X-Auto-Response-Suppress", "All")]
    headers.append(("X-Loop", ctx.hostname))
    return mid, render(headers, text)


def render(headers: list[tuple[str, str]], body: str | Body) -> bytes:
    """A UTF-8 mail, CRLF throughout: text/plain alone, or the tree its body needs
    (mixed > related > alternative, each only when there is something for it)."""
    if isinstance(body, str) or (body.html is None and not body.parts):
        # Text alone, most mail: its part's headers are the same few lines every time.
        cte, payload = encode_text(body if isinstance(body, str) else body.text)
        return (_head(headers) + _PLAIN[cte]).encode("utf-8") + b"\r\n" + payload
    return _render_tree(headers, body)


def _render_tree(headers: list[tuple[str, str]], body: Body) -> bytes:
    """Any body; ``render`` shortens text alone to the same bytes (test_compose_golden)."""
    inline = [p for p in body.parts if p.inline and p.content_id]
    files = [p for p in body.parts if not (p.inline and p.content_id)]
    tree: tuple[list[tuple[str, str]], bytes] = _text_part("plain", body.text)
    if body.html is not None:
        tree = _multipart("alternative", [tree, _text_part("html", body.html)])
    if inline:
        tree = _multipart("related", [tree, *(_file_part(p) for p in inline)])
    if files:
        tree = _multipart("mixed", [tree, *(_file_part(p) for p in files)])
    part_headers, payload = tree
    head = _head([*headers, ("MIME-Version", "1.0"), *part_headers])
    return head.encode("utf-8") + b"\r\n" + payload


_LONGEST_LINE = 998  # octets, without the CRLF (RFC 5322 section 2.1.1)
_UNSAFE_BYTES = re.compile(rb"[\x00\r]")  # a NUL, or a CR that is no line end


def encode_text(text: str) -> tuple[str, bytes]:
    """(Content-Transfer-Encoding, CRLF body): 7bit or 8bit when every line allows,
    so what a reader copies from the raw mail is what we wrote; quoted-printable
    only when a line is too long for SMTP or carries a control byte."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    data = text.encode("utf-8")
    short = len(data) <= _LONGEST_LINE or max(map(len, data.split(b"\n"))) <= _LONGEST_LINE
    if short and not _UNSAFE_BYTES.search(data):
        body = data.replace(b"\n", b"\r\n")
        cte = "7bit" if data.isascii() else "8bit"
    else:
        body = binascii.b2a_qp(data, istext=True).replace(b"\n", b"\r\n")
        cte = "quoted-printable"
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return cte, body


def _text_part(subtype: str, text: str) -> tuple[list[tuple[str, str]], bytes]:
    cte, body = encode_text(text)
    headers = [
        ("Content-Type", f'text/{subtype}; charset="utf-8"'),
        ("Content-Transfer-Encoding", cte),
    ]
    return headers, body


_PLAIN = {
    cte: f'MIME-Version: 1.0\r\nContent-Type: text/plain; charset="utf-8"\r\n'
    f"Content-Transfer-Encoding: {cte}\r\n"
    for cte in ("7bit", "8bit", "quoted-printable")
}


def _file_part(part: Part) -> tuple[list[tuple[str, str]], bytes]:
    """Base64, 76 columns; the name as RFC 2231 when it is not ASCII."""
    name = clean(part.filename)[:200] or "attachment"  # RFC 2231 may triple it: under 998
    if name.isascii():
        param = f'"{quote(name)}"'
        ctype_name, disp_name = f"name={param}", f"filename={param}"
    else:
        encoded = encode_rfc2231(name, "utf-8")
        ctype_name, disp_name = f"name*={encoded}", f"filename*={encoded}"
    ctype = part.content_type.lower()
    if not _MIME_TYPE.fullmatch(ctype):
        ctype = "application/octet-stream"
    headers = [("Content-Type", f"{ctype}; {ctype_name}")]
    if part.inline and part.content_id:
        headers.append(("Content-ID", f"<{part.content_id}>"))
    disposition = "inline" if part.inline else "attachment"
    headers += [
        ("Content-Disposition", f"{disposition}; {disp_name}"),
        ("Content-Transfer-Encoding", "base64"),
    ]
    return headers, part.encoded


_MIME_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")


def _multipart(
    subtype: str, children: list[tuple[list[tuple[str, str]], bytes]]
) -> tuple[list[tuple[str, str]], bytes]:
    """A boundary no child can contain: random, with "=_" that base64 and our text never
    start a line with."""
    boundary = f"=_{subtype}_{random_hex(12)}"
    out = bytearray()
    for headers, payload in children:
        out += f"--{boundary}\r\n".encode()
        out += _head(headers).encode("utf-8") + b"\r\n"
        out += payload
    out += f"--{boundary}--\r\n".encode()
    return [("Content-Type", f'multipart/{subtype}; boundary="{boundary}"')], bytes(out)


def encoded_words(value: str, offset: int = 0) -> str:
    """``value`` as RFC 2047 B-words (UTF-8), folded so that no line is over 78 columns
    (the first starts at ``offset``) and no word over 75; split only between characters,
    never inside one's UTF-8 bytes. What ``Header(value, "utf-8").encode()`` gives a
    reader, without its per-character length arithmetic."""
    data = value.encode("utf-8")
    words: list[str] = []
    start, budget = 0, max(3, 3 * ((78 - 12 - offset) // 4))  # 12: "=?utf-8?b?" + "?="
    while start < len(data):
        end = min(start + min(budget, 45), len(data))  # 45 bytes: a 72-character word
        while end < len(data) and end > start + 1 and data[end] & 0xC0 == 0x80:
            end -= 1  # a continuation byte: the character starts before it
        words.append(f"=?utf-8?b?{base64.b64encode(data[start:end]).decode('ascii')}?=")
        start, budget = end, 45
    return "\r\n ".join(words)


def _head(headers: Sequence[tuple[str, str]]) -> str:  # short ASCII lines (most) directly
    return "".join(
        [
            f"{n}: {v}\r\n" if len(n) + len(v) <= 76 and v.isascii() else _header_line(n, v)
            for n, v in headers
        ]
    )


def _header_line(name: str, value: str) -> str:
    """One header, folded at spaces below 78 columns; non-ASCII as RFC 2047 words,
    unless it is ``Utf8``."""
    if not value.isascii() and not isinstance(value, Utf8):
        return f"{name}: {encoded_words(value, len(name) + 2)}\r\n"
    line = f"{name}: {value}"
    if len(line) <= 78:
        return line + "\r\n"
    out, current = [], f"{name}:"
    for word in value.split(" "):
        if len(current) + 1 + len(word) > 78 and current.strip() != f"{name}:":
            out.append(current)
            current = ""
        current += " " + word
    out.append(current)
    return "\r\n".join(out) + "\r\n"
