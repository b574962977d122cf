"""What ``gateway status`` shows an operator from the store: the outbox and its
recent failures, and when each tenant's last report was made."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.engine import Connection

from store.clocks import aware
from store.models import outbox, reports

__all__ = ["outbox_summary", "report_summary"]


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
