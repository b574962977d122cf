"""The SLA watch: warn the agents before a target is missed, and tell them when it is.

Run periodically by the daemon inside one writer transaction: the notice, the
audit event and the mark that it was sent commit together, so a crash never
sends a warning twice nor loses a breach from the audit log.

No storms (issue 17: turning SLA on for a tenant with a backlog sent 11 alerts in 4 s):
clocks count only for tickets opened since the watch first saw SLA configured for the
tenant (``sla_tenant_state.since``), and an agent gets at most one mail per
``[tenants.sla] digest_every``, listing everything that fell due meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from outbound.compose import Templates
from outbound.reactions import queue
from outbound.sla_mail import sla_digest, sla_notice
from routing.config import Agent, GatewayConfig, Tenant
from routing.sla import ClockState, SlaPolicy, assess, format_duration
from routing.tokens import make_token
from store import clocks, repos
from store.bouncing import bouncing_among

__all__ = [
    "Notice",
    "check_sla",
    "clock_states",
    "due_notices",
    "setup_pending",
    "start_sla",
    "ticket_sla",
]

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

    ``ticket`` is a row of ``store.clocks`` with ``sla_since``: a ticket opened before
    SLA began for the tenant has none (``clocks.watched``), as the watch sends it none.
    ``state`` is the most urgent clock's (breached, warning, paused, running, missed,
    met), ``due_at`` the next moment a running clock runs out, and ``clocks`` each
    clock with its numbers.
    """
    if tenant.sla is None or not clocks.watched(ticket):
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


def setup_pending(conn: Connection, config: GatewayConfig) -> bool:
    """A tenant was put under SLA, or taken from it, since the watch last wrote: the
    writer must record it even when no notice is due (reads only)."""
    return set(clocks.sla_states(conn)) != {t.slug for t in config.tenants if t.sla}


def start_sla(conn: Connection, config: GatewayConfig, now: datetime) -> None:
    """Record which tenants are under SLA from ``now``; the daemon calls it before it
    takes mail, so no ticket opened under SLA is missed by a late first round (a
    reload is recorded by the next round, a few seconds later)."""
    clocks.sync_sla_states(
        conn, {t.slug for t in config.tenants if t.sla}, clocks.sla_states(conn), now
    )


def check_sla(
    conn: Connection,
    config: GatewayConfig,
    now: datetime,
    templates: Templates | None = None,
    *,
    dry_run: bool = False,
) -> list[Notice]:
    """Queue the warnings and breaches that are due and not yet sent: one mail per agent
    per ``[tenants.sla] digest_every`` at most, for tickets opened since SLA began.

    What falls due within a digest period waits, untold and unmarked, for the next
    digest; its audit event is written when it is told, with the moment it was due.
    """
    states = clocks.sla_states(conn)
    if not dry_run:
        start_sla(conn, config, now)
    out: list[Notice] = []
    for tenant in config.tenants:
        if tenant.sla is None:
            continue
        state = states.get(tenant.slug)
        since = state.since if state is not None else now  # starts with this round
        last = state.last_digest_at if state is not None else None
        if last is not None and (now - last).total_seconds() < tenant.sla.digest_every:
            continue
        due = _due(conn, tenant, since, now)
        slug = tenant.slug
        out += [Notice(slug, str(t["ref"]), s.clock, s.state) for t, _, ss in due for s in ss]
        if dry_run or not due:
            continue
        alerts: dict[str, list[_Alert]] = {}
        for ticket, policy, sts in due:
            notified = list(ticket["sla_notified"])
            for st in sts:
                # A breach found without a warning before it (the daemon was down, or a
                # digest period held it) is told once, as a breach.
                notified += [f"{st.clock}:{st.state}"]
                if st.state == "breached":
                    notified.append(f"{st.clock}:warning")
                _audit(conn, tenant, ticket, st)
            clocks.set_notified(conn, tenant.slug, int(ticket["id"]), sorted(set(notified)))
            for agent in _recipients(tenant, ticket):
                for st in sts:
                    alerts.setdefault(agent.address, []).append(_Alert(ticket, policy, st))
        _send(conn, config, tenant, alerts, now, templates)
        clocks.set_digest_sent(conn, tenant.slug, now)
    return out


