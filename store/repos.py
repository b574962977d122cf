"""Query functions. The tenant is always the first argument after the connection.

No function here can reach a row of another tenant: every statement filters
on ``tenant``, including lookups by a primary key that came from outside.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ClauseElement

from store import deferred
from store.db import insert_ignore
from store.direct import Direct
from store.models import (
    audit_events,
    message_ids,
    messages,
    outbox,
    tickets,
)
from store.numbering import next_number

__all__ = [
    "INSERT_MESSAGE_ID",
    "acks_since",
    "add_audit",
    "add_audits",
    "add_message_flag",
    "enqueue_many",
    "find_message",
    "new_ticket",
    "now",
    "sent_by_us",
    "thread_ids",
    "ticket_by_number",
    "ticket_by_ref",
    "ticket_exists",
    "ticket_ref",
    "ticket_row",
    "tickets_for_message_ids",
    "update_ticket",
]


# Statements built once: building an insert with .values() per call cost more
# than running it (SQLAlchemy coerces every value into the construct).
# Lookups on the per-message path are prebuilt with bind parameters for the same
# reason: building a select() per call (coercion, cache key) cost about as much as
# SQLite running it.
# The hottest of them go straight to the driver (store/direct.py says why).
_TICKET_KEYS = ("tenant", "number", "ref", "subject", "status", "queue", "created_at",
                "updated_at", "client_language")  # fmt: skip
_INSERT_TICKET = Direct(insert(tickets).returning(tickets.c.id), _TICKET_KEYS)
_AUDIT_KEYS = ("tenant", "ticket_id", "actor", "action", "detail", "created_at")
_INSERT_AUDIT = Direct(insert(audit_events), _AUDIT_KEYS)
_OUTBOX_KEYS = ("tenant", "ticket_id", "kind", "message_id", "mail_from", "rcpt_tos", "body",
                "status", "attempts", "next_attempt_at", "created_at", "to_addr")  # fmt: skip
_INSERT_OUTBOX = Direct(insert(outbox), _OUTBOX_KEYS)
# A Message-ID for threading (store/ingest.py's anchors use it too; the first ticket
# to claim an id keeps it).
INSERT_MESSAGE_ID = Direct(lambda conn: insert_ignore(conn, message_ids),
                           ("tenant", "message_id", "ticket_id", "origin"))  # fmt: skip
_TENANT = bindparam("tenant")
_FIND_MESSAGE = Direct(
    select(messages.c.raw_sha256).where(
        messages.c.tenant == _TENANT, messages.c.message_key == bindparam("key")
    )
)
_TICKETS_FOR_IDS = select(message_ids.c.message_id, message_ids.c.ticket_id).where(
    message_ids.c.tenant == _TENANT,
    message_ids.c.message_id.in_(bindparam("ids", expanding=True)),
)
_TICKET_REF = select(tickets.c.ref).where(
    tickets.c.tenant == _TENANT, tickets.c.id == bindparam("id")
)
_TICKET_ROW = select(tickets).where(tickets.c.tenant == _TENANT, tickets.c.id == bindparam("id"))
_THREAD_IDS = {
    role: Direct(
        select(messages.c.message_id)
        .where(
            messages.c.tenant == _TENANT,
            messages.c.ticket_id == bindparam("id"),
            messages.c.message_id.is_not(None),
            *([messages.c.sender_role == bindparam("role")] if role else []),
        )
        .order_by(messages.c.id.desc())
        .limit(bindparam("limit"))
    )
    for role in (False, True)
}


def _acks_since(conn: Connection) -> ClauseElement:
    """The LIKE alone read every ack of the tenant: SQLite's LIKE ignores case, its index
    does not, so there ``local+`` .. ``local@domain`` (the address and its tagged forms
    in code-point order) bounds the read; PostgreSQL's index serves the LIKE (0015)."""
    to = outbox.c.to_addr
    bounded = [to >= bindparam("lowest"), to <= bindparam("address")]
    return (
        select(func.count())
        .select_from(outbox)
        .where(
            outbox.c.tenant == _TENANT,
            outbox.c.kind == "ack",
            *(bounded if conn.dialect.name == "sqlite" else []),
            or_(to == bindparam("address"), to.like(bindparam("tagged"), escape="\\")),
            outbox.c.created_at >= bindparam("since"),
        )
    )


_ACKS_SINCE = Direct(_acks_since)


def now() -> datetime:
    return datetime.now(UTC)


