"""Builds the mails the gateway sends, with their Message-ID fixed at once.

The Message-ID is made here, stored with the outbox row and recorded for
threading in the same transaction, so a client's reply to an acknowledgement
threads even if it arrives before the acknowledgement is delivered, and a
retried delivery is the same mail, never a second one.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from email.charset import QP, Charset
from email.header import Header
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr

import jinja2

from routing.config import Tenant

__all__ = ["Composed", "acknowledgement", "new_message_id"]

_env = jinja2.Environment(
    autoescape=False, keep_trailing_newline=True, undefined=jinja2.StrictUndefined
)

ACK_TEXT = _env.from_string(
    """Hello{% if name %} {{ name }}{% endif %},

we have received your message and opened ticket {{ ref }}:

    {{ subject }}

Simply reply to this mail to add to it; please keep [{{ ref }}] in the subject.

--
{{ tenant_name }}
"""
)


@dataclass(frozen=True, slots=True)
class Composed:
    message_id: str
    mail_from: str  # envelope sender; "" for the null sender (RFC 3834 section 3)
    rcpt_tos: tuple[str, ...]
    body: bytes


def new_message_id(kind: str, hostname: str) -> str:
    return f"<{kind}.{secrets.token_hex(10)}@{hostname}>"


def _clean(value: str) -> str:
    """No CR, LF or NUL ever reaches a header we write (header injection)."""
    return " ".join(value.replace("\x00", " ").split())


def acknowledgement(
    *,
    tenant: Tenant,
    hostname: str,
    ref: str,
    subject: str,
    to_addr: str,
    to_name: str,
    reply_address: str,
    in_reply_to: str | None,
    now: object,
) -> Composed:
    """The automatic answer to a client who opened a ticket.

    Marked ``Auto-Submitted: auto-replied`` and sent from the null sender, so
    no well-behaved robot answers it, and it carries our X-Loop.
    """
    text = ACK_TEXT.render(
        name=_clean(to_name), ref=ref, subject=_clean(subject), tenant_name=tenant.name
    )
    # compat32 building blocks: the header-object policy costs ~1 ms per mail
    # and this runs inside the writer's transaction.
    msg = MIMEText(text, "plain", _UTF8)
    mid = new_message_id("ack", hostname)
    msg["Message-ID"] = mid
    msg["Date"] = format_datetime(now)  # type: ignore[arg-type]
    msg["From"] = formataddr((_clean(tenant.name), tenant.addresses[0]), "utf-8")
    msg["To"] = formataddr((_clean(to_name), to_addr), "utf-8")
    msg["Reply-To"] = reply_address
    msg["Subject"] = _header(f"[{ref}] {_clean(subject)}")
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    msg["Auto-Submitted"] = "auto-replied"
    msg["X-Auto-Response-Suppress"] = "All"
    msg["X-Loop"] = hostname
    body = msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return Composed(message_id=mid, mail_from="", rcpt_tos=(to_addr,), body=body)


_UTF8 = Charset("utf-8")
_UTF8.body_encoding = QP


def _header(value: str) -> str | Header:
    """ASCII stays as written; anything else becomes RFC 2047 encoded words."""
    return value if value.isascii() else Header(value, "utf-8", header_name="Subject")
