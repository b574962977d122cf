"""The digest of SLA alerts: one mail to one agent listing every ticket that fell due.

Not a mail of any one ticket's thread, so it carries no ticket tag nor a reply token:
the agent answers a ticket from its own notice or its page. When an agent has a single
alert, the watch sends the ticket's own notice instead (``compose.sla_notice``), whose
reply reaches the client.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from email.utils import format_datetime, formataddr

from outbound.compose import Composed
from outbound.mime import clean, mailboxes, new_message_id, render
from outbound.templates import DEFAULT_TEMPLATES, Templates
from routing.config import Agent, Tenant

__all__ = ["sla_digest"]


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
            ("Date", format_datetime(now)),
            ("From", formataddr((clean(tenant.name), tenant.from_address), "utf-8")),
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
