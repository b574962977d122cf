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

from sqlalchemy import Text, and_, bindparam, cast, delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from store.direct import Direct
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
    "session_ticket",
    "spend_link",
]

_CLIENT_ROLES = ("client", "cc")


def _one_of(column: Any, values: tuple[str, ...]) -> Any:
    """``column IN values`` for the prebuilt reads, as ORed equalities: an ``in_()``
    of values is an expanding parameter, rendered again at every execution."""
    return or_(*(column == v for v in values))


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
    _one_of(participants.c.role, _CLIENT_ROLES),
)
_CLIENT_TICKET = select(tickets).where(
    tickets.c.tenant == bindparam("tenant"),
    tickets.c.ref == bindparam("ref"),
    tickets.c.id.in_(_VISIBLE.scalar_subquery()),
)
# What a page shows of a message's file (the clients' pages here, the desk in store/desk.py).
FILE_COLUMNS = (
    attachments.c.message_id,
    attachments.c.filename,
    attachments.c.size,
    attachments.c.sha256,
    attachments.c.content_type,
)
# The messages a client may read with their files, in one statement (a message
# without files comes once, its file columns NULL).
_CLIENT_THREAD = Direct(
    select(
        messages.c.id,
        messages.c.from_addr,
        messages.c.from_name,
        messages.c.sender_role,
        messages.c.date,
        messages.c.created_at,
        messages.c.subject,
        messages.c.text,
        messages.c.reply_text,
        *FILE_COLUMNS[1:],
    )
    .select_from(
        messages.outerjoin(
            attachments,
            and_(
                attachments.c.message_id == messages.c.id, attachments.c.tenant == messages.c.tenant
            ),
        )
    )
    .where(
        messages.c.tenant == bindparam("tenant"),
        messages.c.ticket_id == bindparam("ticket_id"),
        _one_of(messages.c.sender_role, ("client", "agent")),
        # No internal notes: matched in the flags' JSON text, which costs nothing to
        # read, where decoding the list cost more than the rest of the row.
        ~cast(messages.c.flags, Text).contains('"internal"'),
    )
    .order_by(messages.c.id, attachments.c.position)
)
_MESSAGE_KEYS = _CLIENT_THREAD.keys[: -len(FILE_COLUMNS[1:])]  # the file's columns follow
# The ticket page's first read: the session and, when it is live, the ticket its
# client may see, in one statement (a row without a ticket: the session alone).
_SESSION_TICKET = Direct(
    select(
        web_sessions.c.address,
        web_sessions.c.expires_at,
        tickets.c.id,
        tickets.c.number,
        tickets.c.ref,
        tickets.c.subject,
        tickets.c.status,
    )
    .select_from(
        web_sessions.outerjoin(
            tickets,
            and_(
                tickets.c.tenant == web_sessions.c.tenant,
                tickets.c.ref == bindparam("ref"),
                tickets.c.id.in_(
                    select(participants.c.ticket_id)
                    .where(
                        participants.c.tenant == web_sessions.c.tenant,
                        participants.c.address == web_sessions.c.address,
                        _one_of(participants.c.role, _CLIENT_ROLES),
                    )
                    .correlate(web_sessions)
                    .scalar_subquery()
                ),
            ),
        )
    )
    .where(
        web_sessions.c.tenant == bindparam("tenant"),
        web_sessions.c.token_hash == bindparam("token_hash"),
    )
)

ClientTicket = tuple[dict[str, Any], list[dict[str, Any]]]


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


def client_ticket(conn: Connection, tenant: str, address: str, ref: str) -> ClientTicket | None:
    """The ticket and its messages a client may read: no internal notes, no machine mail."""
    row = conn.execute(_CLIENT_TICKET, {"tenant": tenant, "ref": ref, "address": address}).first()
    if row is None:
        return None
    ticket = dict(row._mapping)
    return ticket, _thread(conn, tenant, ticket["id"])


def session_ticket(
    conn: Connection, tenant: str, token_hash: str, ref: str, now: datetime
) -> tuple[str, ClientTicket | None] | None:
    """``session_address`` and ``client_ticket`` in two statements instead of four: the
    page every client opens most. None without a live session."""
    found = _SESSION_TICKET.rows(conn, {"tenant": tenant, "token_hash": token_hash, "ref": ref})
    if not found or _aware(found[0]["expires_at"], now) <= now:
        return None
    row = found[0]
    if row["id"] is None:
        return str(row["address"]), None
    ticket = {k: row[k] for k in ("id", "number", "ref", "subject", "status")}
    return str(row["address"]), (ticket, _thread(conn, tenant, row["id"]))


def _thread(conn: Connection, tenant: str, ticket_id: int) -> list[dict[str, Any]]:
    """A ticket's messages a client may read, each with its ``attachments``."""
    msgs: list[dict[str, Any]] = []
    last: dict[str, Any] = {}
    for r in _CLIENT_THREAD.rows(conn, {"tenant": tenant, "ticket_id": ticket_id}):
        if r["id"] != last.get("id"):
            last = {k: r[k] for k in _MESSAGE_KEYS}
            last["attachments"] = []
            msgs.append(last)
        if r["sha256"] is not None:
            last["attachments"].append(
                {
                    "message_id": r["id"],
                    "filename": r["filename"],
                    "size": r["size"],
                    "sha256": r["sha256"],
                    "content_type": r["content_type"],
                }
            )
    return msgs


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
