"""Web access for clients: magic links, sessions, lockout counts, and what a client may see.

Every function takes the tenant and filters on it, and every read of tickets
also filters on the client's address being a participant: a session of one
client cannot reach another's ticket or attachment by guessing a URL.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Connection

from store.models import (
    attachments,
    auth_events,
    link_tokens,
    messages,
    participants,
    tickets,
    web_sessions,
)

__all__ = [
    "FILE_COLUMNS",
    "SpentLink",
    "add_event",
    "client_attachment",
    "client_ticket",
    "client_tickets",
    "count_events",
    "end_session",
    "is_client",
    "link_owner",
    "new_link",
    "new_session",
    "session_address",
    "spend_link",
]

_CLIENT_ROLES = ("client", "cc")

# The reads of every page view, built once with bind parameters: building a
# select() per call (coercion, cache key) cost more CPU than SQLite running it
# (figure 8's profile; store/repos.py does the same for the mail's path).
_SESSION = select(web_sessions.c.address, web_sessions.c.expires_at).where(
    web_sessions.c.tenant == bindparam("tenant"),
    web_sessions.c.token_hash == bindparam("token_hash"),
)
_VISIBLE = select(participants.c.ticket_id).where(
    participants.c.tenant == bindparam("tenant"),
    participants.c.address == bindparam("address"),
    participants.c.role.in_(_CLIENT_ROLES),
)
_CLIENT_TICKET = select(tickets).where(
    tickets.c.tenant == bindparam("tenant"),
    tickets.c.ref == bindparam("ref"),
    tickets.c.id.in_(_VISIBLE.scalar_subquery()),
)
_CLIENT_MESSAGES = (
    select(
        messages.c.id,
        messages.c.from_addr,
        messages.c.from_name,
        messages.c.sender_role,
        messages.c.date,
        messages.c.created_at,
        messages.c.text,
        messages.c.reply_text,
        messages.c.flags,
    )
    .where(
        messages.c.tenant == bindparam("tenant"),
        messages.c.ticket_id == bindparam("ticket_id"),
        messages.c.sender_role.in_(("client", "agent")),
    )
    .order_by(messages.c.id)
)
# What a page shows of a message's file (the clients' pages here, the desk in store/desk.py).
FILE_COLUMNS = (
    attachments.c.message_id,
    attachments.c.filename,
    attachments.c.size,
    attachments.c.sha256,
    attachments.c.content_type,
)
_CLIENT_FILES = (
    select(*FILE_COLUMNS)
    .where(
        attachments.c.tenant == bindparam("tenant"),
        # By the ticket, not a list of ids: an expanding IN is compiled again per call.
        # Files of messages not shown (notes, machine mail) are dropped below.
        attachments.c.message_id.in_(
            select(messages.c.id)
            .where(
                messages.c.tenant == bindparam("tenant"),
                messages.c.ticket_id == bindparam("ticket_id"),
            )
            .scalar_subquery()
        ),
    )
    .order_by(attachments.c.message_id, attachments.c.position)
)


def add_event(
    conn: Connection, tenant: str, kind: str, address: str, source: str, at: datetime
) -> None:
    conn.execute(
        insert(auth_events),
        {"tenant": tenant, "kind": kind, "address": address, "source": source[:64], "at": at},
    )


def count_events(
    conn: Connection,
    tenant: str,
    kind: str,
    since: datetime,
    *,
    address: str | None = None,
    source: str | None = None,
) -> int:
    where = [auth_events.c.tenant == tenant, auth_events.c.kind == kind, auth_events.c.at >= since]
    if address is not None:
        where.append(auth_events.c.address == address)
    if source is not None:
        where.append(auth_events.c.source == source)
    return int(
        conn.execute(select(func.count()).select_from(auth_events).where(*where)).scalar_one()
    )


def is_client(conn: Connection, tenant: str, address: str) -> bool:
    row = conn.execute(
        select(participants.c.id)
        .where(
            participants.c.tenant == tenant,
            participants.c.address == address,
            participants.c.role.in_(_CLIENT_ROLES),
        )
        .limit(1)
    ).first()
    return row is not None


def new_link(
    conn: Connection,
    tenant: str,
    address: str,
    selector: str,
    verifier_hash: str,
    now: datetime,
    ttl: timedelta,
) -> None:
    conn.execute(
        insert(link_tokens),
        {
            "tenant": tenant,
            "address": address,
            "selector": selector,
            "verifier_hash": verifier_hash,
            "created_at": now,
            "expires_at": now + ttl,
        },
    )


@dataclass(frozen=True, slots=True)
class SpentLink:
    ok: bool
    address: str | None  # whom a failure counts against, when the selector was ours


def link_owner(conn: Connection, tenant: str, selector: str) -> str | None:
    """Whom a link belongs to, so a failure with it counts against that address."""
    row = conn.execute(
        select(link_tokens.c.address).where(
            link_tokens.c.tenant == tenant, link_tokens.c.selector == selector
        )
    ).first()
    return str(row[0]) if row is not None else None


def spend_link(
    conn: Connection, tenant: str, selector: str, verifier_hash: str, now: datetime
) -> SpentLink:
    """Single use by one atomic UPDATE; a wrong, expired or used token spends nothing."""
    row = conn.execute(
        select(link_tokens).where(
            link_tokens.c.tenant == tenant, link_tokens.c.selector == selector
        )
    ).first()
    if row is None:
        return SpentLink(False, None)
    address = str(row.address)
    expires = _aware(row.expires_at, now)
    if not hmac.compare_digest(str(row.verifier_hash), verifier_hash) or expires <= now:
        return SpentLink(False, address)
    res = conn.execute(
        update(link_tokens)
        .where(
            link_tokens.c.tenant == tenant,
            link_tokens.c.id == row.id,
            link_tokens.c.used_at.is_(None),
        )
        .values(used_at=now)
    )
    return SpentLink(res.rowcount == 1, address)


def new_session(
    conn: Connection, tenant: str, address: str, token_hash: str, now: datetime, ttl: timedelta
) -> None:
    conn.execute(
        insert(web_sessions),
        {
            "tenant": tenant,
            "address": address,
            "token_hash": token_hash,
            "created_at": now,
            "expires_at": now + ttl,
        },
    )


def session_address(conn: Connection, tenant: str, token_hash: str, now: datetime) -> str | None:
    """The session's client, while the server-side expiry has not passed."""
    row = conn.execute(_SESSION, {"tenant": tenant, "token_hash": token_hash}).first()
    if row is None or _aware(row.expires_at, now) <= now:
        return None
    return str(row.address)


