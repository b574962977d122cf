"""The mails of the SLA watch (outbound/sla_watch.py) to agents.

``sla_notice``: one ticket's warning or breach, in the ticket's thread, with each
agent's reply address, so answering it reaches the client. ``sla_digest``: one mail to
one agent listing every ticket that fell due; not of any one ticket's thread, so it
carries no ticket tag nor a reply token: the agent answers a ticket from its own
notice or its page. The watch sends the notice when an agent has a single alert.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from outbound.compose import Composed
from outbound.dates import mail_date
from outbound.mime import MailContext, build, clean, mailbox, mailboxes, new_message_id, render
from outbound.templates import DEFAULT_TEMPLATES, Templates
from routing.config import Agent, Tenant

__all__ = ["sla_digest", "sla_notice"]


def sla_notice(
    *,
    tenant: Tenant,
    hostname: str,
    agents: Sequence[Agent],
    ref: str,
    subject: str,
    reply_to: Mapping[str, str],
    values: Mapping[str, str],
    now: datetime,
    templates: Templates = DEFAULT_TEMPLATES,
) -> list[Composed]:
    """A warning before, or the news of, a missed SLA target: one mail per agent, each
    with that agent's reply address so answering it reaches the client."""
    text = templates.render(tenant.slug, "sla.txt.j2", ref=ref, subject=clean(subject), **values)
    label = "SLA breached" if values.get("state") == "breached" else "SLA warning"
    ctx = MailContext(tenant=tenant, hostname=hostname, ref=ref, now=now)
    out: list[Composed] = []
    for agent in agents:
        mid, body = build(
            ctx,
            kind="sla",
            subject=f"{label}: {subject}",
            from_name=tenant.name,
            to=[(agent.name, agent.address)],
            text=text,
            reply_to=reply_to.get(agent.address, tenant.from_address),
            auto_submitted="auto-generated",
        )
        out.append(Composed(message_id=mid, mail_from="", rcpt_tos=(agent.address,), body=body))
    return out


def sla_digest(
    *,
    tenant: Tenant,
    hostname: str,
    agent: Agent,
    items: Sequence[Mapping[str, str]],
    every: str,
    now: datetime,
    templates: Templates = DEFAULT_TEMPLATES,
) -> Composed:
    """``items``: one per ticket clock (ref, subject, state, clock, target, elapsed, due),
    breaches first, as the template lists them."""
    ordered = sorted(items, key=lambda i: (i["state"] != "breached", i["ref"]))
    breached = sum(1 for i in ordered if i["state"] == "breached")
    text = templates.render(
        tenant.slug,
        "sla_digest.txt.j2",
        items=[{**i, "subject": clean(i["subject"])} for i in ordered],
        breached=breached,
        every=every,
    )
    at_risk = len(ordered) - breached
    label = ", ".join(
        [f"{breached} breached"] * bool(breached) + [f"{at_risk} at risk"] * bool(at_risk)
    )
    mid = new_message_id("sla", hostname)
    body = render(
        [
            ("Message-ID", mid),
            ("Date", mail_date(now)),
            ("From", mailbox(tenant.name, tenant.from_address)),
            ("To", mailboxes([(agent.name, agent.address)])),
            ("Reply-To", tenant.from_address),
            ("Subject", f"SLA digest: {label}"),
            ("Auto-Submitted", "auto-generated"),
            ("X-Auto-Response-Suppress", "All"),
            ("X-Loop", hostname),
        ],
        text,
    )
    return Composed(message_id=mid, mail_from="", rcpt_tos=(agent.address,), body=body)
