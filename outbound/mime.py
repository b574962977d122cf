"""The MIME writer for the mails the gateway sends: headers and a text/plain body.

Written out directly: the stdlib generator (even compat32) folded every header
through Header objects and cost a fifth of the writer's time per message, and
these mails are built inside the writer's transaction. Non-ASCII still goes
through email.header (RFC 2047), and the body through binascii's QP encoder;
an internationalised address (RFC 6532) is written as UTF-8, as it must be,
and such a mail can only go with SMTPUTF8 (``needs_smtputf8``).
tests/test_compose.py reads every kind of mail back through the stdlib parser.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.utils import format_datetime, formataddr, getaddresses, quote

from routing.config import Tenant

__all__ = [
    "MailContext",
    "build",
    "clean",
    "downgrade",
    "mailboxes",
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


def new_message_id(kind: str, hostname: str) -> str:
    return f"<{kind}.{secrets.token_hex(10)}@{hostname}>"


def clean(value: str) -> str:
    """No CR, LF or NUL ever reaches a header we write (header injection)."""
    return " ".join(value.replace("\x00", " ").split())


def mailboxes(pairs: Sequence[tuple[str, str]]) -> str:
    """An address header's value: RFC 2047 names beside ASCII addresses; once any
    address is UTF-8, the whole value is (RFC 6532), names included."""
    if all(a.isascii() for _, a in pairs):
        return ", ".join(formataddr((clean(n), a), "utf-8") for n, a in pairs)
    return Utf8(", ".join(f'"{quote(clean(n))}" <{a}>' if n else a for n, a in pairs))


def needs_smtputf8(mail_from: str, rcpt_tos: Sequence[str], body: bytes) -> bool:
    """UTF-8 in the envelope or in the headers: only an SMTPUTF8 server may take it
    (RFC 6531); the body alone is quoted-printable and never needs it."""
    head = body.split(b"\r\n\r\n", 1)[0]
    return not (mail_from.isascii() and all(r.isascii() for r in rcpt_tos) and head.isascii())


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
    text: str,
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
        ("Date", format_datetime(ctx.now)),
        ("From", formataddr((clean(from_name), ctx.tenant.from_address), "utf-8")),
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


def render(headers: list[tuple[str, str]], text: str) -> bytes:
    """A text/plain UTF-8 mail, CRLF throughout, quoted-printable body."""
    headers = [
        *headers,
        ("MIME-Version", "1.0"),
        ("Content-Type", 'text/plain; charset="utf-8"'),
        ("Content-Transfer-Encoding", "quoted-printable"),
    ]
    head = "".join(_header_line(name, value) for name, value in headers)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    body = binascii.b2a_qp(text.encode("utf-8"), istext=True).replace(b"\n", b"\r\n")
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return head.encode("utf-8") + b"\r\n" + body


def _header_line(name: str, value: str) -> str:
    """One header, folded at spaces below 78 columns; non-ASCII as RFC 2047 words,
    unless it is ``Utf8``."""
    if not value.isascii() and not isinstance(value, Utf8):
        encoded = Header(value, "utf-8", header_name=name).encode(linesep="\r\n")
        return f"{name}: {encoded}\r\n"
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
