"""The one path every message takes: parse, route, classify, scan, thread, commit.

Each stage is a plain call; this module only runs them in order and turns
what they say into an Outcome. The commit is the moment of acceptance: a
message is answered 250 (or left the IMAP folder) only after its rows are in
one committed transaction and its blobs are durable before that (fsynced
files) or in that same transaction (the database store).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy.engine import Connection

from gateway import metrics
from gateway.intake.replies import EX_NOUSER, EX_UNAVAILABLE, outcome_for_exception
from gateway.intake.scan import Clean, Infected, Scanner, Unavailable, Unscannable, Verdict
from outbound.compose import Templates
from outbound.reactions import Event, bounced, is_ours, react
from parsers import Limits, parse
from parsers.types import ParsedMessage, RawMessage
from routing.classify import speaker
from routing.config import GatewayConfig, Tenant
from routing.rules import Decision, Facts, evaluate
from routing.rules import Reject as RuleReject
from routing.tenants import AddressIndex, Recipient
from routing.threader import find_ticket
from routing.verdicts import Accepted, Defer, Outcome, Reject, Stored
from store import clocks, repos
from store.blobs import BlobStore
from store.faults import crash_point, message_commit
from store.writer import Writer, for_tenants

__all__ = ["Pipeline"]

log = structlog.get_logger("gateway.intake.pipeline")
_INLINE_PARSE_BYTES = 256 * 1024  # bigger mail is parsed off the event loop


@dataclass
class _TenantJob:
    recipient: Recipient
    tokens: list[str] = field(default_factory=list)


class RuleRejected(Exception):
    """A tenant's rule refuses the message: raised inside the commit so nothing is kept."""

    def __init__(self, tenant: str, rule: str, reject: RuleReject) -> None:
        super().__init__(f"{tenant}: rule {rule!r}")
        self.tenant, self.rule, self.reject = tenant, rule, reject


