"""What the store holds about one address in one tenant: GDPR access (Art. 15/20), and
the lookups store/privacy.py's erasure (Art. 17) shares with it.

Every function takes the tenant first and touches only that tenant's rows; what a
subject gets is explained in docs/privacy.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Select, or_, select
from sqlalchemy.engine import Connection

from store.models import (
    attachments,
    audit_events,
    auth_events,
    bouncing,
    link_tokens,
    messages,
    outbox,
    participants,
    tickets,
    web_sessions,
)
from store.redact import Redactor

__all__ = ["CLIENT_ROLES", "collect_subject", "column_set", "lower", "names_of", "their_tickets"]

CLIENT_ROLES = ("client", "cc")


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _row(r: Any, *cols: str) -> dict[str, Any]:
    m = r._mapping
    return {c: _iso(m[c]) for c in cols}


def lower(values: Iterable[Any]) -> list[str]:
    return [str(v).lower() for v in values or []]


def column_set(conn: Connection, *queries: Select[Any]) -> set[Any]:
    """The one column of several selects, as one set (their union)."""
    return {value for query in queries for (value,) in conn.execute(query)}


def names_of(conn: Connection, tenant: str, address: str) -> set[str]:
    """Display names this address used with the tenant: erased along with it."""
    names = _theirs(conn, tenant, address, participants.c.name, messages.c.from_name)
    return {str(n) for n in names if str(n).strip()}


def their_tickets(conn: Connection, tenant: str, address: str) -> set[int]:
    """The tickets they are on, or wrote to."""
    return {
        int(t)
        for t in _theirs(conn, tenant, address, participants.c.ticket_id, messages.c.ticket_id)
    }


def _theirs(
    conn: Connection, tenant: str, address: str, on: Column[Any], wrote: Column[Any]
) -> set[Any]:
    """``on`` of their participant rows and ``wrote`` of the messages they sent, as one
    set (NULLs left out: a message off any ticket)."""
    return column_set(
        conn,
        select(on).where(participants.c.tenant == tenant, participants.c.address == address),
        select(wrote).where(
            messages.c.tenant == tenant, messages.c.from_addr == address, wrote.is_not(None)
        ),
    )


def collect_subject(conn: Connection, tenant: str, address: str) -> dict[str, Any]:
    """Everything held about ``address`` in ``tenant``, as JSON-ready data.

    Messages: those they wrote, those addressed to them, and the messages of
    their tickets a client may read (the web pages' rule: no internal notes,
    no machine mail). Blobs are named by sha256; the caller adds the files.
    """
    address = address.strip().lower()
    ticket_ids = their_tickets(conn, tenant, address)
    refs = {
        int(r.id): r
        for r in conn.execute(
            select(tickets).where(tickets.c.tenant == tenant, tickets.c.id.in_(ticket_ids))
        )
    }
    out_tickets = [
        _row(r, "ref", "subject", "status", "priority", "queue", "created_at", "updated_at")
        for r in sorted(refs.values(), key=lambda r: int(r.number))
    ]
    participation = [
        {"ticket": refs[int(r.ticket_id)].ref, **_row(r, "name", "role", "created_at")}
        for r in conn.execute(
            select(participants).where(
                participants.c.tenant == tenant, participants.c.address == address
            )
        )
        if int(r.ticket_id) in refs
    ]
    msgs = []
    for m in conn.execute(
        select(messages).where(
            messages.c.tenant == tenant,
            or_(messages.c.ticket_id.in_(ticket_ids), messages.c.from_addr == address),
        )
    ):
        mine = m.from_addr == address or m.envelope_from == address
        to_them = address in lower(m.to_addrs) + lower(m.cc_addrs)
        visible = (
            m.ticket_id in refs
            and m.sender_role in (*CLIENT_ROLES, "agent")
            and "internal" not in (m.flags or [])
        )
        if mine or to_them or visible:
            msgs.append((m, mine))
    # Mail addressed to them that sits on nobody's ticket (machine mail, none of theirs).
    files: dict[int, list[dict[str, Any]]] = {}
    ids = [m.id for m, _ in msgs]
    for a in conn.execute(
        select(attachments).where(attachments.c.tenant == tenant, attachments.c.message_id.in_(ids))
    ):
        files.setdefault(int(a.message_id), []).append(
            _row(a, "filename", "content_type", "size", "sha256", "inline")
        )
    out_msgs = []
    for m, mine in sorted(msgs, key=lambda x: int(x[0].id)):
        item = _row(
            m, "id", "message_id", "direction", "kind", "sender_role", "from_addr", "from_name",
            "to_addrs", "cc_addrs", "subject", "date", "text", "html", "created_at",
        )  # fmt: skip
        item["ticket"] = refs[int(m.ticket_id)].ref if m.ticket_id in refs else None
        item["written_by_them"] = mine
        # Their own mail as received; other people's raw mail carries other people's headers.
        item["raw_sha256"] = m.raw_sha256 if mine and m.raw_purged_at is None else None
        item["attachments"] = files.get(int(m.id), [])
        out_msgs.append(item)
    sent = [
        {**_row(r, "kind", "message_id", "status", "created_at", "sent_at"), "body": r.body}
        for r in conn.execute(select(outbox).where(outbox.c.tenant == tenant))
        if r.to_addr == address or address in lower(r.rcpt_tos)
    ]
    redactor = Redactor(b"", address)
    audit = [
        _row(r, "action", "actor", "ticket_id", "detail", "created_at")
        for r in conn.execute(
            select(audit_events).where(audit_events.c.tenant == tenant).order_by(audit_events.c.id)
        )
        if r.actor == address or redactor.mentions(r.detail)
    ]

    def rows(table: Any, *cols: str) -> list[dict[str, Any]]:
        where = [table.c.tenant == tenant, table.c.address == address]
        return [_row(r, *cols) for r in conn.execute(select(table).where(*where))]

    return {
        "subject": address,
        "tenant": tenant,
        "tickets": out_tickets,
        "participation": participation,
        "messages": out_msgs,
        "mail_sent_to_them": sent,
        "audit_events": audit,
        "sign_in_links": rows(link_tokens, "created_at", "expires_at", "used_at"),
        "web_sessions": rows(web_sessions, "created_at", "expires_at"),
        "sign_in_events": rows(auth_events, "kind", "source", "at"),
        "bouncing": rows(bouncing, "status", "reason", "since"),
    }
