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

from outbound.agent_reply import agent_reply, ticket_subject
from outbound.compose import (
    Composed,
    Templates,
    acknowledgement,
    agent_notice,
    refusal_notice,
)
from outbound.files import carried
from outbound.guard import guarded
from outbound.language import remember_language
from outbound.outbox import (
    client_recipients,
    queue,
    queue_all,
    queue_failure_notice,
    reply_address,
)
from outbound.participants import is_ours
from parsers.types import ParsedMessage
from routing.config import Agent, GatewayConfig, Tenant
from store import acks, repos
from store.bouncing import agents_bouncing, bouncing_among, clear_bouncing, mark_bouncing

__all__ = [
    "Event",
    "ack_window_start",
    "bounced",
    "client_recipients",
    "is_ours",
    "queue",
    "queue_agents",
    "react",
    "reply_address",
]

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
    reopened: bool = False  # a client's reply reopened the closed ticket
    language: str | None = None  # to answer in, when the plan knew it (no read, no write)
    # The sender's bouncing mark, when the lookup read it (store/bouncing.py first_look);
    # None: read here with the agents'.
    sender_bouncing: bool | None = None
    # The acknowledgements stored to the sender within the rate limit's window
    # (``ack_window_start``), read with the dedupe key too; None: counted here.
    sender_acks: int | None = None
    # The ticket's Message-IDs once this message is stored, oldest first (read with its
    # state before: store/ticket_life.py ``thread_after``); None: read here.
    thread: tuple[str, ...] | None = None


def react(
    conn: Connection, config: GatewayConfig, ev: Event, templates: Templates, now: datetime
) -> list[str]:
    """Queue what this message calls for; return the kinds queued (for the log line)."""
    if ev.role == "agent" and ev.agent is not None:
        return agent_reply(conn, config, ev, ev.agent, now, templates)
    if ev.caution == "refused" and ev.agent is not None:
        mail = refusal_notice(
            tenant=ev.tenant,
            hostname=config.hostname,
            agent=ev.agent,
            ref=ev.ref,
            subject=ev.subject or ticket_subject(conn, ev),
            sender=ev.sender,
            in_reply_to=ev.parsed.message_id,
            now=now,
        )
        queue(conn, ev.tenant.slug, "refusal", ev.ticket_id, mail, now=now)
        return ["refusal"]
    outgoing: list[tuple[str, Composed]] = []
    slug = ev.tenant.slug
    agents = ev.tenant.agents if ev.notify is None else ev.notify
    # The bouncing marks of the sender and every agent (the agents' once a batch, the
    # sender's read with the dedupe key): a client who writes to us is reachable again,
    # so their mark goes.
    if ev.sender_bouncing is None:
        bouncing = bouncing_among(conn, slug, [ev.sender, *(a.address for a in agents)])
    else:
        bouncing = agents_bouncing(conn, slug, [a.address for a in agents])
        if ev.sender_bouncing:
            bouncing.add(ev.sender.lower())
    if not ev.caution and ev.sender.lower() in bouncing and clear_bouncing(conn, slug, ev.sender):
        repos.add_audit(
            conn, slug, "address.unbounced", actor=ev.sender, ticket_id=ev.ticket_id, now=now
        )
        bouncing.discard(ev.sender.lower())
    lang = ev.tenant.languages[0]
    if ev.language is not None:
        lang = ev.language
    elif not ev.caution:  # a stranger's or a forger's words say nothing of the client's language
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
    elif ev.thread is not None:
        refs = list(ev.thread)
    else:
        refs = repos.thread_ids(conn, slug, ev.ticket_id)
    subject = ev.subject or ticket_subject(conn, ev)
    ticket_url = config.http.agent_ticket_url(slug, ev.ref)
    files, left_out = carried(
        conn,
        ev.parsed.attachments,
        config.data_dir / "blobs",
        limit=config.outbound.notice_attachments_max,
        withhold=bool(ev.caution),
    )
    for agent in agents:
        # An agent is not told of their own mail, unless it only claims to be theirs:
        # a forged From of an agent is the one notice that agent must get.
        own = agent.address == ev.sender and ev.caution != "unverified"
        if agent.address in bouncing or own:
            continue

        def notice(agent: Agent = agent) -> Composed:
            return agent_notice(
                tenant=ev.tenant,
                hostname=config.hostname,
                agent=agent,
                event="new" if ev.created else ("reopened" if ev.reopened else "followup"),
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
                ticket_url=ticket_url,
                html=ev.parsed.html_reply,
                files=files,
                left_out=left_out,
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
            if mark_bouncing(
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
    if marked:
        queue_failure_notice(
            conn,
            config,
            tenant,
            ticket_id,
            marked,
            "the receiving server bounced our mail permanently; no more mail is sent "
            "to this address until it writes to us again",
            now,
        )
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
    since = ack_window_start(config, t, now)
    if ev.sender_acks is None:
        return acks.acks_since(conn, t.slug, ev.sender, since) < limit
    return ev.sender_acks + acks.acks_held(conn, t.slug, ev.sender, since) < limit


def ack_window_start(config: GatewayConfig, tenant: Tenant, now: datetime) -> datetime:
    """Since when a sender's acknowledgements count against the rate limit."""
    window = config.outbound.ack_window if tenant.ack_window is None else tenant.ack_window
    return now - timedelta(seconds=window)


def _reply_address(config: GatewayConfig, ev: Event, agent: Agent | None = None) -> str:
    return reply_address(config, ev.tenant.slug, ev.address, ev.ref, agent)
