"""Builds the mails the gateway sends, with their Message-ID fixed at once.

The Message-ID is made here, stored with the outbox row and recorded for
threading in the same transaction, so a client's reply to an acknowledgement
threads even if it arrives before the acknowledgement is delivered, and a
retried delivery is the same mail, never a second one.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
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
    msg = EmailMessage()
    mid = new_message_id("ack", hostname)
    msg["Message-ID"] = mid
    msg["Date"] = format_datetime(now)  # type: ignore[arg-type]
    msg["From"] = Address(display_name=_clean(tenant.name), addr_spec=tenant.addresses[0])
    msg["To"] = formataddr((_clean(to_name), to_addr))
    msg["Reply-To"] = reply_address
    msg["Subject"] = f"[{ref}] {_clean(subject)}"
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    msg["Auto-Submitted"] = "auto-replied"
    msg["X-Auto-Response-Suppress"] = "All"
    msg["X-Loop"] = hostname
    msg.set_content(
        ACK_TEXT.render(
            name=_clean(to_name),
            ref=ref,
            subject=_clean(subject),
            tenant_name=tenant.name,
        )
    )
    return Composed(message_id=mid, mail_from="", rcpt_tos=(to_addr,), body=msg.as_bytes())