class Pipeline:
    def __init__(
        self,
        config: GatewayConfig,
        writer: Writer,
        blobs: BlobStore,
        scanner: Scanner | None,
    ) -> None:
        self.writer = writer
        self.blobs = blobs
        self.scanner = scanner
        self.after_commit: Callable[[], None] | None = None  # wakes the outbox worker
        self.configure(config)

    def configure(self, config: GatewayConfig) -> None:
        """Swap in a new config; messages already running keep their snapshot."""
        self.config = config
        self.index = AddressIndex(config)
        self.limits = Limits(
            max_header_bytes=config.limits.max_header_bytes,
            max_mime_depth=config.limits.max_mime_depth,
            max_parts=config.limits.max_parts,
        )
        self.templates = Templates.of(config)

    async def process(self, raw: RawMessage) -> Outcome:
        """Never raises: every fault is an Outcome (a timeout is a Defer)."""
        started = time.perf_counter()
        config, index, limits = self.config, self.index, self.limits
        ctx: dict[str, Any] = {"source": raw.source, "size": len(raw.data)}
        try:
            async with asyncio.timeout(config.smtp.pipeline_timeout):
                outcome = await self._process(raw, config, index, limits, ctx)
        except Exception as exc:  # every fault is an answer, never a traceback
            outcome = outcome_for_exception(exc)
            ctx["error"] = type(exc).__name__
            if isinstance(outcome, Defer):
                log.warning("pipeline_fault", error=type(exc).__name__, detail=str(exc)[:200])
        if isinstance(outcome, Reject) and ctx.get("tenants") and ctx.get("scan") != "infected":
            await self._audit_refusal(outcome, ctx["tenants"], raw, ctx.get("rule"))
        ctx["ms"] = round((time.perf_counter() - started) * 1000, 2)
        _log_outcome(outcome, ctx)
        return outcome

    async def _audit_refusal(
        self, outcome: Reject, tenants: list[str], raw: RawMessage, rule: str | None
    ) -> None:
        """Every refusal of mail meant for a tenant is on its audit log (too big, loop,
        unreadable, a rule's reject), like an infected one (which has its own event);
        nothing of it is stored."""
        detail = {
            "rule": rule,
            "reply": f"{outcome.code} {outcome.enhanced} {outcome.text}",
            "sha256": hashlib.sha256(raw.data).hexdigest(),
            "size": len(raw.data),
            "source": raw.source,
        }
        sender = raw.envelope.mail_from.lower() or "<>"

        def work(conn: Connection) -> None:
            for slug in tenants:
                repos.add_audit(conn, slug, "message.rejected", actor=sender, detail=detail)

        try:
            await self.writer.submit(work)
        except Exception as exc:  # the refusal stands; it must not wait on the store
            log.error("audit.write_failed", action="message.rejected", error=type(exc).__name__)

    async def _process(
        self,
        raw: RawMessage,
        config: GatewayConfig,
        index: AddressIndex,
        limits: Limits,
        ctx: dict[str, Any],
    ) -> Outcome:
        templates = self.templates
        jobs = _jobs(index, raw.envelope.rcpt_tos)
        if not jobs:
            return Reject(550, "5.1.1", "No such recipient here", EX_NOUSER)
        ctx["tenants"] = sorted(jobs)
        if len(raw.data) > config.smtp.max_message_size:
            return Reject(552, "5.3.4", "Message too big for system")

        if len(raw.data) > _INLINE_PARSE_BYTES:
            parsed = await asyncio.to_thread(parse, raw.data, limits=limits)
        else:
            parsed = parse(raw.data, limits=limits)
        ctx["kind"] = parsed.kind
        ctx["attachments"] = len(parsed.attachments)
        if parsed.received_count > config.smtp.max_received:
            return Reject(554, "5.4.0", "Too many hops, mail loop suspected")

        raw_sha = hashlib.sha256(raw.data).hexdigest()
        if needs_scan(parsed):
            verdict = await self._scan(raw, parsed)
            ctx["scan"] = type(verdict).__name__.lower()
            if not isinstance(verdict, Clean):
                return await self._refuse(verdict, jobs, raw, parsed, raw_sha, ctx)
        staged = await self.blobs.stage([raw.data, *(a.data for a in parsed.attachments)])

        def work(conn: Connection) -> list[Stored]:
            # Files: fsynced already, checked not collected since (else 451, and the
            # retry writes them again). Database: written here, in this transaction.
            self.blobs.bind(conn, staged)
            return [
                _commit_one(conn, config, templates, job, raw, parsed, raw_sha)
                for job in jobs.values()
            ]

        try:
            stored = await self.writer.submit(message_commit(for_tenants(work, jobs)))
        except RuleRejected as exc:
            # Audited (in process) on the rejecting tenant's log only: the other
            # recipients' tenants must not learn another tenant's rule names.
            ctx["rule"], ctx["tenants"] = exc.rule, [exc.tenant]
            r = exc.reject
            return Reject(r.code, r.enhanced, r.text, EX_UNAVAILABLE)
        if self.after_commit is not None:
            self.after_commit()
        crash_point("after_commit_before_reply")
        return Accepted(tuple(stored))

    async def _scan(self, raw: RawMessage, parsed: ParsedMessage) -> Verdict:
        """The raw message (clamd decodes MIME, archives, enclosed mail) and every part as
        we decoded it, so a MIME trick that clamd reads differently from us hides nothing
        we store. One absolute deadline covers all of it."""
        if self.scanner is None:
            return Unavailable("no scanner configured")
        streams: dict[str, bytes] = {"raw": raw.data}
        for a in parsed.attachments:
            streams.setdefault(a.sha256, a.data)  # identical parts are scanned once
        return await self.scanner.scan_many(streams.values())

    async def _refuse(
        self,
        verdict: Verdict,
        jobs: dict[str, _TenantJob],
        raw: RawMessage,
        parsed: ParsedMessage,
        raw_sha: str,
        ctx: dict[str, Any],
    ) -> Outcome:
        """Nothing of the message is stored; an infected one leaves an audit event per tenant."""
        if isinstance(verdict, Infected):
            ctx["signature"] = verdict.signature
            await self._audit_infected(verdict, jobs, raw, parsed, raw_sha)
            if verdict.limits_exceeded:
                text = "Message content rejected: too complex to scan"
            else:
                text = f"Message content rejected: virus found ({verdict.signature})"
            return Reject(554, "5.7.1", text, EX_UNAVAILABLE)
        if isinstance(verdict, Unscannable):
            ctx["scan_detail"] = verdict.reason
            return Reject(552, "5.3.4", "Message too big to be scanned", EX_UNAVAILABLE)
        assert isinstance(verdict, Unavailable)
        ctx["scan_detail"] = verdict.reason
        log.warning("scanner.unavailable", reason=verdict.reason, tenants=sorted(jobs))
        return Defer("Virus scanner unavailable, try again later", 451, "4.7.1")

    async def _audit_infected(
        self,
        verdict: Infected,
        jobs: dict[str, _TenantJob],
        raw: RawMessage,
        parsed: ParsedMessage,
        raw_sha: str,
    ) -> None:
        sender = parsed.from_addr or raw.envelope.mail_from.lower()
        detail = {
            "signature": verdict.signature,
            "sha256": raw_sha,
            "size": len(raw.data),
            "envelope_from": raw.envelope.mail_from.lower(),
            "message_id": parsed.message_id,
            "attachments": [
                {"filename": a.filename, "sha256": a.sha256, "size": a.size}
                for a in parsed.attachments
            ],
            "source": raw.source,
        }

        def work(conn: Connection) -> None:
            for slug in jobs:
                repos.add_audit(conn, slug, "message.infected", actor=sender, detail=detail)

        try:
            await self.writer.submit(work)
        except Exception as exc:  # the 554 stands; the refusal must not wait on the store
            log.error("audit.write_failed", action="message.infected", error=type(exc).__name__)


