"""What a monthly report reads, and the bookkeeping of report files.

Reads take a synchronous connection (the report is built in a worker thread,
with ``AsyncConnection.run_sync`` or the writer); every statement is scoped by
tenant.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.engine import Connection

from store.clocks import CLOCKS, TICKET_HEAD, aware, clock_row
from store.models import audit_events, messages, reports, tickets

__all__ = [
    "add_report",
    "agent_closes",
    "agent_replies",
    "client_message_times",
    "expired_reports",
    "has_report",
    "mark_report_deleted",
    "month_tickets",
]


def month_tickets(
    conn: Connection, tenant: str, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """Tickets opened in [start, end) or resolved in it, with their clocks."""
    rows = conn.execute(
        select(*TICKET_HEAD, *CLOCKS)
        .where(
            tickets.c.tenant == tenant,
            or_(
                and_(tickets.c.created_at >= start, tickets.c.created_at < end),
                and_(tickets.c.resolved_at >= start, tickets.c.resolved_at < end),
            ),
        )
        .order_by(tickets.c.id)
    )
    return [clock_row(r._mapping) for r in rows]


def client_message_times(
    conn: Connection, tenant: str, start: datetime, end: datetime
) -> list[datetime]:
    """When clients wrote (new tickets and follow-ups): the busiest-hours chart."""
    rows = conn.execute(
        select(messages.c.created_at).where(
            messages.c.tenant == tenant,
            messages.c.direction == "in",
            messages.c.sender_role == "client",
            messages.c.created_at >= start,
            messages.c.created_at < end,
        )
    )
    return [aware(r[0]) for r in rows]  # type: ignore[misc]


def agent_replies(conn: Connection, tenant: str, start: datetime, end: datetime) -> dict[str, int]:
    """Agent messages per agent address in the month (internal notes included)."""
    rows = conn.execute(
        select(messages.c.from_addr).where(
            messages.c.tenant == tenant,
            messages.c.sender_role == "agent",
            messages.c.created_at >= start,
            messages.c.created_at < end,
        )
    )
    out: dict[str, int] = {}
    for (addr,) in rows:
        out[addr] = out.get(addr, 0) + 1
    return out


def agent_closes(conn: Connection, tenant: str, start: datetime, end: datetime) -> dict[str, int]:
    """Tickets each agent closed (``#close``) in the month, from the audit log."""
    rows = conn.execute(
        select(audit_events.c.actor, audit_events.c.detail).where(
            audit_events.c.tenant == tenant,
            audit_events.c.action == "ticket.commands",
            audit_events.c.created_at >= start,
            audit_events.c.created_at < end,
        )
    )
    out: dict[str, int] = {}
    for actor, detail in rows:
        if ((detail or {}).get("changes") or {}).get("status") == "closed":
            out[actor] = out.get(actor, 0) + 1
    return out


def has_report(conn: Connection, tenant: str, month: str) -> bool:
    row = conn.execute(
        select(reports.c.id).where(reports.c.tenant == tenant, reports.c.month == month)
    )
    return row.first() is not None


def add_report(
    conn: Connection, tenant: str, month: str, path: str, size: int, sha256: str, now: datetime
) -> None:
    """Record a report file (a remade month replaces the old row; its file was overwritten)."""
    conn.execute(reports.delete().where(reports.c.tenant == tenant, reports.c.month == month))
    conn.execute(
        insert(reports).values(
            tenant=tenant, month=month, path=path, size=size, sha256=sha256, created_at=now
        )
    )


def expired_reports(conn: Connection, before: datetime) -> list[dict[str, Any]]:
    """Report files made before ``before`` and not deleted yet (every tenant)."""
    rows = conn.execute(
        select(
            reports.c.id, reports.c.tenant, reports.c.month, reports.c.path, reports.c.created_at
        )
        .where(reports.c.deleted_at.is_(None), reports.c.created_at < before)
        .order_by(reports.c.id)
    )
    return [dict(r._mapping) for r in rows]


def mark_report_deleted(conn: Connection, tenant: str, report_id: int, now: datetime) -> None:
    conn.execute(
        update(reports)
        .where(reports.c.tenant == tenant, reports.c.id == report_id)
        .values(deleted_at=now, path="")
    )
