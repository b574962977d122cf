"""Auto-close: a ticket pending (waiting on the client) for ``[tenants]
auto_close_after`` closes itself, and the client gets a last mail that a reply
reopens it (gateway/intake/decide.py reopens on a client's reply).

Run by the daemon's ops loop (gateway/ops/jobs.py) under the ``jobs:ops`` lease, so
with several instances one closes. The close, its audit event, the SLA resolution
and the mail commit together in one writer transaction, and each ticket is read
again inside it: a client's reply that came since the look makes it open, and it
is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.engine import Connection

from outbound.language import client_language
from outbound.outbox import client_recipients, queue, reply_address
from outbound.templates import DEFAULT_TEMPLATES, Templates
from outbound.ticket_mail import auto_close_mail
from routing.config import GatewayConfig, Tenant
from routing.sla import format_duration
from store import clocks, repos, ticket_life

__all__ = ["Closed", "close_pending", "due_closes"]


@dataclass(frozen=True, slots=True)
class Closed:
    tenant: str
    ref: str
    mailed: int  # clients told


def due_closes(conn: Connection, config: GatewayConfig, now: datetime) -> list[tuple[str, str]]:
    """(tenant, ref) of every pending ticket due to close: reads only, for a reader
    connection every few seconds."""
    out: list[tuple[str, str]] = []
    for tenant in config.tenants:
        if tenant.auto_close_after:
            before = now - timedelta(seconds=tenant.auto_close_after)
            due = ticket_life.pending_due(conn, tenant.slug, before)
            out += [(tenant.slug, str(t["ref"])) for t in due]
    return out


def close_pending(
    conn: Connection,
    config: GatewayConfig,
    now: datetime,
    templates: Templates = DEFAULT_TEMPLATES,
) -> list[Closed]:
    """Close every pending ticket due now; in the writer's transaction."""
    out: list[Closed] = []
    for tenant in config.tenants:
        if not tenant.auto_close_after:
            continue
        before = now - timedelta(seconds=tenant.auto_close_after)
        for ticket in ticket_life.pending_due(conn, tenant.slug, before):
            out.append(_close(conn, config, tenant, ticket, now, templates))
    return out


def _close(
    conn: Connection,
    config: GatewayConfig,
    tenant: Tenant,
    ticket: dict[str, object],
    now: datetime,
    templates: Templates,
) -> Closed:
    slug, ref = tenant.slug, str(ticket["ref"])
    ticket_id = int(ticket["id"])  # type: ignore[call-overload]
    after = tenant.auto_close_after or 0.0
    waited = _days(after) or format_duration(after)
    repos.update_ticket(conn, slug, ticket_id, now=now, status="closed")
    repos.add_audit(
        conn, slug, "ticket.status", actor="gateway", ticket_id=ticket_id,
        detail={"from": "pending", "to": "closed", "by": "auto_close_after", "after": waited},
        now=now,
    )  # fmt: skip
    clocks.on_message(
        conn, slug, ticket_id, role="gateway", answered=False, sender="gateway", now=now
    )
    to = client_recipients(conn, tenant, ticket_id)
    if to:
        client_ids = repos.thread_ids(conn, slug, ticket_id, role="client")
        mail = auto_close_mail(
            tenant=tenant,
            hostname=config.hostname,
            ref=ref,
            subject=str(ticket["subject"]),
            to=to,
            waited=waited,
            reply_address=reply_address(config, slug, tenant.addresses[0], ref),
            in_reply_to=client_ids[-1] if client_ids else None,
            references=client_ids,
            now=now,
            templates=templates,
            lang=client_language(conn, tenant, ticket_id),
            days=int(after // 86400) if after % 86400 == 0 else None,
        )
        # Queued at the store's own time, as the SLA watch's notices: the outbox worker
        # sends what is due by that clock.
        queue(conn, slug, "autoclose", ticket_id, mail)
    return Closed(slug, ref, len(to))


def _days(seconds: float) -> str:
    """``7 days`` for a whole number of days, as a client reads it; else empty."""
    days, rest = divmod(int(seconds), 86400)
    if rest or not days:
        return ""
    return "1 day" if days == 1 else f"{days} days"