def _jobs(index: AddressIndex, rcpt_tos: tuple[str, ...]) -> dict[str, _TenantJob]:
    """One job per tenant the envelope names, with the reply tokens its recipients carry."""
    jobs: dict[str, _TenantJob] = {}
    for rcpt in rcpt_tos:
        r = index.lookup(rcpt)
        if r is None:
            continue
        job = jobs.setdefault(r.tenant.slug, _TenantJob(r))
        if r.token:
            job.tokens.append(r.token)
    return jobs


def explain_commit(
    conn: Connection, config: GatewayConfig, raw: RawMessage, parsed: ParsedMessage
) -> list[dict[str, Any]]:
    """Run the real commit path for each tenant and say what it did; the caller rolls back.

    ``gateway route explain`` uses this so that what it shows is what the
    pipeline does, not a second description of it that could drift.
    """
    out: list[dict[str, Any]] = []
    raw_sha = hashlib.sha256(raw.data).hexdigest()
    templates = Templates.of(config)
    for slug, job in _jobs(AddressIndex(config), raw.envelope.rcpt_tos).items():
        trace: dict[str, Any] = {}
        item: dict[str, Any] = {"tenant": slug, "address": job.recipient.address}
        last = repos.outbox_last_id(conn)
        nested = conn.begin_nested()
        try:
            stored = _commit_one(conn, config, templates, job, raw, parsed, raw_sha, trace)
        except RuleRejected as exc:
            r = exc.reject
            item["result"] = {"reply": f"{r.code} {r.enhanced} {r.text}", "rule": exc.rule}
            nested.rollback()
        else:
            item["result"] = {
                "ticket": stored.ticket_ref,
                "thread_by": stored.thread_by,
                "duplicate": stored.duplicate,
                "flags": list(stored.flagged),
            }
            item["outbox"] = repos.outbox_after(conn, slug, last)
            nested.commit()
        item["trace"] = trace
        out.append(item)
    return out


def needs_scan(parsed: ParsedMessage) -> bool:
    """Any attachment (inline included) or enclosed message means clamd must see it first."""
    return bool(parsed.attachments) or any(
        t.startswith("message/") and t not in _REPORT_TYPES for t in parsed.content_types
    )


_REPORT_TYPES = {
    "message/delivery-status",
    "message/global-delivery-status",
    "message/disposition-notification",
    "message/feedback-report",
    "message/global-headers",
}