def end_session(conn: Connection, tenant: str, token_hash: str) -> None:
    conn.execute(
        delete(web_sessions).where(
            web_sessions.c.tenant == tenant, web_sessions.c.token_hash == token_hash
        )
    )


def _visible(tenant: str, address: str) -> Any:
    """Ticket ids in which this address is a client-side participant."""
    return select(participants.c.ticket_id).where(
        participants.c.tenant == tenant,
        participants.c.address == address,
        participants.c.role.in_(_CLIENT_ROLES),
    )


def client_tickets(conn: Connection, tenant: str, address: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(tickets.c.ref, tickets.c.subject, tickets.c.status, tickets.c.updated_at)
        .where(tickets.c.tenant == tenant, tickets.c.id.in_(_visible(tenant, address)))
        .order_by(tickets.c.updated_at.desc())
    )
    return [dict(r._mapping) for r in rows]


def client_ticket(
    conn: Connection, tenant: str, address: str, ref: str
) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """The ticket and its messages a client may read: no internal notes, no machine mail."""
    row = conn.execute(_CLIENT_TICKET, {"tenant": tenant, "ref": ref, "address": address}).first()
    if row is None:
        return None
    ticket = dict(row._mapping)
    msgs = [
        dict(m._mapping)
        for m in conn.execute(_CLIENT_MESSAGES, {"tenant": tenant, "ticket_id": ticket["id"]})
    ]
    msgs = [m for m in msgs if "internal" not in (m["flags"] or [])]
    files: dict[int, list[dict[str, Any]]] = {}
    if msgs:
        for a in conn.execute(_CLIENT_FILES, {"tenant": tenant, "ticket_id": ticket["id"]}):
            files.setdefault(a.message_id, []).append(dict(a._mapping))
    for m in msgs:
        m["attachments"] = files.get(m["id"], [])
    return ticket, msgs


def client_attachment(
    conn: Connection, tenant: str, address: str, ref: str, sha256: str
) -> dict[str, Any] | None:
    """An attachment of a visible ticket's visible message, or None."""
    found = client_ticket(conn, tenant, address, ref)
    if found is None:
        return None
    for m in found[1]:
        for a in m["attachments"]:
            if a["sha256"] == sha256:
                return a
    return None


def _aware(value: datetime, now: datetime) -> datetime:
    return value.replace(tzinfo=now.tzinfo) if value.tzinfo is None else value
