"""What ``gateway status`` shows an operator from the store: the outbox and its
recent failures, the reactions that failed lately, and when each tenant's last
report was made."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.engine import Connection

from store.clocks import aware
from store.models import audit_events, outbox, reports

__all__ = ["REACTION_WINDOW_HOURS", "outbox_summary", "reaction_failures", "report_summary"]

#: How far back ``gateway status`` counts failed reactions.
REACTION_WINDOW_HOURS = 24


def outbox_summary(conn: Connection, now: datetime, recent: int = 3) -> dict[str, Any]:
    counts = dict(
        conn.execute(select(outbox.c.status, func.count()).group_by(outbox.c.status)).all()
    )
    oldest = conn.execute(
        select(func.min(outbox.c.created_at)).where(outbox.c.status.in_(("pending", "sending")))
    ).scalar()
    failures = conn.execute(
        select(outbox.c.tenant, outbox.c.kind, outbox.c.to_addr, outbox.c.last_error)
        .where(outbox.c.last_error.is_not(None), outbox.c.last_error != "")
        # A sent row's note is no error, unless some recipients were refused; rows
        # sent before that rule hold the server's 250 text there.
        .where(or_(outbox.c.status != "sent", outbox.c.last_error.like("partly refused%")))
        .order_by(outbox.c.id.desc())
        .limit(recent)
    ).all()
    oldest = aware(oldest)
    return {
        "pending": int(counts.get("pending", 0)) + int(counts.get("sending", 0)),
        "sent": int(counts.get("sent", 0)),
        "failed": int(counts.get("failed", 0)),
        "oldest_age_seconds": round((now - oldest).total_seconds()) if oldest else None,
        "recent_errors": [
            {"tenant": t, "kind": k, "to": a, "error": (e or "")[:300]} for t, k, a, e in failures
        ],
    }


def report_summary(conn: Connection) -> dict[str, dict[str, Any]]:
    """The newest report row per tenant."""
    out: dict[str, dict[str, Any]] = {}
    rows = conn.execute(
        select(
            reports.c.tenant, reports.c.month, reports.c.created_at, reports.c.deleted_at
        ).order_by(reports.c.tenant, reports.c.month)
    )
    for tenant, month, created, deleted in rows:
        out[tenant] = {
            "month": month,
            "made": (aware(created) or datetime.now(UTC)).isoformat(timespec="seconds"),
            "deleted": deleted is not None,
        }
    return out


def reaction_failures(
    conn: Connection, now: datetime, hours: int = REACTION_WINDOW_HOURS
) -> dict[str, dict[str, Any]]:
    """Per tenant, the ``reaction.failed`` audit events of the last ``hours``: their count
    and the newest one. A reaction that fails never defers the mail (outbound/guard.py),
    so without this count an admin would only learn of it from each ticket."""
    since = now - timedelta(hours=hours)
    recent = (audit_events.c.action == "reaction.failed") & (audit_events.c.created_at >= since)
    counts = conn.execute(
        select(audit_events.c.tenant, func.count()).where(recent).group_by(audit_events.c.tenant)
    ).all()
    out: dict[str, dict[str, Any]] = {}
    for tenant, count in sorted(counts):
        newest = conn.execute(
            select(audit_events.c.detail, audit_events.c.created_at)
            .where(recent, audit_events.c.tenant == tenant)
            .order_by(audit_events.c.id.desc())
            .limit(1)
        ).first()
        detail = newest[0] if newest is not None and isinstance(newest[0], dict) else {}
        out[tenant] = {
            "count": int(count),
            "hours": hours,
            "last": {
                "reaction": str(detail.get("reaction", "?")),
                "error": str(detail.get("error", ""))[:200],
                "at": aware(newest[1]).isoformat(timespec="seconds") if newest else None,
            },
        }
    return out