def _commit_one(
    conn: Connection,
    config: GatewayConfig,
    templates: Templates,
    job: _TenantJob,
    raw: RawMessage,
    parsed: ParsedMessage,
    raw_sha: str,
    trace: dict[str, Any] | None = None,
) -> Stored:
    """Store one message for one tenant; ``trace`` (explain) receives the decisions."""
    tenant: Tenant = job.recipient.tenant
    slug = tenant.slug
    flags: list[str] = []

    key = parsed.message_id or f"sha256:{raw_sha}"
    existing = repos.find_message(conn, slug, key)
    if existing is not None and parsed.message_id:
        if existing == raw_sha:
            return Stored(slug, None, "none", duplicate=True)
        # Same Message-ID, other bytes: keep it, flagged (GLPI mailanalyzer #64).
        key = f"{parsed.message_id}#{raw_sha}"
        flags.append("message-id-reused")
        existing = repos.find_message(conn, slug, key)
    if existing is not None:
        return Stored(slug, None, "none", duplicate=True)

    sender = parsed.from_addr or raw.envelope.mail_from.lower()
    match = find_ticket(
        conn,
        tenant,
        config.secret,
        parsed.thread_hints,
        envelope_token=job.tokens[0] if job.tokens else None,
        sender=sender,
    )
    role, agent = speaker(parsed, raw.envelope.mail_from, tenant, match.claim, config.hostname)
    if role == "agent" and (agent is None or agent.address != sender):
        # An agent's token with someone else's From: kept for agents to see, never relayed.
        role, agent = "client", None
        flags.append("agent-token-from-mismatch")

    ticket_id = match.ticket_id
    facts = Facts(
        parsed=parsed,
        recipient=job.recipient.address,
        size=len(raw.data),
        now=repos.now(),
        new_ticket=ticket_id is None and role != "machine",
    )
    decision = evaluate(tenant.rules, facts)
    if trace is not None:
        trace.update(match=match, role=role, agent=agent, decision=decision)
    if decision.reject is not None:
        raise RuleRejected(slug, *decision.reject)
    if decision.drop is not None:
        repos.add_audit(
            conn,
            slug,
            "message.dropped",
            actor=sender,
            ticket_id=ticket_id,
            detail={
                "rule": decision.drop,
                "sha256": raw_sha,
                "message_id": parsed.message_id,
                "subject": parsed.subject[:200],
                "source": raw.source,
            },
        )
        return Stored(slug, None, "dropped")

    thread_by = match.by
    ref: str | None = None
    ticket_subject = ""
    created = False
    if ticket_id is None and role != "machine":
        subject = ticket_subject = parsed.subject.strip() or "(no subject)"
        ticket_id, ref = repos.new_ticket(
            conn, slug, tenant.tag_prefix, subject, queue=decision.queue or tenant.default_queue
        )
        created, thread_by = True, "new"
        _apply_rules(conn, slug, ticket_id, decision, created=True)
    elif ticket_id is not None:
        ref, ticket_subject = repos.touch_ticket(conn, slug, ticket_id) or (None, "")
        _apply_rules(conn, slug, ticket_id, decision, created=False)

    row = repos.insert_message(
        conn,
        slug,
        ticket_id=ticket_id,
        message_key=key,
        message_id=parsed.message_id,
        direction="in",
        kind=parsed.kind,
        sender_role=role,
        from_addr=sender,
        from_name=parsed.from_name,
        to_addrs=list(parsed.to),
        cc_addrs=list(parsed.cc),
        subject=parsed.subject,
        date=parsed.date,
        text=parsed.text,
        reply_text=parsed.reply_text,
        html=parsed.html,
        raw_sha256=raw_sha,
        raw_size=len(raw.data),
        defects=list(parsed.defects),
        flags=flags,
        thread_by=thread_by,
        envelope_from=raw.envelope.mail_from.lower(),
        source=raw.source,
        rules=decision.matched,
    )
    repos.insert_attachments(
        conn,
        slug,
        row,
        [
            {
                "filename": a.filename,
                "content_type": a.content_type,
                "size": a.size,
                "sha256": a.sha256,
                "inline": a.inline,
                "content_id": a.content_id,
            }
            for a in parsed.attachments
        ],
    )
    detail: dict[str, Any] = {"message": row, "kind": parsed.kind, "by": thread_by}
    if decision.matched:
        detail["rules"] = decision.matched
    if ticket_id is None:
        repos.add_audit(conn, slug, "message.recorded", actor=sender, detail=detail)
        return Stored(slug, None, "none", flagged=tuple(flags))

    if parsed.message_id:
        repos.record_message_id(conn, slug, parsed.message_id, ticket_id, "in")
    if role == "client":
        repos.add_participant(
            conn, slug, ticket_id, sender, parsed.from_name, "client" if created else "cc"
        )
        if created:
            for addr in parsed.cc:
                if addr != sender and not is_ours(config, addr):
                    repos.add_participant(conn, slug, ticket_id, addr, "", "cc")
    repos.add_audit(
        conn,
        slug,
        "ticket.created" if created else "message.added",
        actor=sender,
        ticket_id=ticket_id,
        detail=detail,
    )
    if raw.source == "import":  # history: it must not email anyone or mark an address bouncing
        return Stored(slug, ref, thread_by, flagged=tuple(flags))
    if role != "machine" and ref is not None:
        event = Event(
            tenant=tenant,
            address=job.recipient.address,
            ticket_id=ticket_id,
            ref=ref,
            created=created,
            role=role,
            agent=agent,
            parsed=parsed,
            sender=sender,
            message_row=row,
            acknowledge=decision.acknowledge,
            notify=_queue_agents(conn, tenant, ticket_id),
            subject=ticket_subject,
        )
        kinds = react(conn, config, event, templates, repos.now())
        clocks.on_message(
            conn, slug, ticket_id, role=role, answered="relay" in kinds, sender=sender,
            now=repos.now(), created=created,
        )  # fmt: skip
    elif parsed.kind == "bounce" and parsed.dsn:
        bounced(conn, config, tenant, ticket_id, parsed, repos.now())
    return Stored(slug, ref, thread_by, flagged=tuple(flags))


