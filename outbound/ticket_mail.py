"""Mails about what happened to a ticket rather than about a message on it: an agent's
reply that was refused for its commands, and the last mail of a pending ticket that
closes itself (``[tenants] auto_close_after``).

Beside ``outbound/compose.py`` (which keeps the mails a message calls for) so neither
grows past a reader's page; both build through ``outbound/mime.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from outbound.compose import Composed
from outbound.mime import MailContext, build, clean
from outbound.templates import DEFAULT_TEMPLATES, FALLBACK_LANGUAGE, Templates
from routing.commands import COMMANDS_HELP
from routing.config import Agent, Tenant

__all__ = ["auto_close_mail", "command_refusal"]


def command_refusal(
    *,
    tenant: Tenant,
    hostname: str,
    agent: Agent,
    ref: str,
    subject: str,
    problems: Sequence[str],
    reply_address: str,
    in_reply_to: str | None,
    now: datetime,
) -> Composed:
    """Tells an agent that their reply was not sent because a command in it was refused.

    Nothing of the reply acted: not the text, not the other commands, so sending it
    again, fixed, does each thing once. ``Reply-To`` is the agent's own token for the
    ticket (the reply came with it, from the agent, authenticated), so answering this
    mail is answering the ticket.
    """
    lines = "\n".join(f"  {clean(p)}" for p in problems)
    text = (
        f"Your reply on {ref} was NOT sent to the client, and nothing on the ticket "
        "changed.\n\n"
        f"Refused:\n{lines}\n\n"
        f"The commands, one per line at the top of a reply: {COMMANDS_HELP}.\n\n"
        "Fix the command lines and send the reply again (replying to this mail "
        "answers the ticket).\n"
    )
    mid, body = build(
        MailContext(tenant=tenant, hostname=hostname, ref=ref, now=now, in_reply_to=in_reply_to),
        kind="refused",
        subject=f"Not sent: {subject}",
        from_name=tenant.name,
        to=[(agent.name, agent.address)],
        text=text,
        reply_to=reply_address,
        auto_submitted="auto-generated",
    )
    return Composed(message_id=mid, mail_from="", rcpt_tos=(agent.address,), body=body)


def auto_close_mail(
    *,
    tenant: Tenant,
    hostname: str,
    ref: str,
    subject: str,
    to: Sequence[tuple[str, str]],
    waited: str,
    reply_address: str,
    in_reply_to: str | None,
    references: Sequence[str],
    now: datetime,
    templates: Templates = DEFAULT_TEMPLATES,
    lang: str = FALLBACK_LANGUAGE,
    days: int | None = None,
) -> Composed:
    """The client's last mail of a pending ticket that closed itself: a reply reopens it.

    The wording is the tenant's template ``autoclose.txt.j2``; sent from the tenant's
    address with a Reply-To that threads the answer back into the ticket.
    """
    text = templates.render(
        tenant.slug,
        "autoclose.txt.j2",
        lang,
        ref=ref,
        subject=clean(subject),
        waited=waited,
        days=days,
        tenant_name=tenant.name,
    )
    mid, body = build(
        MailContext(
            tenant=tenant,
            hostname=hostname,
            ref=ref,
            now=now,
            in_reply_to=in_reply_to,
            references=references,
        ),
        kind="autoclose",
        subject=subject,
        from_name=tenant.name,
        to=to,
        text=text,
        reply_to=reply_address,
        auto_submitted="auto-generated",
    )
    return Composed(
        message_id=mid, mail_from=tenant.from_address, rcpt_tos=tuple(a for _, a in to), body=body
    )
