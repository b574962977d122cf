"""The commit of one message, as stages: look up, decide, write, react.

All of it runs in the writer's transaction, one savepoint per message: a
tenant's rule that rejects the message rolls back what the other tenants
of the same envelope already wrote, and the writer's batch commits its
other messages as if this one had never come. ``explain_commit`` runs the
very same stages and rolls them back, so ``gateway route explain`` shows
what the pipeline does, not a second description of it that could drift.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from gateway.intake.decide import Arrival, Plan, Seen, decide
from outbound.compose import Templates
from outbound.guard import guarded, guarded_pair
from outbound.reactions import Event, ack_window_start, bounced, queue_agents, react
from parsers.types import ParsedMessage, RawMessage
from routing.auth import NONE, AuthVerdict
from routing.config import GatewayConfig
from routing.tenants import AddressIndex, Recipient
from routing.threader import find_ticket, references_asked
from routing.verdicts import Reject, Stored
from store import clocks, ingest, repos, ticket_life
from store.bouncing import first_look
from store.db import Savepoint
from store.ingest import Written

__all__ = ["Job", "commit_message", "explain_commit", "jobs", "lookup"]


@dataclass
class Job:
    """One tenant the envelope names, with the reply tokens its recipients carry."""

    recipient: Recipient
    tokens: list[str] = field(default_factory=list)


def jobs(index: AddressIndex, rcpt_tos: tuple[str, ...]) -> dict[str, Job]:
    out: dict[str, Job] = {}
    for rcpt in rcpt_tos:
        r = index.lookup(rcpt)
        if r is None:
            continue
        job = out.setdefault(r.tenant.slug, Job(r))
        if r.token:
            job.tokens.append(r.token)
    return out


def lookup(conn: Connection, config: GatewayConfig, job: Job, msg: Arrival) -> Seen:
    """The reads a decision needs: is it stored already, and which ticket does it continue."""
    tenant, mid, raw_sha = job.recipient.tenant, msg.parsed.message_id, msg.sha256
    key = mid or f"sha256:{raw_sha}"
    since = ack_window_start(config, tenant, msg.now)
    asked = references_asked(msg.parsed.thread_hints)
    existing, bounces, acks, stored, guessed = first_look(
        conn, tenant.slug, key, msg.sender, since, asked
    )
    reused = False
    if existing is not None and mid:
        if existing == raw_sha:
            return Seen(key, duplicate=True)
        copy = ticket_life.stored_copy(conn, tenant.slug, key)
        if copy is not None and _same_mail(copy, msg):
            # The same mail delivered again (To and Cc of one tenant, forwarded in two
            # transactions: other Received lines): one message, this delivery audited.
            return Seen(key, duplicate=True, copy_of=copy["id"], copy_ticket=copy["ticket_id"])
        # Same Message-ID, other mail: keep it, flagged (GLPI mailanalyzer #64).
        key, reused = f"{mid}#{raw_sha}", True
        existing = repos.find_message(conn, tenant.slug, key)
    if existing is not None:
        return Seen(key, duplicate=True, key_reused=reused)
    match = find_ticket(
        conn,
        tenant,
        config.secret,
        msg.parsed.thread_hints,
        envelope_token=job.tokens[0] if job.tokens else None,
        sender=msg.sender,
        stored=stored,
    )
    state = (
        ticket_life.sender_state(conn, tenant.slug, match.ticket_id, msg.sender, guessed)
        if match.ticket_id is not None
        else None
    )
    if state is None:
        return Seen(key, duplicate=False, key_reused=reused, match=match, bouncing=bounces,
                    acks=acks)  # fmt: skip
    return Seen(
        key, duplicate=False, key_reused=reused, match=match, participant=state.taking_part,
        status=state.status, language=state.language, bouncing=bounces, acks=acks,
        thread=state.thread,
    )  # fmt: skip


def _same_mail(copy: dict[str, Any], msg: Arrival) -> bool:
    """A stored message this one repeats: same sender, subject and text; only the
    transport headers (Received, Delivered-To, ...) may differ."""
    p = msg.parsed
    return (copy["from_addr"], copy["subject"], copy["text"]) == (msg.sender, p.subject, p.text)


def commit_message(
    conn: Connection,
    config: GatewayConfig,
    templates: Templates,
    jobs: dict[str, Job],
    msg: Arrival,
    bind: Callable[[Connection], None],
) -> list[Stored] | Reject:
    """Every tenant's stages, all or none: a rule's reject is the answer and leaves nothing.

    ``bind`` writes the message's blobs (database store) or checks them (files): never
    for a rejected message. Several tenants run in one savepoint, which a later tenant's
    reject rolls back. A lone tenant's look-up and decision only read, so its reject
    comes before anything is written and needs no savepoint: on PostgreSQL each is a
    round trip of the writer's (figure 9), and nearly every message has one tenant.
    """
    if len(jobs) == 1:
        (job,) = jobs.values()
        seen, plan = _plan(conn, config, job, msg)
        if plan.reject is not None:
            return plan.reject
        bind(conn)
        return [_carry_out(conn, config, templates, job, msg, seen, plan)]
    savepoint = Savepoint(conn)
    bind(conn)
    stored: list[Stored] = []
    for job in jobs.values():
        seen, plan = _plan(conn, config, job, msg)
        if plan.reject is not None:
            savepoint.rollback()
            return plan.reject
        stored.append(_carry_out(conn, config, templates, job, msg, seen, plan))
    savepoint.commit()
    return stored


def _plan(conn: Connection, config: GatewayConfig, job: Job, msg: Arrival) -> tuple[Seen, Plan]:
    """One tenant's reads and decision: nothing written yet."""
    seen = lookup(conn, config, job, msg)
    return seen, decide(seen, config, job.recipient.tenant, job.recipient.address, msg)