def _now() -> datetime:
    """``now()`` where a ``now`` argument shadows it; looked up at each call, so a test may
    replace ``repos.now`` as the clock of every row."""
    return now()


def find_message(conn: Connection, tenant: str, key: str) -> str | None:
    """The raw sha256 of the message stored under this dedupe key, if any."""
    row = _FIND_MESSAGE.first(conn, {"tenant": tenant, "key": key})
    return row[0] if row is not None else None


def tickets_for_message_ids(conn: Connection, tenant: str, ids: Sequence[str]) -> dict[str, int]:
    """The ticket each known Message-ID threads to: stored, or held for the batch's flush
    (a mail of the same batch; the first ticket to claim an id keeps it, as on insert)."""
    if not ids:
        return {}
    rows = conn.execute(_TICKETS_FOR_IDS, {"tenant": tenant, "ids": list(ids)})
    found = {m: t for m, t in rows}
    for r in deferred.pending(conn, INSERT_MESSAGE_ID):
        if r["tenant"] == tenant and r["message_id"] in ids:
            found.setdefault(r["message_id"], r["ticket_id"])
    return found


def ticket_by_number(conn: Connection, tenant: str, number: int) -> int | None:
    row = conn.execute(
        select(tickets.c.id).where(tickets.c.tenant == tenant, tickets.c.number == number)
    )
    return row.scalar_one_or_none()


def ticket_by_ref(conn: Connection, tenant: str, ref: str) -> int | None:
    row = conn.execute(select(tickets.c.id).where(tickets.c.tenant == tenant, tickets.c.ref == ref))
    return row.scalar_one_or_none()


def ticket_ref(conn: Connection, tenant: str, ticket_id: int) -> str | None:
    return conn.execute(_TICKET_REF, {"tenant": tenant, "id": ticket_id}).scalar_one_or_none()


def ticket_exists(conn: Connection, tenant: str, ticket_id: int) -> bool:
    row = conn.execute(
        select(tickets.c.id).where(tickets.c.tenant == tenant, tickets.c.id == ticket_id)
    )
    return row.scalar_one_or_none() is not None


def new_ticket(
    conn: Connection,
    tenant: str,
    prefix: str,
    subject: str,
    queue: str = "default",
    *,
    now: datetime | None = None,
    language: str | None = None,
) -> tuple[int, str]:
    """Allocate the tenant's next number and create the ticket; (id, ref). On PostgreSQL
    a rolled-back transaction leaves the number it drew unused (store/numbering.py).

    ``language``: the client's, when the first message showed it (outbound/language.py),
    written with the row rather than by an UPDATE after it."""
    number = next_number(conn, tenant)
    ref = f"{prefix}-{number}"
    ts = now or _now()
    row = _INSERT_TICKET.first(
        conn,
        {
            "tenant": tenant,
            "number": number,
            "ref": ref,
            "subject": subject,
            "status": "open",
            "queue": queue,
            "created_at": ts,
            "updated_at": ts,
            "client_language": language,
        },
    )
    assert row is not None
    return row[0], ref


def add_audit(
    conn: Connection,
    tenant: str,
    action: str,
    *,
    actor: str,
    ticket_id: int | None = None,
    detail: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> None:
    row = {
        "tenant": tenant,
        "ticket_id": ticket_id,
        "actor": actor,
        "action": action,
        "detail": detail or {},
        "created_at": now or _now(),
    }
    deferred.write(conn, _INSERT_AUDIT, [row])


def add_audits(conn: Connection, tenant: str, rows: list[dict[str, Any]]) -> None:
    """Many audit rows of ``tenant`` in one ``executemany`` (the web's buffered views).

    Each row has the columns of ``add_audit``'s arguments but the tenant: ticket_id,
    actor, action, detail, created_at (the time of the view, not of the write). The
    tenant is set here from the argument, as every store function takes it.
    """
    if rows:
        deferred.write(conn, _INSERT_AUDIT, [{**row, "tenant": tenant} for row in rows])


def outbox_last_id(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.max(outbox.c.id), 0))).scalar_one())


def outbox_after(conn: Connection, tenant: str, after_id: int) -> list[dict[str, Any]]:
    """Rows queued since ``after_id``: what a dry run would have sent."""
    rows = conn.execute(
        select(outbox.c.kind, outbox.c.rcpt_tos, outbox.c.mail_from, outbox.c.body)
        .where(outbox.c.tenant == tenant, outbox.c.id > after_id)
        .order_by(outbox.c.id)
    )
    return [dict(r._mapping) for r in rows]


