"""Where the mail a ticket calls for goes: the outbox row, the ticket's reply address,
and the clients who hear from it. Shared by the reactions to a message
(``outbound/reactions.py``, ``outbound/agent_reply.py``) and the jobs that write on
their own (SLA watch, auto-close, sign-in links).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.engine import Connection

from outbound.compose import Composed, failure_notice
from routing.config import Agent, GatewayConfig, Tenant
from routing.tokens import make_token
from store import participants as people
from store import repos
from store.bouncing import bouncing_among

__all__ = ["client_recipients", "queue", "queue_all", "queue_failure_notice", "reply_address"]


def queue(
    conn: Connection,
    tenant: str,
    kind: str,
    ticket_id: int | None,
    mail: Composed,
    *,
    now: datetime | None = None,
) -> None:
    """The outbox row and its Message-ID, so a reply to it threads before it is even sent."""
    queue_all(conn, tenant, ticket_id, [(kind, mail)], now=now)


def queue_all(
    conn: Connection,
    tenant: str,
    ticket_id: int | None,
    mails: list[tuple[str, Composed]],
    *,
    now: datetime | None = None,
) -> None:
    """Several mails of one event in two statements, not two each."""
    repos.enqueue_many(
        conn,
        tenant,
        [(kind, ticket_id, m.message_id, m.mail_from, m.rcpt_tos, m.body) for kind, m in mails],
        now=now,
    )


def queue_failure_notice(
    conn: Connection,
    config: GatewayConfig,
    tenant: Tenant,
    ticket_id: int | None,
    recipients: list[str],
    reason: str,
    now: datetime,
) -> None:
    """The agents hear that mail did not reach ``recipients``: a delivery given up
    (outbound/outbox_rows.py) and a permanent bounce (outbound/reactions.py) say it
    the same way, named by the ticket's reference and subject when there is one."""
    if not tenant.agents:
        return
    row = repos.ticket_row(conn, tenant.slug, ticket_id) if ticket_id else None
    mail = failure_notice(
        tenant=tenant,
        hostname=config.hostname,
        agents=tenant.agents,
        ref=str(row["ref"]) if row else "-",
        subject=str(row["subject"]) if row else "(no ticket)",
        recipients=recipients,
        reason=reason,
        now=now,
    )
    queue(conn, tenant.slug, "failure", ticket_id, mail, now=now)


def reply_address(
    config: GatewayConfig, slug: str, address: str, ref: str, agent: Agent | None = None
) -> str:
    """``address``'s plus form with the ticket's token (the agent's, to answer as them)."""
    number = int(ref.rsplit("-", 1)[1])
    token = make_token(config.secret, slug, number, agent.address if agent else None)
    local, _, domain = address.partition("@")
    return f"{local}+{token}@{domain}"


def client_recipients(conn: Connection, tenant: Tenant, ticket_id: int) -> list[tuple[str, str]]:
    """(name, address) of the ticket's clients and copied people who hear from it: never
    one of our own addresses, nor an address that bounces."""
    ours = {x for a in tenant.agents for x in (a.address, *a.aliases)}
    ours |= set(tenant.addresses)
    clients = [
        p
        for p in people.of_ticket(conn, tenant.slug, ticket_id)
        if p["role"] in ("client", "cc") and p["address"] not in ours
    ]
    bouncing = bouncing_among(conn, tenant.slug, [p["address"] for p in clients])
    return [(p["name"], p["address"]) for p in clients if p["address"] not in bouncing]
