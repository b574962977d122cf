"""An agent's reply, recognised by its token and its From (gateway/intake/decide.py):
its leading commands act on the ticket and the rest is relayed to the clients.

A reply whose command block holds anything refused (a bad value, an agent that is
not one, a line that looks like a command and is none) does nothing at all: it is
kept on the ticket as internal, not relayed, and the agent gets a mail saying what
to fix. Relaying "#nte customer is rude" to the customer is the failure this prevents.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.engine import Connection

from outbound.compose import Composed, relay
from outbound.files import carried
from outbound.guard import guarded
from outbound.language import client_language
from outbound.outbox import client_recipients, queue, reply_address
from outbound.participants import apply_cc, is_ours
from outbound.templates import DEFAULT_TEMPLATES, Templates
from outbound.ticket_mail import command_refusal
from parsers.html_quotes import drop_leading_lines
from routing.commands import Commands, split_commands
from routing.config import Agent, GatewayConfig, Tenant
from store import repos

if TYPE_CHECKING:
    from outbound.reactions import Event

__all__ = ["agent_reply", "ticket_subject"]

_CHANGE_ACTIONS = {
    "status": "ticket.status",
    "priority": "ticket.priority",
    "assignee": "ticket.assigned",
}


def agent_reply(
    conn: Connection,
    config: GatewayConfig,
    ev: Event,
    agent: Agent,
    now: datetime,
    templates: Templates = DEFAULT_TEMPLATES,
) -> list[str]:
    """Act on the reply's leading commands and relay the rest to the ticket's clients;
    any refused command refuses the whole reply, and the agent is told at once."""
    slug = ev.tenant.slug
    commands, text = split_commands(ev.parsed.reply_text)
    refused = _refused(config, ev.tenant, commands)
    if refused:
        return _refuse(conn, config, ev, agent, refused, now)
    before = repos.ticket_row(conn, slug, ev.ticket_id) or {}
    changes: dict[str, str | None] = {}
    if commands.status and commands.status != before.get("status"):
        changes["status"] = commands.status
    if commands.priority:
        changes["priority"] = commands.priority
    if commands.assign:
        changes["assignee"] = commands.assign
    problems: list[str] = []
    if changes:
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
        conn,
        config,
        ev.tenant.slug,
        ev.ticket_id,
        agent,
        commands.cc_add,
        commands.cc_remove,
        problems,
        now,
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
    to = client_recipients(conn, ev.tenant, ev.ticket_id)
    if not to:
        return []
    client_ids = repos.thread_ids(conn, slug, ev.ticket_id, role="client")
    html = ev.parsed.html_reply
    quote_in_text = ev.parsed.reply_text.strip() != ev.parsed.text.strip()
    if html is not None and html == ev.parsed.html and quote_in_text:
        html = None  # the text had a quote the HTML's markers did not show: text only
    if html is not None:  # never a #command in what the client reads
        html = drop_leading_lines(html, _command_lines(ev.parsed.reply_text, text))

    def send() -> bool:
        # The agent's files, all of them: the agent chose to send each one.
        files, _ = carried(conn, ev.parsed.attachments, config.data_dir / "blobs", limit=None)
        mail = relay(
            tenant=ev.tenant,
            hostname=config.hostname,
            agent=agent,
            ref=ev.ref,
            subject=ticket_subject(conn, ev),
            to=to,
            text=text,
            reply_address=reply_address(config, slug, ev.address, ev.ref),
            in_reply_to=client_ids[-1] if client_ids else None,
            references=client_ids,
            now=now,
            html=html,
            files=files,
            templates=templates,
            lang=client_language(conn, ev.tenant, ev.ticket_id),
        )
        queue(conn, slug, "relay", ev.ticket_id, mail, now=now)
        return True

    if not guarded(conn, slug, ev.ticket_id, "relay", send, now):
        return []
    if ev.tenant.pending_on_agent_reply and not commands.status and before.get("status") == "open":
        # The answer went out: the ticket waits on the client now.
        repos.update_ticket(conn, slug, ev.ticket_id, now=now, status="pending")
        repos.add_audit(
            conn, slug, "ticket.status", actor=agent.address, ticket_id=ev.ticket_id,
            detail={"from": "open", "to": "pending", "by": "pending_on_agent_reply"}, now=now,
        )  # fmt: skip
    return ["relay"]


def _command_lines(reply_text: str, rest: str) -> list[str]:
    """The lines ``split_commands`` took off the top of ``reply_text`` to leave ``rest``."""
    whole = reply_text.rstrip("\n")
    head = whole[: len(whole) - len(rest)] if whole.endswith(rest) else whole
    return [line.strip() for line in head.split("\n") if line.strip()]


def _refused(config: GatewayConfig, tenant: Tenant, commands: Commands) -> list[str]:
    """Every command of the block that cannot be done as written; any one refuses the
    whole reply (nothing relayed, nothing changed), so a typo never reaches a client."""
    refused = list(commands.problems)
    if commands.assign and tenant.agent(commands.assign) is None:
        agents = ", ".join(a.address for a in tenant.agents)
        refused.append(f"#assign {commands.assign}: not an agent here; use one of {agents}")
    refused += [
        f"#cc add {a}: one of our own addresses, never a participant"
        for a in commands.cc_add
        if is_ours(config, a)
    ]
    return refused


def _refuse(
    conn: Connection,
    config: GatewayConfig,
    ev: Event,
    agent: Agent,
    refused: list[str],
    now: datetime,
) -> list[str]:
    """The reply stays on the ticket as an internal message (never on the client's pages),
    is audited, and the agent hears at once what to fix."""
    slug = ev.tenant.slug
    if ev.message_row:
        repos.add_message_flag(conn, slug, ev.message_row, "internal")
    repos.add_audit(
        conn, slug, "ticket.commands", actor=agent.address, ticket_id=ev.ticket_id,
        detail={"refused": refused, "relayed": False}, now=now,
    )  # fmt: skip

    def tell() -> Composed:
        return command_refusal(
            tenant=ev.tenant,
            hostname=config.hostname,
            agent=agent,
            ref=ev.ref,
            subject=ev.subject or ticket_subject(conn, ev),
            problems=refused,
            reply_address=reply_address(config, slug, ev.address, ev.ref, agent),
            in_reply_to=ev.parsed.message_id,
            now=now,
        )

    mail = guarded(conn, slug, ev.ticket_id, "refused", tell, now, writes=False)
    if mail is None:
        return []
    queue(conn, slug, "refused", ev.ticket_id, mail, now=now)
    return ["refused"]


def ticket_subject(conn: Connection, ev: Event) -> str:
    row = repos.ticket_row(conn, ev.tenant.slug, ev.ticket_id)
    return str(row["subject"]) if row else (ev.parsed.subject or "(no subject)")