def enqueue_many(
    conn: Connection,
    tenant: str,
    mails: Sequence[tuple[str, int | None, str, str, Sequence[str], bytes]],
    *,
    now: datetime | None = None,
) -> None:
    """Outbox rows (kind, ticket, Message-ID, sender, recipients, body) in one statement;
    each Message-ID that belongs to a ticket is remembered for threading in another."""
    if not mails:
        return
    ts = now or _now()
    deferred.write(
        conn,
        _INSERT_OUTBOX,
        [
            {
                "tenant": tenant,
                "ticket_id": ticket_id,
                "kind": kind,
                "message_id": message_id,
                "mail_from": mail_from,
                "rcpt_tos": list(rcpt_tos),
                "body": body,
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": ts,
                "created_at": ts,
                "to_addr": (rcpt_tos[0] if rcpt_tos else "").lower(),
            }
            for kind, ticket_id, message_id, mail_from, rcpt_tos, body in mails
        ],
    )
    ids = [
        {"tenant": tenant, "message_id": mid, "ticket_id": tid, "origin": "out"}
        for _, tid, mid, *_ in mails
        if tid is not None
    ]
    deferred.write(conn, INSERT_MESSAGE_ID, ids)


def ticket_row(conn: Connection, tenant: str, ticket_id: int) -> dict[str, Any] | None:
    row = conn.execute(_TICKET_ROW, {"tenant": tenant, "id": ticket_id}).first()
    return dict(row._mapping) if row is not None else None


def update_ticket(
    conn: Connection, tenant: str, ticket_id: int, *, now: datetime | None = None, **values: Any
) -> None:
    """Status, priority or assignee; always scoped by tenant."""
    conn.execute(
        update(tickets)
        .where(tickets.c.tenant == tenant, tickets.c.id == ticket_id)
        .values(updated_at=now or _now(), **values)
    )


def thread_ids(
    conn: Connection, tenant: str, ticket_id: int, *, role: str | None = None, limit: int = 20
) -> list[str]:
    """Message-IDs of the ticket, oldest first: the References of a mail we send on it."""
    params: dict[str, Any] = {"tenant": tenant, "id": ticket_id, "limit": limit}
    if role is not None:
        params["role"] = role
    return [r[0] for r in _THREAD_IDS[role is not None].all(conn, params)][::-1]


def acks_since(conn: Connection, tenant: str, address: str, since: datetime) -> int:
    """Acknowledgements queued for this address since ``since`` (the RFC 3834 rate limit).

    ``user+anything@`` counts as ``user@``: a fresh tag per mail does not earn a fresh
    acknowledgement."""
    local, _, domain = address.lower().partition("@")
    local = local.split("+", 1)[0]
    tagged = f"{_like_escape(local)}+%@{_like_escape(domain)}"
    params: dict[str, Any] = {"tenant": tenant, "address": f"{local}@{domain}"}
    params |= {"lowest": f"{local}+", "tagged": tagged, "since": since}
    row = _ACKS_SINCE.first(conn, params)
    held = sum(
        1
        for r in deferred.pending(conn, _INSERT_OUTBOX)
        if r["tenant"] == tenant
        and r["kind"] == "ack"
        and _same_sender(r["to_addr"], local, domain)
        and r["created_at"] >= since
    )
    return (int(row[0]) if row is not None else 0) + held


def _same_sender(to_addr: str, local: str, domain: str) -> bool:
    """``acks_since``'s match, for an acknowledgement held for the batch's flush."""
    their_local, _, their_domain = to_addr.partition("@")
    return their_domain == domain and (their_local == local or their_local.startswith(f"{local}+"))


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def sent_by_us(conn: Connection, tenant: str, ids: Sequence[str]) -> list[str]:
    """Which of these Message-IDs are mails the gateway sent for this tenant."""
    if not ids:
        return []
    rows = conn.execute(
        select(message_ids.c.message_id).where(
            message_ids.c.tenant == tenant,
            message_ids.c.origin == "out",
            message_ids.c.message_id.in_(list(ids)),
        )
    )
    return [r[0] for r in rows]


def add_message_flag(conn: Connection, tenant: str, message_row: int, flag: str) -> None:
    row = conn.execute(
        select(messages.c.flags).where(messages.c.tenant == tenant, messages.c.id == message_row)
    ).first()
    if row is not None and flag not in (row[0] or []):
        conn.execute(
            update(messages)
            .where(messages.c.tenant == tenant, messages.c.id == message_row)
            .values(flags=[*(row[0] or []), flag])
        )
