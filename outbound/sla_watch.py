"""The SLA watch: warn the agents before a target is missed, and tell them when it is.

Run periodically by the daemon inside one writer transaction: the notice, the
audit event and the mark that it was sent commit together, so a crash never
sends a warning twice nor loses a breach from the audit log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from outbound.compose import Templates, sla_notice
from outbound.reactions import queue
from routing.config import Agent, GatewayConfig, Tenant
from routing.sla import ClockState, SlaPolicy, assess, format_duration
from routing.tokens import make_token
from store import clocks, repos

__all__ = ["Notice", "check_sla", "clock_states", "due_notices", "ticket_sla"]

_LABEL = {"first_response": "first response", "resolution": "resolution"}


@dataclass(frozen=True, slots=True)
class Notice:
    tenant: str
    ref: str
    clock: str
    state: str  # warning | breached


def clock_states(policy: SlaPolicy, ticket: dict[str, object], now: datetime) -> list[ClockState]:
    """Where a stored ticket's clocks stand (a row from store.clocks)."""
    return assess(
        policy,
        created_at=ticket["created_at"],  # type: ignore[arg-type]
        now=now,
        first_response_at=ticket["first_response_at"],  # type: ignore[arg-type]
        resolved_at=ticket["resolved_at"],  # type: ignore[arg-type]
        pauses=ticket["pauses"],  # type: ignore[arg-type]
    )


# A ticket is listed under the clock that most needs an agent now: a running breach,
# then a warning, waiting on the client, running; only then a stopped clock's verdict.
_WORST = ("breached", "warning", "paused", "running", "missed", "met")


def ticket_sla(tenant: Tenant, ticket: dict[str, Any], now: datetime) -> dict[str, Any] | None:
    """A ticket's SLA for a list or a page (CLI, status, agents' desk); None: no SLA.

    ``ticket`` is a row of ``store.clocks``. ``state`` is the most urgent
    clock's (breached, warning, paused, running, missed, met), ``due_at`` the next
    moment a running clock runs out, and ``clocks`` each clock with its numbers.
    """
    if tenant.sla is None:
        return None
    policy = tenant.sla.policy_for(ticket["queue"], ticket["priority"])
    states = clock_states(policy, ticket, now)
    if not states:
        return None
    dues = [s.due_at for s in states if s.due_at is not None]
    return {
        "state": min((s.state for s in states), key=_WORST.index),
        "due_at": min(dues).isoformat() if dues else None,
        "clocks": [
            {
                "clock": s.clock,
                "state": s.state,
                "elapsed_seconds": round(s.elapsed),
                "target_seconds": round(s.target),
                "due_at": s.due_at.isoformat() if s.due_at else None,
            }
            for s in states
        ],
    }


def due_notices(conn: Connection, config: GatewayConfig, now: datetime) -> list[Notice]:
    """The notices ``check_sla`` would send now; reads only, so a reader connection
    can ask every few seconds without taking the single writer's time."""
    return check_sla(conn, config, now, dry_run=True)


def check_sla(
    conn: Connection,
    config: GatewayConfig,
    now: datetime,
    templates: Templates | None = None,
    *,
    dry_run: bool = False,
) -> list[Notice]:
    """Queue every warning and breach notice that is due and not yet sent."""
    out: list[Notice] = []
    for tenant in config.tenants:
        if tenant.sla is None:
            continue
        for ticket in clocks.open_tickets(conn, tenant.slug):
            policy = tenant.sla.policy_for(ticket["queue"], ticket["priority"])
            notified = list(ticket["sla_notified"])
            sent = False
            for st in clock_states(policy, ticket, now):
                if st.state not in ("warning", "breached"):
                    continue
                mark = f"{st.clock}:{st.state}"
                if mark in notified:
                    continue
                # A breach found without a warning before it (the daemon was down)
                # is told once, as a breach.
                notified += [mark] if st.state == "warning" else [mark, f"{st.clock}:warning"]
                if not dry_run:
                    _notify(conn, config, tenant, ticket, policy, st, now, templates)
                out.append(Notice(tenant.slug, str(ticket["ref"]), st.clock, st.state))
                sent = True
            if sent and not dry_run:
                clocks.set_notified(conn, tenant.slug, int(ticket["id"]), sorted(set(notified)))
    return out


def _recipients(tenant: Tenant, ticket: dict[str, object]) -> list[Agent]:
    """The assignee if there is one, else the queue's agents, else every agent."""
    assignee = ticket.get("assignee")
    if assignee and tenant.agent(str(assignee)) is not None:
        return [tenant.agent(str(assignee))]  # type: ignore[list-item]
    q = tenant.queue(str(ticket.get("queue")))
    if q is not None and q.agents:
        return [a for a in tenant.agents if a.address in q.agents]
    return list(tenant.agents)


def _notify(
    conn: Connection,
    config: GatewayConfig,
    tenant: Tenant,
    ticket: dict[str, object],
    policy: SlaPolicy,
    st: ClockState,
    now: datetime,
    templates: Templates | None,
) -> None:
    ticket_id = int(ticket["id"])  # type: ignore[call-overload]
    ref = str(ticket["ref"])
    repos.add_audit(
        conn,
        tenant.slug,
        f"sla.{st.state}",
        actor="gateway",
        ticket_id=ticket_id,
        detail={
            "clock": st.clock,
            "target_seconds": st.target,
            "elapsed_seconds": round(st.elapsed),
            "due_at": st.due_at.isoformat() if st.due_at else None,
            "queue": ticket["queue"],
            "priority": ticket["priority"],
        },
    )
    agents = [a for a in _recipients(tenant, ticket) if a.address]
    bouncing = repos.bouncing_among(conn, tenant.slug, [a.address for a in agents])
    agents = [a for a in agents if a.address not in bouncing]
    if not agents:
        return
    number = int(ref.rsplit("-", 1)[1])
    local, _, domain = tenant.addresses[0].partition("@")
    reply_to = {
        a.address: f"{local}+{make_token(config.secret, tenant.slug, number, a.address)}@{domain}"
        for a in agents
    }
    cal = policy.calendar
    calendar = "around the clock" if cal.always else f"business hours, {cal.tz}"
    due = ""
    if st.due_at is not None:
        zone = cal.tz if cal.tz is not None else None
        due = st.due_at.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")
    mails = sla_notice(
        tenant=tenant,
        hostname=config.hostname,
        agents=agents,
        ref=ref,
        subject=str(ticket["subject"]),
        reply_to=reply_to,
        values={
            "state": st.state,
            "clock": _LABEL[st.clock],
            "target": format_duration(st.target),
            "elapsed": format_duration(st.elapsed),
            "calendar": calendar,
            "due": due,
        },
        now=now,
        **({"templates": templates} if templates is not None else {}),
    )
    for mail in mails:
        queue(conn, tenant.slug, "sla", ticket_id, mail)
