"""Read-side queries for the CLI and the web: tickets with their messages.

Like the repositories, every function is scoped by tenant.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from store.models import attachments, audit_events, messages, outbox, participants, tickets

__all__ = [
    "audit_trail",
    "list_tickets",
    "outbox_status",
    "status_history",
    "store_status",
    "tenants_in_store",
    "ticket_detail",
    "ticket_queued_as",
]


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


async def tenants_in_store(conn: AsyncConnection) -> list[str]:
    """Admin scope only: which tenants have rows at all."""
    rows = await conn.execute(select(tickets.c.tenant).distinct().order_by(tickets.c.tenant))
    return [r for (r,) in rows]


async def ticket_queued_as(conn: AsyncConnection, tenant: str, queued_as: str) -> str | None:
    """The ref of the tenant's ticket holding the mail a 250 named ``queued as <id>``."""
    return (
        await conn.execute(
            select(tickets.c.ref)
            .join(messages, messages.c.ticket_id == tickets.c.id)
            .where(messages.c.tenant == tenant, messages.c.queued_as == queued_as)
            .limit(1)
        )
    ).scalar()


async def list_tickets(
    conn: AsyncConnection,
    tenant: str,
    *,
    status: str | None = None,
    queue: str | None = None,
    assignee: str | None = None,
    since: datetime | None = None,
    ids: set[int] | None = None,
) -> list[dict[str, Any]]:
    """The tenant's tickets by number, narrowed by whichever filters are given.

    ``assignee=""`` means unassigned; ``since`` keeps tickets with activity (a
    message or a change, ``updated_at``) at or after it; ``ids`` keeps only those.
    """
    where = [tickets.c.tenant == tenant]
    if status is not None:
        where.append(tickets.c.status == status)
    if queue is not None:
        where.append(tickets.c.queue == queue)
    if assignee == "":
        where.append(tickets.c.assignee.is_(None))
    elif assignee is not None:
        where.append(tickets.c.assignee == assignee)
    if since is not None:
        where.append(tickets.c.updated_at >= since)
    if ids is not None:
        if not ids:
            return []
        where.append(tickets.c.id.in_(sorted(ids)))
    rows = await conn.execute(select(tickets).where(*where).order_by(tickets.c.number))
    return [
        {
            "id": r.id,
            "ref": r.ref,
            "tenant": r.tenant,
            "subject": r.subject,
            "status": r.status,
            "queue": r.queue,
            "priority": r.priority,
            "assignee": r.assignee,
            "category": r.category,
            "tags": list(r.tags or []),
            "created_at": _iso(r.created_at),
            "updated_at": _iso(r.updated_at),
        }
        for r in rows
    ]


async def audit_trail(
    conn: AsyncConnection,
    tenant: str,
    *,
    ticket_id: int | None = None,
    since: datetime | None = None,
) -> list[dict[str, Any]]:
    """The tenant's audit events, oldest first, with the ref of each one's ticket."""
    where = [audit_events.c.tenant == tenant]
    if ticket_id is not None:
        where.append(audit_events.c.ticket_id == ticket_id)
    if since is not None:
        where.append(audit_events.c.created_at >= since)
    rows = await conn.execute(
        select(audit_events, tickets.c.ref)
        .outerjoin(
            tickets, (tickets.c.id == audit_events.c.ticket_id) & (tickets.c.tenant == tenant)
        )
        .where(*where)
        .order_by(audit_events.c.id)
    )
    return [
        {
            "at": _iso(r.created_at),
            "ticket": r.ref,
            "action": r.action,
            "actor": r.actor,
            "detail": r.detail,
        }
        for r in rows
    ]


async def status_history(
    conn: AsyncConnection, tenant: str, ticket_id: int
) -> list[dict[str, Any]]:
    """Each status the ticket had, from the audit log: opened, then every change."""
    rows = await conn.execute(
        select(
            audit_events.c.action,
            audit_events.c.actor,
            audit_events.c.detail,
            audit_events.c.created_at,
        )
        .where(
            audit_events.c.tenant == tenant,
            audit_events.c.ticket_id == ticket_id,
            audit_events.c.action.in_(("ticket.created", "ticket.status")),
        )
        .order_by(audit_events.c.id)
    )
    return [
        {
            "status": "open" if r.action == "ticket.created" else (r.detail or {}).get("to"),
            "at": _iso(r.created_at),
            "by": r.actor,
        }
        for r in rows
    ]


