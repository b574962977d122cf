"""What the agents' desk reads (gateway/web/desk.py): ticket lists and one ticket whole.

Agents see all of their tenant (notes, machine mail, the audit trail), so unlike
store/access.py nothing here filters on a participant; every query still filters
on the tenant, and the caller has checked that the session's address is one of
that tenant's agents.

The SLA arithmetic lives above the store (routing/sla.py): lists of tickets that
are not closed come back whole, with their clock columns, so the desk can sort
them by due time; closed tickets, whose clocks have stopped and which pile up
for years, come back a page at a time, newest activity first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Text, cast, func, select
from sqlalchemy.engine import Connection

from store.access import FILE_COLUMNS
from store.clocks import CLOCKS, SLA_SINCE, TICKET_HEAD, aware, clock_row
from store.db import json_text
from store.models import attachments, audit_events, messages, participants, tickets

__all__ = ["DeskFilter", "desk_attachment", "desk_rows", "desk_ticket", "desk_tickets"]

# A list row: the clocks' columns with the tags and the last activity, and when SLA
# began for the tenant (``clocks.watched``: a ticket from before shows no clock).
_ROW = (*TICKET_HEAD, tickets.c.tags, tickets.c.updated_at, *CLOCKS, SLA_SINCE)


@dataclass(frozen=True, slots=True)
class DeskFilter:
    """Which tickets: ``closed`` or not, and the optional narrowing of the list's form."""

    closed: bool = False
    assignee: str | None = None  # only this agent's
    unassigned: bool = False
    queue: str | None = None
    priority: str | None = None
    tag: str | None = None


def desk_tickets(
    conn: Connection, tenant: str, where: DeskFilter, page: tuple[int, int] | None = None
) -> tuple[list[dict[str, Any]], int]:
    """(rows, how many match). ``page`` (offset, limit): newest activity first, one page;
    None: every match, unordered, for the caller to sort by its clocks."""
    cond = [tickets.c.tenant == tenant]
    cond.append(tickets.c.status == "closed" if where.closed else tickets.c.status != "closed")
    if where.assignee is not None:
        cond.append(tickets.c.assignee == where.assignee)
    if where.unassigned:
        cond.append(tickets.c.assignee.is_(None))
    if where.queue:
        cond.append(tickets.c.queue == where.queue)
    if where.priority:
        cond.append(tickets.c.priority == where.priority)
    if where.tag:
        # The JSON list as text on both engines; the exact match is checked below.
        cond.append(cast(tickets.c.tags, Text).contains(json_text(where.tag), autoescape=True))
    query = select(*_ROW).where(*cond)
    if page is not None:
        offset, limit = page
        query = query.order_by(tickets.c.updated_at.desc(), tickets.c.id.desc())
        query = query.offset(offset).limit(limit)
    rows = [_row(r._mapping) for r in conn.execute(query)]
    if where.tag:
        rows = [r for r in rows if where.tag in r["tags"]]
    if page is None:
        total = len(rows)
    else:
        total = int(conn.execute(select(func.count()).select_from(tickets).where(*cond)).scalar())
    _add_clients(conn, tenant, rows)
    return rows, total


def desk_rows(conn: Connection, tenant: str, ids: list[int]) -> list[dict[str, Any]]:
    """The list rows of these tickets, in the order given (search hits, best first)."""
    found: dict[int, dict[str, Any]] = {}
    for i in range(0, len(ids), 500):
        for r in conn.execute(
            select(*_ROW).where(tickets.c.tenant == tenant, tickets.c.id.in_(ids[i : i + 500]))
        ):
            found[r.id] = _row(r._mapping)
    rows = [found[i] for i in ids if i in found]
    _add_clients(conn, tenant, rows)
    return rows


def _row(m: Any) -> dict[str, Any]:
    d = clock_row(m)
    d["tags"] = list(d["tags"] or [])
    return d


def _add_clients(conn: Connection, tenant: str, rows: list[dict[str, Any]]) -> None:
    """Each row's client: the first client-side participant (by when they joined)."""
    ids = [r["id"] for r in rows]
    first: dict[int, str] = {}
    for i in range(0, len(ids), 500):  # bounded IN lists, for either engine
        for tid, address in conn.execute(
            select(participants.c.ticket_id, participants.c.address)
            .where(
                participants.c.tenant == tenant,
                participants.c.ticket_id.in_(ids[i : i + 500]),
                participants.c.role == "client",
            )
            .order_by(participants.c.id)
        ):
            first.setdefault(tid, address)
    for r in rows:
        r["client"] = first.get(r["id"], "")


def desk_ticket(conn: Connection, tenant: str, ref: str) -> dict[str, Any] | None:
    """The whole ticket: its row, every message with its files, participants, audit trail."""
    row = conn.execute(
        select(*_ROW, tickets.c.number, tickets.c.category).where(
            tickets.c.tenant == tenant, tickets.c.ref == ref
        )
    ).first()
    if row is None:
        return None
    ticket = _row(row._mapping)
    tid = ticket["id"]
    msgs = [
        dict(m._mapping)
        for m in conn.execute(
            select(
                messages.c.id,
                messages.c.from_addr,
                messages.c.from_name,
                messages.c.sender_role,
                messages.c.kind,
                messages.c.direction,
                messages.c.date,
                messages.c.created_at,
                messages.c.subject,
                messages.c.text,
                messages.c.reply_text,
                messages.c.flags,
                messages.c.auth,
            )
            .where(messages.c.tenant == tenant, messages.c.ticket_id == tid)
            .order_by(messages.c.id)
        )
    ]
    files: dict[int, list[dict[str, Any]]] = {}
    for a in conn.execute(
        select(*FILE_COLUMNS)
        .join(messages, messages.c.id == attachments.c.message_id)
        .where(
            attachments.c.tenant == tenant,
            messages.c.tenant == tenant,
            messages.c.ticket_id == tid,
        )
        .order_by(attachments.c.message_id, attachments.c.position)
    ):
        files.setdefault(a.message_id, []).append(dict(a._mapping))
    for m in msgs:
        m["flags"] = list(m["flags"] or [])
        m["attachments"] = files.get(m["id"], [])
    people = [
        dict(p._mapping)
        for p in conn.execute(
            select(participants.c.address, participants.c.name, participants.c.role)
            .where(participants.c.tenant == tenant, participants.c.ticket_id == tid)
            .order_by(participants.c.id)
        )
    ]
    audit = [
        dict(a._mapping) | {"created_at": aware(a.created_at)}
        for a in conn.execute(
            select(
                audit_events.c.action,
                audit_events.c.actor,
                audit_events.c.detail,
                audit_events.c.created_at,
            )
            .where(audit_events.c.tenant == tenant, audit_events.c.ticket_id == tid)
            .order_by(audit_events.c.id)
        )
    ]
    return {"ticket": ticket, "messages": msgs, "participants": people, "audit": audit}


def desk_attachment(conn: Connection, tenant: str, ref: str, sha256: str) -> dict[str, Any] | None:
    """A file of one of this ticket's messages, or None: the blob is read only after this."""
    row = conn.execute(
        select(attachments.c.filename, attachments.c.size, attachments.c.sha256)
        .join(messages, messages.c.id == attachments.c.message_id)
        .join(tickets, tickets.c.id == messages.c.ticket_id)
        .where(
            tickets.c.tenant == tenant,
            tickets.c.ref == ref,
            messages.c.tenant == tenant,
            attachments.c.tenant == tenant,
            attachments.c.sha256 == sha256,
        )
        .limit(1)
    ).first()
    return dict(row._mapping) if row is not None else None