def _apply_rules(
    conn: Connection, slug: str, ticket_id: int, decision: Decision, *, created: bool
) -> None:
    """A rule's ticket actions; on a follow-up only what a rule names changes."""
    changes: dict[str, Any] = {}
    if decision.queue and not created:
        changes["queue"] = decision.queue
    for key in ("priority", "category"):
        if getattr(decision, key):
            changes[key] = getattr(decision, key)
    if decision.assign:
        changes["assignee"] = decision.assign
    if decision.tags:
        row = repos.ticket_row(conn, slug, ticket_id) or {}
        have = list(row.get("tags") or [])
        if any(t not in have for t in decision.tags):
            changes["tags"] = have + [t for t in decision.tags if t not in have]
    if changes:
        repos.update_ticket(conn, slug, ticket_id, **changes)


def _queue_agents(conn: Connection, tenant: Tenant, ticket_id: int) -> tuple[Any, ...] | None:
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


def _log_outcome(outcome: Outcome, ctx: dict[str, Any]) -> None:
    source = str(ctx.get("source", ""))
    if "scan" in ctx:
        metrics.SCAN_VERDICTS.labels(ctx["scan"]).inc()
    if isinstance(outcome, Accepted):
        metrics.MESSAGES.labels(source, "accepted", "250").inc()
        for s in outcome.stored:
            if s.thread_by == "new":
                metrics.TICKETS_OPENED.labels(s.tenant).inc()
    else:
        result = "rejected" if isinstance(outcome, Reject) else "deferred"
        metrics.MESSAGES.labels(source, result, str(outcome.code)).inc()
    if isinstance(outcome, Accepted):
        ctx["result"] = "accepted"
        ctx["tickets"] = [s.ticket_ref for s in outcome.stored]
        ctx["by"] = [s.thread_by for s in outcome.stored]
        ctx["duplicate"] = [s.duplicate for s in outcome.stored]
    elif isinstance(outcome, Reject):
        ctx.update(result="rejected", code=f"{outcome.code} {outcome.enhanced}")
    else:
        ctx.update(result="deferred", code=f"{outcome.code} {outcome.enhanced}")
    log.info("message", **ctx)
