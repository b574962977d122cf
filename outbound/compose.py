"""Builds the mails the gateway sends, with their Message-ID fixed at once.

The Message-ID is made here, stored with the outbox row and recorded for
threading in the same transaction, so a reply to anything we sent threads
even if it arrives before our mail is delivered, and a retried delivery is the
same mail, never a second one.

Each kind of mail is one function; what they share lives beside it: the
wording in ``outbound/templates.py``, the headers and the MIME writer in
``outbound/mime.py`` (a ``MailContext`` carries the ticket's thread). Machine-made
mail says ``Auto-Submitted`` (RFC 3834) so robots do not answer it; an agent's
relayed reply is a person speaking and does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime, formataddr

from outbound.mime import (
    MailContext,
    build,
    clean,
    mailboxes,
    new_message_id,
    render,
    thread_index,
)
from outbound.templates import DEFAULT_TEMPLATES, FALLBACK_LANGUAGE, Templates
from routing.config import Agent, Tenant

__all__ = [
    "Composed",
    "MailContext",
    "Templates",
    "acknowledgement",
    "agent_notice",
    "failure_notice",
    "magic_link_mail",
    "new_message_id",
    "refusal_notice",
    "relay",
    "report_mail",
    "thread_index",
]


@dataclass(frozen=True, slots=True)
class Composed:
    message_id: str
    mail_from: str  # envelope sender; "" for the null sender (RFC 3834 section 3)
    rcpt_tos: tuple[str, ...]
    body: bytes


# The first lines of an agent's notice about a message that changes nothing: its From
# failed sender authentication, or its sender is not a participant of the ticket
# (docs/security.md, "Who is speaking").
CAUTIONS = {
    "unverified": (
        "Warning: unverified sender. This message claims to be from {client}, but the "
        "sender's domain does not vouch for it (sender authentication failed). Nothing "
        "was relayed, acknowledged or changed by it.\n\n"
    ),
    "outsider": (
        "Note: {client} is not a participant of this ticket. The message is kept here; "
        "the sender gets no acknowledgement, no copy of replies and no web access.\n\n"
    ),
}


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
    now: datetime,
    templates: Templates = DEFAULT_TEMPLATES,
    lang: str = FALLBACK_LANGUAGE,
    portal: str = "",
) -> Composed:
    """The automatic answer to a client who opened a ticket.

    ``portal`` is the tenant's page where a client asks for a sign-in link;
    the link itself is never put in an acknowledgement, because it would have
    to live longer than 15 minutes to be of use there.

    Marked ``Auto-Submitted: auto-replied`` and sent from the null sender, so
    no well-behaved robot answers it, and it carries our X-Loop. ``lang``: the
    client's language (outbound/language.py).
    """
    text = templates.render(
        tenant.slug,
        "ack.txt.j2",
        lang,
        name=clean(to_name),
        ref=ref,
        subject=clean(subject),
        tenant_name=tenant.name,
        portal=portal,
    )
    mid, body = build(
        MailContext(tenant=tenant, hostname=hostname, ref=ref, now=now, in_reply_to=in_reply_to),
        kind="ack",
        subject=subject,
        from_name=tenant.name,
        to=[(to_name, to_addr)],
        text=text,
        reply_to=reply_address,
        auto_submitted="auto-replied",
    )
    return Composed(message_id=mid, mail_from="", rcpt_tos=(to_addr,), body=body)


def agent_notice(
    *,
    tenant: Tenant,
    hostname: str,
    agent: Agent,
    event: str,
    ref: str,
    subject: str,
    client: str,
    text: str,
    reply_address: str,
    in_reply_to: str | None,
    references: Sequence[str],
    now: datetime,
    templates: Templates = DEFAULT_TEMPLATES,
    caution: str = "",
) -> Composed:
    """What an agent gets for a new ticket or a client's follow-up; replying answers the client.

    ``Reply-To`` carries a token bound to this ticket and this agent, so the
    agent's reply is recognised by the token, never by its ``From`` alone.
    ``caution`` (a key of ``CAUTIONS``): why the message changes nothing; its warning
    comes before the tenant's template, so an override cannot leave it out.
    """
    body_text = templates.render(
        tenant.slug,
        "notice.txt.j2",
        event=event,
        ref=ref,
        client=client,
        text=text,
        subject=clean(subject),
        tenant_address=tenant.from_address,
        tenant_name=tenant.name,
    )
    if caution:
        body_text = CAUTIONS[caution].format(client=client) + body_text
    mid, body = build(
        MailContext(
            tenant=tenant,
            hostname=hostname,
            ref=ref,
            now=now,
            in_reply_to=in_reply_to,
            references=references,
        ),
        kind="notice",
        subject=subject,
        from_name=f"{client} via {tenant.name}",
        to=[(agent.name, agent.address)],
        text=body_text,
        reply_to=reply_address,
        auto_submitted="auto-generated",
    )
    return Composed(
        message_id=mid, mail_from=tenant.from_address, rcpt_tos=(agent.address,), body=body
    )


def refusal_notice(
    *,
    tenant: Tenant,
    hostname: str,
    agent: Agent,
    ref: str,
    subject: str,
    sender: str,
    in_reply_to: str | None,
    now: datetime,
) -> Composed:
    """Tells an agent that a reply carrying their token was not sent, and why.

    It goes to the agent's configured address, never to the sender: whoever
    holds a leaked notice learns nothing from it, and the agent can still
    answer from an address of theirs. No Reply-To token: answering it does nothing.
    """
    text = (
        f"Your reply on {ref} was NOT sent to the client.\n\n"
        f"It carried your reply address, but came from {clean(sender)}, which is not "
        f"{agent.address} nor one of your configured aliases. The message is kept on "
        "the ticket for the agents to see; nobody was added to the ticket.\n\n"
        "If it was you, answer again from your own address.\n"
    )
    mid, body = build(
        MailContext(tenant=tenant, hostname=hostname, ref=ref, now=now, in_reply_to=in_reply_to),
        kind="refusal",
        subject=f"Not sent: {subject}",
        from_name=tenant.name,
        to=[(agent.name, agent.address)],
        text=text,
        reply_to=tenant.from_address,
        auto_submitted="auto-generated",
    )
    return Composed(message_id=mid, mail_from="", rcpt_tos=(agent.address,), body=body)


def relay(
    *,
    tenant: Tenant,
    hostname: str,
    agent: Agent,
    ref: str,
    subject: str,
    to: Sequence[tuple[str, str]],
    text: str,
    reply_address: str,
    in_reply_to: str | None,
    references: Sequence[str],
    now: datetime,
    templates: Templates = DEFAULT_TEMPLATES,
    lang: str = FALLBACK_LANGUAGE,
) -> Composed:
    """An agent's answer, sent to the client from the tenant's address, in the client's thread.

    Under the agent's words, a footer in the client's language (``relay_footer.txt.j2``)
    names the ticket and says that answering the mail is all it takes."""
    name = f"{agent.name} ({tenant.name})" if agent.name else tenant.name
    footer = templates.render(
        tenant.slug, "relay_footer.txt.j2", lang, ref=ref, tenant_name=tenant.name
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
        kind="reply",
        subject=subject,
        from_name=name,
        to=to,
        text=text.rstrip() + "\n" + footer,
        reply_to=reply_address,
        auto_submitted=None,
    )
    return Composed(
        message_id=mid,
        mail_from=tenant.from_address,
        rcpt_tos=tuple(a for _, a in to),
        body=body,
    )


def failure_notice(
    *,
    tenant: Tenant,
    hostname: str,
    agents: Sequence[Agent],
    ref: str,
    subject: str,
    recipients: Sequence[str],
    reason: str,
    now: datetime,
    templates: Templates = DEFAULT_TEMPLATES,
) -> Composed:
    """Tells the agents a mail was given up on; never sent about another failure notice."""
    text = templates.render(
        tenant.slug,
        "failure.txt.j2",
        ref=ref,
        subject=clean(subject),
        recipients=", ".join(recipients),
        reason=clean(reason)[:500],
    )
    mid, body = build(
        MailContext(tenant=tenant, hostname=hostname, ref=ref, now=now),
        kind="failure",
        subject=f"Undelivered: {subject}",
        from_name=tenant.name,
        to=[(a.name, a.address) for a in agents],
        text=text,
        reply_to=tenant.from_address,
        auto_submitted="auto-generated",
    )
    return Composed(
        message_id=mid,
        mail_from="",
        rcpt_tos=tuple(a.address for a in agents),
        body=body,
    )


def magic_link_mail(
    *,
    tenant: Tenant,
    hostname: str,
    to_addr: str,
    subject: str,
    text: str,
    now: datetime,
) -> Composed:
    """The sign-in link a client asked for; automatic, so robots leave it alone."""
    mid = new_message_id("link", hostname)
    body = render(
        [
            ("Message-ID", mid),
            ("Date", format_datetime(now)),
            ("From", formataddr((clean(tenant.name), tenant.from_address), "utf-8")),
            ("To", mailboxes([("", to_addr)])),
            ("Subject", clean(subject)),
            ("Auto-Submitted", "auto-generated"),
            ("X-Auto-Response-Suppress", "All"),
            ("X-Loop", hostname),
        ],
        text,
    )
    return Composed(message_id=mid, mail_from="", rcpt_tos=(to_addr,), body=body)


def report_mail(
    *,
    tenant: Tenant,
    hostname: str,
    to: Sequence[str],
    month: str,
    filename: str,
    pdf: bytes,
    now: datetime,
) -> Composed:
    """The monthly report as a PDF attachment, to the tenant's report recipients.

    Built with the stdlib's EmailMessage: it is made once a month, outside the
    message path, so the generator's cost does not matter here.
    """
    from email.message import EmailMessage
    from email.policy import SMTP

    msg = EmailMessage(policy=SMTP)
    mid = new_message_id("report", hostname)
    msg["Message-ID"] = mid
    msg["Date"] = format_datetime(now)
    msg["From"] = formataddr((clean(tenant.name), tenant.from_address))
    msg["To"] = ", ".join(to)
    msg["Subject"] = f"{clean(tenant.name)}: support report for {month}"
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Auto-Response-Suppress"] = "All"
    msg["X-Loop"] = hostname
    msg.set_content(
        f"Attached: the support report of {tenant.name} for {month} (PDF).\n\n"
        "Tickets opened and closed, response and resolution times, SLA attainment,\n"
        "busiest hours, per queue and per agent.\n"
    )
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename=filename)
    body = msg.as_bytes()
    return Composed(message_id=mid, mail_from="", rcpt_tos=tuple(to), body=body)
