"""What the gateway sends because a message was stored, queued in the same transaction.

A client's new ticket gets an acknowledgement (rate-limited per sender, RFC
3834) and the agents a notice; a client's follow-up notifies the agents; an
agent's reply (recognised by its token and its From) acts on its leading
commands and is relayed to the ticket's clients. Machines get nothing.

Each reaction runs ``guarded`` (outbound/guard.py): one that fails never
fails the mail it reacts to.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.engine import Connection

from outbound.compose import (
    Composed,
    Templates,
    acknowledgement,
    agent_notice,
    failure_notice,
    refusal_notice,
    relay,
)
from outbound.guard import guarded
from outbound.language import client_language, remember_language
from outbound.participants import apply_cc, is_ours
from parsers.types import ParsedMessage
from routing.commands import split_commands
from routing.config import Agent, GatewayConfig, Tenant
from routing.tokens import make_token
from store import repos

__all__ = ["Event", "bounced", "is_ours", "queue", "queue_agents", "react"]

_CHANGE_ACTIONS = {
    "status": "ticket.status",
    "priority": "ticket.priority",
    "assignee": "ticket.assigned",
}
_NO_ANSWER_LOCALPARTS = {"mailer-daemon", "postmaster", "noreply", "no-reply", "do-not-reply"}


@dataclass(frozen=True, slots=True)
class Event:
    """One stored message, as the reactions see it."""

    tenant: Tenant
    address: str  # the tenant address it came to (replies go to its plus form)
    ticket_id: int
    ref: str
    created: bool
    role: str  # client | agent
    agent: Agent | None
    parsed: ParsedMessage
    sender: str
    message_row: int = 0  # the stored message, so a #note can be marked internal
    acknowledge: bool | None = None  # a routing rule's say; None: the tenant's setting
    notify: tuple[Agent, ...] | None = None  # the queue's agents; None: all the tenant's
    subject: str = ""  # the ticket's subject, when the caller has it at hand
    # Why the message changes nothing ("unverified": its From failed authentication;
    # "outsider": not a participant; docs/security.md): nothing about the sender's
    # address changes by it, and the agents' notice says so first.
    caution: str = ""


def react(
    conn: Connection, config: GatewayConfig, ev: Event, templates: Templates, now: datetime
) -> list[str]:
    """Queue what this message calls for; return the kinds queued (for the log line)."""
    if ev.role == "agent" and ev.agent is not None:
        return _agent_reply(conn, config, ev, ev.agent, templates, now)
    if ev.caution == "refused" and ev.agent is not None:
        mail = refusal_notice(
            tenant=ev.tenant,
            hostname=config.hostname,
            agent=ev.agent,
            ref=ev.ref,
            subject=ev.subject or _ticket_subject(conn, ev),
            sender=ev.sender,
            in_reply_to=ev.parsed.message_id,
            now=now,
        )
        queue(conn, ev.tenant.slug, "refusal", ev.ticket_id, mail, now=now)
        return ["refusal"]
    outgoing: list[tuple[str, Composed]] = []
    slug = ev.tenant.slug
    agents = ev.tenant.agents if ev.notify is None else ev.notify
    # One look at the bouncing marks for the sender and every agent: a client who
    # writes to us is reachable again, so their mark goes.
    bouncing = repos.bouncing_among(conn, slug, [ev.sender, *(a.address for a in agents)])
    if (
        not ev.caution
        and ev.sender.lower() in bouncing
        and repos.clear_bouncing(conn, slug, ev.sender)
    ):
        repos.add_audit(
            conn, slug, "address.unbounced", actor=ev.sender, ticket_id=ev.ticket_id, now=now
        )
        bouncing.discard(ev.sender.lower())
    lang = ev.tenant.languages[0]
    if not ev.caution:  # a stranger's or a forger's words say nothing of the client's language
        lang = remember_language(conn, ev.tenant, ev.ticket_id, ev.parsed, created=ev.created)
    if ev.created and _may_acknowledge(conn, config, ev, now, bouncing):

        def ack() -> Composed:
            return acknowledgement(
                tenant=ev.tenant,
                hostname=config.hostname,
                ref=ev.ref,
                subject=ev.parsed.subject or "(no subject)",
                to_addr=ev.sender,
                to_name="",  # never the sender's display name: anyone can write anything there
                reply_address=_reply_address(config, ev),
                in_reply_to=ev.parsed.message_id,
                now=now,
                templates=templates,
                lang=lang,
                portal=f"{config.http.public_url.rstrip('/')}/t/{slug}/"
                if config.http.public_url
                else "",
            )

        mail = guarded(conn, slug, ev.ticket_id, "acknowledgement", ack, now, writes=False)
        if mail is not None:
            outgoing.append(("ack", mail))
    if ev.created:  # the ticket holds just this message: no need to ask the store
        refs = [ev.parsed.message_id] if ev.parsed.message_id else []
    else:
        refs = repos.thread_ids(conn, slug, ev.ticket_id)
    subject = ev.subject or _ticket_subject(conn, ev)
    for agent in agents:
        if agent.address in bouncing or agent.address == ev.sender:
            continue

        def notice(agent: Agent = agent) -> Composed:
            return agent_notice(
                tenant=ev.tenant,
                hostname=config.hostname,
                agent=agent,
                event="new" if ev.created else "followup",
                ref=ev.ref,
                subject=subject,
                client=ev.parsed.from_name or ev.sender,
                text=ev.parsed.reply_text or ev.parsed.text,
                reply_address=_reply_address(config, ev, agent),
                in_reply_to=ev.parsed.message_id,
                references=refs,
                now=now,
                templates=templates,
                caution=ev.caution,
            )

        mail = guarded(conn, slug, ev.ticket_id, "notice", notice, now, writes=False)
        if mail is not None:
            outgoing.append(("notice", mail))
    queue_all(conn, slug, ev.ticket_id, outgoing, now=now)
    return [kind for kind, _ in outgoing]


def bounced(
    conn: Connection,
    config: GatewayConfig,
    tenant: Tenant,
    ticket_id: int,
    parsed: ParsedMessage,
    now: datetime,
) -> list[str]:
    """A DSN about mail we sent: permanent failures stop our mail to that address.

    Only a bounce that names one of our own Message-IDs counts, so a forged
    DSN about someone else's mail cannot silence a client. A later mail from
    the address clears the mark (see ``react``).
    """
    hints = parsed.thread_hints
    ours = repos.sent_by_us(
        conn, tenant.slug, [i for i in (hints.in_reply_to, *hints.references) if i]
    )
    if not ours:
        return []
    marked: list[str] = []
    for address, action, status in parsed.dsn:
        if action == "failed" and status.startswith("5.") and not is_ours(config, address):
            if repos.mark_bouncing(
                conn, tenant.slug, address, status, f"DSN {status} for {ours[0]}", now=now
            ):
                marked.append(address)
                repos.add_audit(
                    conn,
                    tenant.slug,
                    "address.bouncing",
                    actor=address,
                    ticket_id=ticket_id,
                    detail={"status": status, "message_id": ours[0]},
                    now=now,
                )
    if marked and tenant.agents:
        row = repos.ticket_row(conn, tenant.slug, ticket_id)
        mail = failure_notice(
            tenant=tenant,
            hostname=config.hostname,
            agents=tenant.agents,
            ref=str(row["ref"]) if row else "-",
            subject=str(row["subject"]) if row else "(no subject)",
            recipients=marked,
            reason="the receiving server bounced our mail permanently; no more mail is sent "
            "to this address until it writes to us again",
            now=now,
        )
        queue(conn, tenant.slug, "failure", ticket_id, mail, now=now)
    return marked


def queue_agents(conn: Connection, tenant: Tenant, ticket_id: int) -> tuple[Agent, ...] | None:
    """The agents a ticket's queue names, and its assignee; None when its queue names
    none (then every agent hears)."""
    if not any(q.agents for q in tenant.queues):
        return None
    row = repos.ticket_row(conn, tenant.slug, ticket_id) or {}
    q = tenant.queue(row.get("queue"))
    if q is None or not q.agents:
        return None
    wanted = {*q.agents, row.get("assignee")}
    return tuple(a for a in tenant.agents if a.address in wanted)


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


def _agent_reply(
    conn: Connection,
    config: GatewayConfig,
    ev: Event,
    agent: Agent,
    templates: Templates,
    now: datetime,
) -> list[str]:
    slug = ev.tenant.slug
    commands, text = split_commands(ev.parsed.reply_text)
    changes: dict[str, str | None] = {}
    if commands.status:
        changes["status"] = commands.status
    if commands.priority:
        changes["priority"] = commands.priority
    problems = list(commands.problems)
    if commands.assign:
        if ev.tenant.agent(commands.assign) is not None:
            changes["assignee"] = commands.assign
        else:
            problems.append(f"#assign: {commands.assign} is not an agent of this tenant")
    if changes:
        before = repos.ticket_row(conn, slug, ev.ticket_id) or {}
        repos.update_ticket(conn, slug, ev.ticket_id, now=now, **changes)
        for key, value in changes.items():  # one audit event per change, old and new value
            repos.add_audit(
                conn,
                slug,
                _CHANGE_ACTIONS[key],
                actor=agent.address,
                ticket_id=ev.ticket_id,
                detail={"from": before.get(key), "to": value},
                now=now,
            )
    cc = apply_cc(
        conn, config, ev.tenant.slug, ev.ticket_id, agent,
        commands.cc_add, commands.cc_remove, problems, now,
    )
    if changes or problems or cc:
        repos.add_audit(
            conn,
            slug,
            "ticket.commands",
            actor=agent.address,
            ticket_id=ev.ticket_id,
            detail={"changes": changes, "problems": problems, "note": commands.note, "cc": cc},
            now=now,
        )
    if commands.note:
        if ev.message_row:
            repos.add_message_flag(conn, slug, ev.message_row, "internal")
        return ["note"]
    if not text.strip():
        return []
    ours = {x for a in ev.tenant.agents for x in (a.address, *a.aliases)}
    ours |= set(ev.tenant.addresses)
    clients = [
        p
        for p in repos.participants_of(conn, slug, ev.ticket_id)
        if p["role"] in ("client", "cc") and p["address"] not in ours
    ]
    bouncing = repos.bouncing_among(conn, slug, [p["address"] for p in clients])
    to = [(p["name"], p["address"]) for p in clients if p["address"] not in bouncing]
    if not to:
        return []
    client_ids = repos.thread_ids(conn, slug, ev.ticket_id, role="client")

    def send() -> bool:
        mail = relay(
            tenant=ev.tenant,
            hostname=config.hostname,
            agent=agent,
            ref=ev.ref,
            subject=_ticket_subject(conn, ev),
            to=to,
            text=text,
            reply_address=_reply_address(config, ev),
            in_reply_to=client_ids[-1] if client_ids else None,
            references=client_ids,
            now=now,
            templates=templates,
            lang=client_language(conn, ev.tenant, ev.ticket_id),
        )
        queue(conn, slug, "relay", ev.ticket_id, mail, now=now)
        return True

    return ["relay"] if guarded(conn, slug, ev.ticket_id, "relay", send, now) else []


def _may_acknowledge(
    conn: Connection, config: GatewayConfig, ev: Event, now: datetime, bouncing: set[str]
) -> bool:
    """Never to robots, ourselves or a bouncing address; at most N per sender per window."""
    wanted = ev.tenant.acknowledge if ev.acknowledge is None else ev.acknowledge
    if not wanted or not ev.sender or "@" not in ev.sender:
        return False
    local = ev.sender.split("@", 1)[0].split("+", 1)[0]
    if local in _NO_ANSWER_LOCALPARTS or is_ours(config, ev.sender):
        return False
    if ev.sender.lower() in bouncing:
        return False
    t = ev.tenant
    limit = config.outbound.ack_limit if t.ack_limit is None else t.ack_limit
    window = config.outbound.ack_window if t.ack_window is None else t.ack_window
    since = now - timedelta(seconds=window)
    return repos.acks_since(conn, ev.tenant.slug, ev.sender, since) < limit


def _reply_address(config: GatewayConfig, ev: Event, agent: Agent | None = None) -> str:
    number = int(ev.ref.rsplit("-", 1)[1])
    token = make_token(config.secret, ev.tenant.slug, number, agent.address if agent else None)
    local, _, domain = ev.address.partition("@")
    return f"{local}+{token}@{domain}"


def _ticket_subject(conn: Connection, ev: Event) -> str:
    row = repos.ticket_row(conn, ev.tenant.slug, ev.ticket_id)
    return str(row["subject"]) if row else (ev.parsed.subject or "(no subject)")