@dataclass(frozen=True, slots=True)
class _Alert:
    ticket: dict[str, object]
    policy: SlaPolicy
    state: ClockState


def _due(
    conn: Connection, tenant: Tenant, since: datetime, now: datetime
) -> list[tuple[dict[str, object], SlaPolicy, list[ClockState]]]:
    """Each open ticket opened since SLA began with the clocks it has not been told of."""
    assert tenant.sla is not None
    out = []
    for ticket in clocks.open_tickets(conn, tenant.slug, since):
        policy = tenant.sla.policy_for(ticket["queue"], ticket["priority"])
        notified = set(ticket["sla_notified"])
        sts = [
            st
            for st in clock_states(policy, ticket, now)
            if st.state in ("warning", "breached") and f"{st.clock}:{st.state}" not in notified
        ]
        if sts:
            out.append((ticket, policy, sts))
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


def _audit(conn: Connection, tenant: Tenant, ticket: dict[str, object], st: ClockState) -> None:
    repos.add_audit(
        conn,
        tenant.slug,
        f"sla.{st.state}",
        actor="gateway",
        ticket_id=int(ticket["id"]),  # type: ignore[call-overload]
        detail={
            "clock": st.clock,
            "target_seconds": st.target,
            "elapsed_seconds": round(st.elapsed),
            "due_at": st.due_at.isoformat() if st.due_at else None,
            "queue": ticket["queue"],
            "priority": ticket["priority"],
        },
    )


def _values(policy: SlaPolicy, st: ClockState) -> dict[str, str]:
    """What the templates say of one clock."""
    cal = policy.calendar
    due = ""
    if st.due_at is not None:
        zone = cal.tz if cal.tz is not None else None
        due = st.due_at.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")
    return {
        "state": st.state,
        "clock": _LABEL[st.clock],
        "target": format_duration(st.target),
        "elapsed": format_duration(st.elapsed),
        "calendar": "around the clock" if cal.always else f"business hours, {cal.tz}",
        "due": due,
    }


def _send(
    conn: Connection,
    config: GatewayConfig,
    tenant: Tenant,
    alerts: dict[str, list[_Alert]],
    now: datetime,
    templates: Templates | None,
) -> None:
    """One mail per agent: a single alert as the ticket's own notice (answering it
    reaches the client), several as one digest. Never to a bouncing address."""
    assert tenant.sla is not None
    bouncing = bouncing_among(conn, tenant.slug, list(alerts))
    extra = {"templates": templates} if templates is not None else {}
    local, _, domain = tenant.addresses[0].partition("@")
    for address, mine in alerts.items():
        agent = tenant.agent(address)
        if agent is None or address in bouncing:
            continue
        if len(mine) == 1:
            (a,) = mine
            ref = str(a.ticket["ref"])
            number = int(ref.rsplit("-", 1)[1])
            token = make_token(config.secret, tenant.slug, number, address)
            (mail,) = sla_notice(
                tenant=tenant,
                hostname=config.hostname,
                agents=[agent],
                ref=ref,
                subject=str(a.ticket["subject"]),
                reply_to={address: f"{local}+{token}@{domain}"},
                values=_values(a.policy, a.state),
                now=now,
                **extra,  # type: ignore[arg-type]
            )
            queue(conn, tenant.slug, "sla", int(a.ticket["id"]), mail)  # type: ignore[call-overload]
            continue
        items = [
            {**_values(a.policy, a.state), "ref": str(a.ticket["ref"]),
             "subject": str(a.ticket["subject"])}
            for a in mine
        ]  # fmt: skip
        mail = sla_digest(
            tenant=tenant,
            hostname=config.hostname,
            agent=agent,
            items=items,
            every=format_duration(tenant.sla.digest_every),
            now=now,
            **extra,  # type: ignore[arg-type]
        )
        queue(conn, tenant.slug, "sla", None, mail)
