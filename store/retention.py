"""Retention: what a tenant's policy says must go, and the blobs nobody names any more.

``purge`` is per tenant (each has its own policy). Blob collection is the
one place that looks across tenants, because blobs are content-addressed
and shared: a blob goes only when no row of any tenant names it. It runs
under the write lock, and the pipeline binds its blobs inside its own
transaction (the file store checks they are still there, the database store
writes them there), so a collection can never remove a blob that a message is
about to commit (with files that message is answered 451 and its retry
writes it again).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Connection, Engine

from store.blobs import BlobStore
from store.models import (
    attachments,
    audit_events,
    auth_events,
    link_tokens,
    messages,
    outbox,
    tickets,
    web_sessions,
)
from store.privacy import delete_tickets, unlocked_audit

__all__ = ["Policy", "Purge", "collect_blobs", "find_orphans", "purge"]

# Sign-in failures and link requests only count within 15 minutes / 1 hour.
AUTH_EVENTS_KEPT = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Policy:
    """Days per kind of data, 0 = keep (routing.config.Retention, which store cannot import)."""

    closed_tickets_days: int
    raw_messages_days: int
    audit_days: int


@dataclass
class Purge:
    closed_tickets: list[str] = field(default_factory=list)
    raw_messages: int = 0
    sent_mail: int = 0
    audit_events: int = 0
    link_tokens: int = 0
    web_sessions: int = 0
    auth_events: int = 0
    blob_candidates: set[str] = field(default_factory=set)

    def counts(self) -> dict[str, int]:
        return {
            "closed_tickets": len(self.closed_tickets),
            "raw_messages": self.raw_messages,
            "sent_mail": self.sent_mail,
            "audit_events": self.audit_events,
            "link_tokens": self.link_tokens,
            "web_sessions": self.web_sessions,
            "auth_events": self.auth_events,
        }

    def __bool__(self) -> bool:
        return any(self.counts().values())


def _count(conn: Connection, table: Any, *where: Any) -> int:
    return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def purge(conn: Connection, tenant: str, policy: Policy, now: datetime, *, dry_run: bool) -> Purge:
    """Delete (or, dry, only count) what the tenant's policy no longer allows us to keep."""
    out = Purge()
    if policy.closed_tickets_days:
        before = now - timedelta(days=policy.closed_tickets_days)
        # Ordered here, not by the query: an ORDER BY number lets the planner walk the
        # tenant's every ticket by (tenant, number) rather than take the few due
        # through ix_tickets_tenant_status_updated_at (it did, on PostgreSQL and on an
        # analysed SQLite store).
        rows = sorted(
            conn.execute(
                select(tickets.c.id, tickets.c.ref, tickets.c.number).where(
                    tickets.c.tenant == tenant,
                    tickets.c.status == "closed",
                    tickets.c.updated_at < before,
                )
            ).all(),
            key=lambda r: int(r.number),
        )
        out.closed_tickets = [str(r.ref) for r in rows]
        if not dry_run:
            out.blob_candidates |= delete_tickets(conn, tenant, [int(r.id) for r in rows])
    if policy.raw_messages_days:
        before = now - timedelta(days=policy.raw_messages_days)
        old_raw = (
            messages.c.tenant == tenant,
            messages.c.raw_purged_at.is_(None),
            messages.c.created_at < before,
        )
        shas = {str(s) for (s,) in conn.execute(select(messages.c.raw_sha256).where(*old_raw))}
        out.raw_messages = _count(conn, messages, *old_raw)
        old_mail = (
            outbox.c.tenant == tenant,
            outbox.c.status.in_(("sent", "failed")),
            outbox.c.created_at < before,
        )
        out.sent_mail = _count(conn, outbox, *old_mail)
        if not dry_run:
            conn.execute(update(messages).where(*old_raw).values(raw_purged_at=now))
            conn.execute(delete(outbox).where(*old_mail))
            out.blob_candidates |= shas
    expired = (
        (link_tokens, "link_tokens", (link_tokens.c.expires_at < now,)),
        (web_sessions, "web_sessions", (web_sessions.c.expires_at < now,)),
        (auth_events, "auth_events", (auth_events.c.at < now - AUTH_EVENTS_KEPT,)),
    )
    if policy.audit_days:
        before = now - timedelta(days=policy.audit_days)
        expired += ((audit_events, "audit_events", (audit_events.c.created_at < before,)),)
    for table, name, where in expired:
        n = _count(conn, table, table.c.tenant == tenant, *where)
        setattr(out, name, n)
        if n and not dry_run:
            if table is audit_events:
                with unlocked_audit(conn, "retention"):
                    conn.execute(delete(table).where(table.c.tenant == tenant, *where))
            else:
                conn.execute(delete(table).where(table.c.tenant == tenant, *where))
    return out


def _named(conn: Connection, shas: set[str]) -> set[str]:
    """Which of these blobs some row of any tenant still names (cross-tenant by design)."""
    named: set[str] = set()
    ordered = sorted(shas)
    for i in range(0, len(ordered), 500):  # under SQLite's bound-parameter limit
        chunk = ordered[i : i + 500]
        named |= {
            str(s)
            for (s,) in conn.execute(
                select(attachments.c.sha256).where(attachments.c.sha256.in_(chunk)).distinct()
            )
        }
        named |= {
            str(s)
            for (s,) in conn.execute(
                select(messages.c.raw_sha256)
                .where(messages.c.raw_sha256.in_(chunk), messages.c.raw_purged_at.is_(None))
                .distinct()
            )
        }
    return named


def find_orphans(engine: Engine, blobs: BlobStore, older_than: float) -> set[str]:
    """Stored blobs older than ``older_than`` (a Unix time) that no row seems to name.

    Read on a connection of its own, outside the writer's transaction: the search
    goes over every stored blob, so under the write lock it held back every commit
    for as long (issue 21, figure 5). Nothing is deleted on its word alone:
    ``collect_blobs`` holds each one and checks again under the lock. Blocking (a
    query, or a walk of the blob folder): call it in a worker thread.
    """
    with engine.connect() as conn:
        return blobs.orphans(conn, older_than)


def collect_blobs(conn: Connection, blobs: BlobStore, candidates: set[str]) -> list[str]:
    """Delete the candidate blobs no row names (with ``find_orphans``' as candidates too,
    those left by a crash or a retried duplicate).

    Call it inside a write transaction of its own, after the one that dropped the rows.
    The blobs are held (locked, in the database store) before the check that no row
    names them, so a message committing the same blob meanwhile is either seen by the
    check or waits and writes it again (store/blobs_db.py).
    """
    held = blobs.hold(conn, set(candidates))
    gone = sorted(held - _named(conn, held))
    blobs.delete(conn, gone)
    return gone
