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
from datetime import datetime
from html import escape

from outbound.dates import mail_date
from outbound.files import LeftOut, left_out_text, notice_html
from outbound.mime import (
    Body,
    Composed,
    MailContext,
    Part,
    build,
    clean,
    mailbox,
    mailboxes,
    new_message_id,
    render,
    thread_index,
)
from outbound.report_mail import report_mail
from outbound.templates import DEFAULT_TEMPLATES, FALLBACK_LANGUAGE, Templates
from routing.config import Agent, Tenant

__all__ = [
    "Composed",
    "LeftOut",
    "MailContext",
    "Part",
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


# Where the client's text goes in the rendered notice, so the HTML part can put the
# client's own HTML in its place.
_MARK = "\x00client-text\x00"

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
    ticket_url: str = "",
    html: str | None = None,
    files: Sequence[Part] = (),
    left_out: LeftOut | None = None,
) -> Composed:
    """What an agent gets for a new ticket or a client's follow-up; replying answers the client.

    ``Reply-To`` carries a token bound to this ticket and this agent, so the
    agent's reply is recognised by the token, never by its ``From`` alone.
    ``caution`` (a key of ``CAUTIONS``): why the message changes nothing; its warning
    comes before the tenant's template, so an override cannot leave it out, and so
    does the list of the client's files this mail does not carry (``left_out``).
    ``files``: the client's files as stored, inline images by their Content-ID;
    ``html``: the client's sanitised HTML, shown inside the notice's HTML part.
    ``ticket_url``: the agents' page of the ticket, in every notice.
    """
    marked = templates.render(
        tenant.slug,
        "notice.txt.j2",
        event=event,
        ref=ref,
        client=client,
        text=_MARK,
        subject=clean(subject),
        tenant_address=tenant.from_address,
        tenant_name=tenant.name,
        ticket_url=ticket_url,
    )
    if ticket_url and ticket_url not in marked:  # an override without it: still there
        marked = marked.rstrip("\n") + f"\n\nThe ticket:\n{ticket_url}\n"
    if left_out is not None and left_out.files:
        marked = left_out_text(left_out, ticket_url) + marked
    if caution:
        marked = CAUTIONS[caution].format(client=client) + marked
    body_text = marked.replace(_MARK, text)
    body = Body(body_text, notice_html(marked, _MARK, html) if html else None, tuple(files))
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
        text=body,
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
        f"If it was you, answer again from {agent.address}; or ask the admin to add "
        f"{clean(sender)} to your aliases in gateway.toml ([[tenants.agents]] "
        'aliases = ["..."]), so replies from it are sent.\n'
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
    html: str | None = None,
    files: Sequence[Part] = (),
    templates: Templates = DEFAULT_TEMPLATES,
    lang: str = FALLBACK_LANGUAGE,
) -> Composed:
    """An agent's answer, sent to the client from the tenant's address, in the client's thread.

    ``html``: the agent's own HTML, sanitised and without the quoted notice, as the
    alternative to ``text``; ``files``: the agent's attachments and inline images.
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
        text=Body(text.rstrip() + "\n" + footer, _with_footer(html, footer), tuple(files)),
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
            ("Date", mail_date(now)),
            ("From", mailbox(tenant.name, tenant.from_address)),
            ("To", mailboxes([("", to_addr)])),
            ("Subject", clean(subject)),
            ("Auto-Submitted", "auto-generated"),
            ("X-Auto-Response-Suppress", "All"),
            ("X-Loop", hostname),
        ],
        text,
    )
    return Composed(message_id=mid, mail_from="", rcpt_tos=(to_addr,), body=body)


def _with_footer(html: str | None, footer: str) -> str | None:
    """The relay's HTML part carries the same footer as its text, escaped."""
    if html is None:
        return None
    lines = "<br>\n".join(escape(line) for line in footer.strip("\n").split("\n"))
    return f"{html}\n<p>{lines}</p>\n"
