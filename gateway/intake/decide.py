"""Decide: from what the store said about a message to what it does, for one tenant.

A pure function: no connection, no clock, no I/O. Everything it needs was
read before (``gateway/intake/commit.py`` ``lookup``: the dedupe key and the
ticket the message continues), so a test can call it with plain values and
``route explain`` can show why it decided as it did. It holds who is
speaking (``routing.classify``), the tenant's rules (``routing.rules``) and
what the ticket, its participants and the audit log get; ``store.ingest``
writes the plan, ``outbound.reactions`` answers it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from outbound.language import planned_language
from outbound.participants import is_ours
from parsers.types import ParsedMessage, RawMessage
from routing.auth import NONE, AuthVerdict
from routing.classify import Role, speaker
from routing.config import Agent, GatewayConfig, Tenant
from routing.rules import Decision, Facts, evaluate
from routing.threader import ThreadMatch
from routing.verdicts import Reason, Reject, Stored
from store.ingest import Audit, Ingest, NewTicket, Participant

__all__ = ["Arrival", "Plan", "Reaction", "Seen", "decide"]


@dataclass(frozen=True, slots=True)
class Arrival:
    """One message as every commit stage sees it: its bytes, what the parser made of them,
    and the one time it carries everywhere (rules, rows, audit, mail)."""

    raw: RawMessage
    parsed: ParsedMessage
    sha256: str  # of the raw bytes
    now: datetime
    auth: AuthVerdict = NONE  # sender authentication, checked before the commit
    queued_as: str = ""  # the opaque id the 250 names (gateway/intake/replies.py)

    @property
    def sender(self) -> str:
        """From:, or the envelope sender when the header has none."""
        return self.parsed.from_addr or self.raw.envelope.mail_from.lower()


@dataclass(frozen=True, slots=True)
class Seen:
    """What the store knows of this message for one tenant, read before deciding."""

    key: str  # the dedupe key it is (or would be) stored under
    duplicate: bool  # already stored under that key
    key_reused: bool = False  # its Message-ID came before with other bytes
    match: ThreadMatch | None = None  # the ticket it continues (None for a duplicate)
    participant: bool = False  # the sender already takes part in that ticket
    status: str | None = None  # that ticket's status (a client's reply reopens it)
    language: str | None = None  # that ticket's client language, if known
    # A second delivery of a stored message (same Message-ID, sender, subject and text,
    # other bytes): the stored message's row and ticket, for the audit event.
    copy_of: int | None = None
    copy_ticket: int | None = None
    # The sender's mail from us bounces (read with the dedupe key): for the reactions,
    # which skip or clear the mark; nothing to decide on.
    bouncing: bool = False
    # The acknowledgements stored to the sender within the rate limit's window (read
    # with the dedupe key too): for the reactions.
    acks: int | None = None
    # The continued ticket's Message-IDs, oldest first (read with its status): with this
    # message's, the References of the agents' notice (``ticket_life.thread_after``), no
    # read after its INSERT; None: not read.
    thread: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Reaction:
    """Who hears of a stored message, once its ticket is known."""

    role: Role
    agent: Agent | None
    acknowledge: bool | None  # a rule's say; None: the tenant's setting
    bounce: bool  # a DSN about our mail: its failed addresses are marked bouncing
    # "unverified" (the From failed authentication), "refused" (an agent's reply token
    # with a From that is not that agent; ``agent`` is the token's agent, who is told) or
    # "outsider" (not a participant of the ticket it continues): stored, but it changes
    # nothing and the notice says why.
    caution: str = ""
    reopened: bool = False  # a client's reply to a closed ticket: the notice says so
    # The language to answer the client in, when the plan knows it (outbound/language.py
    # ``planned_language``); None: the reactions look it up.
    language: str | None = None

    @property
    def verified(self) -> bool:
        return self.caution != "unverified"


@dataclass(frozen=True, slots=True)
class Plan:
    """What one message does for one tenant; ``reject`` set means nothing at all."""

    stored: Stored  # the answer; the ticket's ref is added once it is written
    match: ThreadMatch | None = None
    role: Role | None = None
    agent: Agent | None = None
    rules: Decision | None = None
    reject: Reject | None = None
    ingest: Ingest | None = None  # None: a duplicate or a drop
    audit: Audit | None = None  # a rule's drop leaves this event, and nothing else
    reaction: Reaction | None = None  # None: history (import), or nobody to tell


def decide(seen: Seen, config: GatewayConfig, tenant: Tenant, recipient: str, msg: Arrival) -> Plan:
    """``recipient`` is the tenant address the envelope named (rules may test it)."""
    slug, raw, parsed = tenant.slug, msg.raw, msg.parsed
    if seen.duplicate or seen.match is None:
        event = None
        if seen.copy_of is not None:
            why = {"message": seen.copy_of, "sha256": msg.sha256, "recipient": recipient}
            event = Audit("message.redelivered", msg.sender, why, seen.copy_ticket)
        return Plan(Stored(slug, None, "none", drop=Reason.DUPLICATE), audit=event)
    match = seen.match
    flags = ["message-id-reused"] if seen.key_reused else []
    sender = msg.sender
    role, agent = speaker(parsed, raw.envelope.mail_from, tenant, match.claim, config.hostname)
    # A From that fails authentication is not that person (docs/security.md): kept on
    # the ticket, marked, and nothing is relayed, acknowledged or changed by it.
    unverified = msg.auth.summary == "fail"
    refused = None
    if role == "agent" and (agent is None or not agent.answers_from(sender)):
        # An agent's token with someone else's From: kept for the agents to see, never
        # relayed, and the agent whose token it is hears that it was not sent.
        role, refused, agent = "client", agent, None
        flags.append("agent-token-from-mismatch")
    elif role == "agent" and msg.auth.summary not in ("pass", "none"):
        # The token and the From match, but the From does not authenticate (or DNS did not
        # say): an agent's reply is relayed only when it does.
        role, agent = "client", None
        flags.append("agent-unauthenticated")
        unverified = True
    # A client's follow-up threaded by References (or a tag) from someone who is not on
    # the ticket: kept for the agents, but the sender does not join it.
    outsider = (
        not unverified
        and role == "client"
        and match.ticket_id is not None
        and match.by in ("references", "tag")
        and not seen.participant
    )
    if unverified:
        flags.append("unverified")
    elif outsider:
        flags.append("outsider")
    caution = _caution(unverified=unverified, refused=refused is not None, outsider=outsider)
    # A client's own reply brings a closed or pending ticket back to the agents; a
    # message that changes nothing (caution) never does.
    reopens = not caution and role == "client" and seen.status in ("closed", "pending")
    facts = Facts(
        parsed=parsed,
        recipient=recipient,
        size=len(raw.data),
        now=msg.now,
        new_ticket=match.ticket_id is None and role != "machine",
    )
    rules = evaluate(tenant.rules, facts)
    plan = Plan(Stored(slug, None, "none"), match, role, agent, rules)
    if rules.reject is not None:
        name, said = rules.reject
        reject = Reject(Reason.RULE, said.code, said.enhanced, said.text, rule=name, tenant=slug)
        return replace(plan, reject=reject)
    if rules.drop is not None:
        why = {
            "rule": rules.drop,
            "sha256": msg.sha256,
            "message_id": parsed.message_id,
            "subject": parsed.subject[:200],
            "source": raw.source,
        }
        event = Audit("message.dropped", sender, why, match.ticket_id)
        return replace(plan, stored=Stored(slug, None, "none", drop=Reason.RULE_DROP), audit=event)

    created = match.ticket_id is None and role != "machine"
    thread_by = "new" if created else match.by
    # A client's mail that changes something shows the client's language (the reactions
    # answer in it, and a new ticket keeps it); not history, which answers nobody.
    answer_in, opened_in = (
        planned_language(tenant, parsed, created=created, stored=seen.language)
        if raw.source != "import" and role == "client" and not caution
        else (None, None)
    )
    detail: dict[str, object] = {"kind": parsed.kind, "by": thread_by}
    if rules.matched:
        detail["rules"] = rules.matched
    ingest = Ingest(
        message=_message_row(msg, seen.key, role, flags, thread_by, rules),
        attachments=tuple(a.as_row() for a in parsed.attachments),
        actor=sender,
        detail=detail,
        open=NewTicket(
            tenant.tag_prefix,
            parsed.subject.strip() or "(no subject)",
            rules.queue or tenant.default_queue,
            opened_in,
        )
        if created
        else None,
        ticket_id=match.ticket_id,
        changes={} if caution else _changes(rules, created=created, reopens=reopens),
        status_was=seen.status if reopens else None,
        tags=() if caution else tuple(rules.tags),
        anchor=not caution,
        participants=()
        if caution
        else _participants(config, parsed, role, sender, created=created),
    )
    reaction = None
    if raw.source != "import":  # history: it must not email anyone or mark an address bouncing
        bounce = parsed.kind == "bounce" and bool(parsed.dsn) and not unverified
        acknowledge = False if caution else rules.acknowledge
        reaction = Reaction(
            role, agent or refused, acknowledge, bounce, caution=caution,
            reopened=reopens and seen.status == "closed", language=answer_in,
        )  # fmt: skip
    stored = Stored(slug, None, thread_by, flagged=tuple(flags))
    # Made anew, not ``replace``d: ``dataclasses.replace`` costs as much again as the Plan.
    return Plan(stored, match, role, agent, rules, ingest=ingest, reaction=reaction)


def _caution(*, unverified: bool, refused: bool, outsider: bool) -> str:
    """Why a stored message changes nothing, the gravest reason first.

    A refused token comes before an unverified From: either way nothing is relayed,
    but only the refusal tells the agent whose reply address was used, and a forger
    who also fails authentication must not spare them that notice (issue 16).
    """
    if refused:
        return "refused"
    if unverified:
        return "unverified"
    return "outsider" if outsider else ""


def _message_row(
    msg: Arrival, key: str, role: Role, flags: list[str], thread_by: str, rules: Decision
) -> dict[str, object]:
    raw, parsed = msg.raw, msg.parsed
    return {
        "message_key": key,
        "message_id": parsed.message_id,
        "direction": "in",
        "kind": parsed.kind,
        "sender_role": role,
        "from_addr": msg.sender,
        "from_name": parsed.from_name,
        "to_addrs": list(parsed.to),
        "cc_addrs": list(parsed.cc),
        "subject": parsed.subject,
        "date": parsed.date,
        "text": parsed.text,
        "reply_text": parsed.reply_text,
        "html": parsed.html,
        "raw_sha256": msg.sha256,
        "raw_size": len(raw.data),
        "defects": list(parsed.defects),
        "flags": flags,
        "thread_by": thread_by,
        "envelope_from": raw.envelope.mail_from.lower(),
        "source": raw.source,
        "rules": rules.matched,
        "auth": msg.auth.summary,
        "auth_results": msg.auth.header or None,
        "queued_as": msg.queued_as or None,
    }


def _changes(rules: Decision, *, created: bool, reopens: bool = False) -> dict[str, str]:
    """A rule's ticket actions; a new ticket got its queue when it was opened."""
    changes: dict[str, str] = {"status": "open"} if reopens else {}
    if rules.queue and not created:
        changes["queue"] = rules.queue
    if rules.priority:
        changes["priority"] = rules.priority
    if rules.category:
        changes["category"] = rules.category
    if rules.assign:
        changes["assignee"] = rules.assign
    return changes


def _participants(
    config: GatewayConfig, parsed: ParsedMessage, role: Role, sender: str, *, created: bool
) -> tuple[Participant, ...]:
    """A client who writes takes part; on a new ticket so do the people they wrote to
    or copied, but never one of our own addresses."""
    if role != "client":
        return ()
    out = [Participant(sender, parsed.from_name, "client" if created else "cc")]
    if created:
        seen = {sender}
        for addr in (*parsed.to, *parsed.cc):
            if addr not in seen and not is_ours(config, addr):
                seen.add(addr)
                out.append(Participant(addr, "", "cc"))
    return tuple(out)