async def ticket_detail(
    conn: AsyncConnection, tenant: str, ref: str, *, with_text: bool = True
) -> dict[str, Any] | None:
    t = (
        await conn.execute(select(tickets).where(tickets.c.tenant == tenant, tickets.c.ref == ref))
    ).first()
    if t is None:
        return None
    people = await conn.execute(
        select(participants.c.address, participants.c.name, participants.c.role)
        .where(participants.c.tenant == tenant, participants.c.ticket_id == t.id)
        .order_by(participants.c.id)
    )
    msgs = (
        await conn.execute(
            select(messages)
            .where(messages.c.tenant == tenant, messages.c.ticket_id == t.id)
            .order_by(messages.c.id)
        )
    ).all()
    atts: dict[int, list[dict[str, Any]]] = {}
    if msgs:
        rows = await conn.execute(
            select(attachments)
            .where(
                attachments.c.tenant == tenant,
                attachments.c.message_id.in_([m.id for m in msgs]),
            )
            .order_by(attachments.c.message_id, attachments.c.position)
        )
        for a in rows:
            atts.setdefault(a.message_id, []).append(
                {
                    "filename": a.filename,
                    "content_type": a.content_type,
                    "size": a.size,
                    "sha256": a.sha256,
                    "inline": a.inline,
                }
            )
    out_msgs = []
    for m in msgs:
        item: dict[str, Any] = {
            "message_id": m.message_id,
            "from": m.from_addr,
            "kind": m.kind,
            "direction": m.direction,
            "sender_role": m.sender_role,
            "subject": m.subject,
            "date": m.date,
            "thread_by": m.thread_by,
            "flags": m.flags,
            "auth": m.auth,  # sender authentication: pass | fail | temperror | none
            "queued_as": m.queued_as,  # the id the 250 named (None: stored before 0012)
            "created_at": _iso(m.created_at),
            "attachments": atts.get(m.id, []),
        }
        if with_text:
            item["text"] = m.text
        out_msgs.append(item)
    # What the gateway failed to do about the ticket (a reaction that raised, mail it
    # gave up on): agents must see that nobody was answered.
    problems = await conn.execute(
        select(audit_events.c.action, audit_events.c.detail, audit_events.c.created_at)
        .where(
            audit_events.c.tenant == tenant,
            audit_events.c.ticket_id == t.id,
            audit_events.c.action.in_(("reaction.failed", "outbox.failed")),
        )
        .order_by(audit_events.c.id)
    )
    return {
        "ref": t.ref,
        "tenant": t.tenant,
        "subject": t.subject,
        "status": t.status,
        "queue": t.queue,
        "priority": t.priority,
        "assignee": t.assignee,
        "category": t.category,
        "tags": list(t.tags or []),
        "created_at": _iso(t.created_at),
        "updated_at": _iso(t.updated_at),
        "first_response_at": _iso(t.first_response_at),
        "first_response_by": t.first_response_by,
        "resolved_at": _iso(t.resolved_at),
        "status_history": await status_history(conn, tenant, int(t.id)),
        "participants": [{"address": a, "name": n, "role": r} for a, n, r in people],
        "messages": out_msgs,
        "problems": [{"action": a, "detail": d, "created_at": _iso(c)} for a, d, c in problems],
    }


async def store_status(engine: AsyncEngine) -> dict[str, Any]:
    """Outbox depth and oldest waiting mail, tickets per tenant and status: for /status."""
    async with engine.connect() as conn:
        waiting = await _outbox_waiting(conn)
        per_tenant = (
            await conn.execute(
                select(tickets.c.tenant, tickets.c.status, func.count()).group_by(
                    tickets.c.tenant, tickets.c.status
                )
            )
        ).all()
    counts: dict[str, dict[str, int]] = {}
    for tenant, status, n in per_tenant:
        counts.setdefault(tenant, {})[status] = int(n)
    return {"outbox": waiting, "tenants": counts}


async def outbox_status(engine: AsyncEngine) -> dict[str, Any]:
    """Outbox depth and oldest waiting mail, for /metrics' gauges on each scrape.

    Not the tickets' counts: they read every ticket's index entry (closed ones pile up
    for ever: ~0.1 s a count at 1,000,000 on SQLite), and no gauge shows them. The
    outbox's read is as large as what waits in it.
    """
    async with engine.connect() as conn:
        return await _outbox_waiting(conn)


async def _outbox_waiting(conn: AsyncConnection) -> dict[str, Any]:
    row = (
        await conn.execute(
            select(func.count(), func.min(outbox.c.created_at)).where(
                outbox.c.status.in_(("pending", "sending"))
            )
        )
    ).one()
    oldest = row[1]
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    return {
        "pending": int(row[0]),
        "oldest_age_seconds": (
            round((datetime.now(UTC) - oldest).total_seconds(), 1) if oldest else None
        ),
    }