def _carry_out(
    conn: Connection,
    config: GatewayConfig,
    templates: Templates,
    job: Job,
    msg: Arrival,
    seen: Seen,
    plan: Plan,
) -> Stored:
    """One tenant's writes and reactions for a plan that is no reject: its answer with the
    ticket's ref filled in (not a new plan: ``dataclasses.replace`` of the plan cost more
    than the answer's line)."""
    slug = job.recipient.tenant.slug
    if plan.audit is not None:
        ingest.audit(conn, slug, plan.audit, msg.now)
    if plan.ingest is None:
        return plan.stored
    written = ingest.write(conn, slug, plan.ingest, msg.now)
    if written.ticket_id is None:
        return plan.stored
    if plan.reaction is not None:
        _react(conn, config, templates, job, plan, written, msg, seen)
    return replace(plan.stored, ticket_ref=written.ref)


def _react(
    conn: Connection,
    config: GatewayConfig,
    templates: Templates,
    job: Job,
    plan: Plan,
    written: Written,
    msg: Arrival,
    seen: Seen,
) -> None:
    """What the stored message calls for: mail queued in this transaction, and the clocks.

    The reactions and the clocks guarded (``guarded_pair``: one savepoint for both while
    they succeed): one that fails is undone alone and recorded, and the message stays
    committed; a 4xx would only bring it back.
    """
    r, ticket_id = plan.reaction, written.ticket_id
    assert r is not None and ticket_id is not None
    tenant, parsed, sender, now = job.recipient.tenant, msg.parsed, msg.sender, msg.now
    slug = tenant.slug
    if r.role != "machine" and written.ref is not None:
        created = plan.ingest is not None and plan.ingest.open is not None
        thread = None  # the continued ticket's Message-IDs read with its state: with this one
        if not created and seen.thread is not None and plan.ingest is not None:
            thread = ticket_life.thread_after(seen.thread, plan.ingest.message.get("message_id"))
        event = Event(
            tenant=tenant,
            address=job.recipient.address,
            ticket_id=ticket_id,
            ref=written.ref,
            created=created,
            role=r.role,
            agent=r.agent,
            parsed=parsed,
            sender=sender,
            message_row=written.message_row,
            acknowledge=r.acknowledge,
            notify=queue_agents(conn, tenant, ticket_id),
            subject=written.subject,
            caution=r.caution,
            reopened=r.reopened,
            language=r.language,
            sender_bouncing=seen.bouncing,
            sender_acks=seen.acks,
            thread=thread,
        )

        def clock(kinds: list[str] | None) -> None:
            clocks.on_message(
                conn, slug, ticket_id, role=r.role, answered="relay" in (kinds or ()),
                sender=sender, now=now, created=created,
                row=written.clocks if r.role == "client" else None,
            )  # fmt: skip

        # Its clocks do not move for a message that changes nothing (not that person, or
        # not one of the ticket's).
        reactions = ("reactions", lambda: react(conn, config, event, templates, now))
        clocked = None if r.caution else ("clock", clock)
        guarded_pair(conn, slug, ticket_id, reactions, clocked, now)
    elif r.bounce:
        guarded(
            conn, slug, ticket_id, "bounce",
            lambda: bounced(conn, config, tenant, ticket_id, parsed, now), now,
        )  # fmt: skip


def explain_commit(
    conn: Connection,
    config: GatewayConfig,
    raw: RawMessage,
    parsed: ParsedMessage,
    now: datetime,
    auth: AuthVerdict = NONE,
) -> list[dict[str, Any]]:
    """Run the real commit stages for each tenant and say what they did; the caller rolls back.
    ``auth``: the sender's verdict, checked before (as the pipeline does, outside the
    transaction)."""
    out: list[dict[str, Any]] = []
    msg = Arrival(raw, parsed, hashlib.sha256(raw.data).hexdigest(), now, auth)
    templates = Templates.of(config)
    for slug, job in jobs(AddressIndex(config), raw.envelope.rcpt_tos).items():
        item: dict[str, Any] = {"tenant": slug, "address": job.recipient.address}
        last = repos.outbox_last_id(conn)
        nested = conn.begin_nested()
        seen, plan = _plan(conn, config, job, msg)
        if plan.reject is not None:
            r = plan.reject
            item["result"] = {"reply": f"{r.code} {r.enhanced} {r.text}", "rule": r.rule}
            nested.rollback()
        else:
            s = _carry_out(conn, config, templates, job, msg, seen, plan)
            item["result"] = {
                "ticket": s.ticket_ref,
                "thread_by": s.thread_by,
                "duplicate": s.duplicate,
                "flags": list(s.flagged),
            }
            item["outbox"] = repos.outbox_after(conn, slug, last)
            nested.commit()
        item["plan"] = plan
        out.append(item)
    return out
