"""Query functions. The tenant is always the first argument after the connection.

No function here can reach a row of another tenant: every statement filters
on ``tenant``, including lookups by a primary key that came from outside.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import String, bindparam, cast, func, insert, select, update
from sqlalchemy.dialects.postgresql import REGCLASS
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ColumnElement, Insert

from store import deferred, numbering
from store.db import insert_ignore
from store.direct import Direct, Family
from store.models import (
    audit_events,
    message_ids,
    messages,
    outbox,
    tickets,
)

__all__ = [
    "IDS_AT_ONCE",
    "INSERT_MESSAGE_ID",
    "INSERT_OUTBOX",
    "THREAD_IDS",
    "add_audit",
    "add_audits",
    "add_message_flag",
    "among_ids",
    "enqueue_many",
    "find_message",
    "ids_asked",
    "insert_drawn",
    "new_ticket",
    "now",
    "sent_by_us",
    "thread_ids",
    "ticket_by_number",
    "ticket_by_ref",
    "ticket_exists",
    "ticket_ref",
    "ticket_row",
    "ticket_values",
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


def insert_drawn(named: str = "") -> Insert:
    """A new ticket on PostgreSQL: its number drawn from the tenant's sequence
    (store/numbering.py) in the INSERT itself, and its ref made of it, one round trip
    instead of two. ``drawn`` is a one-row subquery, so both read the same ``nextval``.
    ``named``: the parameters' prefix (``ticket_values``), where the statement is part
    of a bigger one whose other parameters share a column's name (store/ingest.py)."""
    drawn = select(func.nextval(cast(bindparam(f"{named}seq", type_=String), REGCLASS)).label("n"))
    n = drawn.subquery("drawn").c.n
    given = [c for c in _TICKET_KEYS if c not in ("number", "ref")]
    # Each value cast to its column's type, strings without a length: a cast to
    # VARCHAR(n) would cut a long value where the INSERT refuses it.
    typed = [
        cast(bindparam(f"{named}{c}"), String() if isinstance(t, String) else t)
        for c, t in ((c, tickets.c[c].type) for c in given)
    ]
    ref = bindparam(f"{named}prefix", type_=String) + "-" + cast(n, String)
    return (
        insert(tickets)
        .from_select([*given, "number", "ref"], select(*typed, n, ref))
        .returning(tickets.c.id, tickets.c.ref)
    )


_INSERT_DRAWN = Direct(insert_drawn())
_AUDIT_KEYS = ("tenant", "ticket_id", "actor", "action", "detail", "created_at")
_INSERT_AUDIT = Direct(insert(audit_events), _AUDIT_KEYS)
_OUTBOX_KEYS = ("tenant", "ticket_id", "kind", "message_id", "mail_from", "rcpt_tos", "body",
                "status", "attempts", "next_attempt_at", "created_at", "to_addr")  # fmt: skip
INSERT_OUTBOX = Direct(insert(outbox), _OUTBOX_KEYS)
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
# The threading lookup, straight to the driver: one fixed statement per power of two of
# Message-IDs asked (the list padded with its last id), so a handful of them in all.
_TICKETS_FOR_IDS: Family[int] = Family(
    lambda size: Direct(
        select(message_ids.c.message_id, message_ids.c.ticket_id).where(
            message_ids.c.tenant == _TENANT, among_ids(size)
        )
    )
)
IDS_AT_ONCE = 64  # a longer References chain is asked in slices of this many
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


# The References of a mail we send on a ticket: its newest Message-IDs, at most this many.
THREAD_IDS = 20


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


def tickets_for_message_ids(
    conn: Connection, tenant: str, ids: Sequence[str], *, stored: dict[str, int] | None = None
) -> dict[str, int]:
    """The ticket each known Message-ID threads to: stored, or held for the batch's flush
    (a mail of the same batch; the first ticket to claim an id keeps it, as on insert).
    ``stored``: the stored ones, read already (store/bouncing.py ``first_look``)."""
    if not ids:
        return {}
    found: dict[str, int] = {}
    if stored is not None:
        found.update(stored)
    else:
        for at in range(0, len(ids), IDS_AT_ONCE):
            found.update(_tickets_for(conn, tenant, ids[at : at + IDS_AT_ONCE]))
    for r in deferred.pending(conn, INSERT_MESSAGE_ID):
        if r["tenant"] == tenant and r["message_id"] in ids:
            found.setdefault(r["message_id"], r["ticket_id"])
    return found


def ids_asked(ids: Sequence[Any], prefix: str = "m") -> tuple[int, dict[str, Any]]:
    """Values (up to IDS_AT_ONCE Message-IDs; outbox row ids, ``prefix`` "i"; a tenant's
    agents' addresses, "a") as a fixed statement asks them (``among_ids``, a
    ``store.direct.Family`` by size): its size, a power of two (a handful of
    statements, not one per length), and the values of ``<prefix>0``.. (the last
    repeated to fill it)."""
    size = 1 << (len(ids) - 1).bit_length()
    values = [*ids, *(ids[-1:] * (size - len(ids)))]
    return size, dict(zip(_names(prefix, size), values, strict=True))


@functools.cache
def _names(prefix: str, size: int) -> tuple[str, ...]:
    """``<prefix>0``.. of ``ids_asked``: a handful of sizes, named once."""
    return tuple(f"{prefix}{i}" for i in range(size))


def among_ids(
    size: int, column: ColumnElement[Any] = message_ids.c.message_id, prefix: str = "m"
) -> ColumnElement[bool]:
    """``column`` is one of ``<prefix>0``..``<prefix><size - 1>`` (``ids_asked``)."""
    return column.in_([bindparam(f"{prefix}{i}") for i in range(size)])


def _tickets_for(conn: Connection, tenant: str, ids: Sequence[str]) -> dict[str, int]:
    size, params = ids_asked(ids)
    params["tenant"] = tenant
    return {m: t for m, t in _TICKETS_FOR_IDS[size].all(conn, params)}


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


def ticket_values(
    tenant: str, subject: str, queue: str, now: datetime, language: str | None, named: str = ""
) -> dict[str, Any]:
    """A new ticket's row but its number and ref (``insert_drawn``'s parameters but the
    sequence and the prefix), each name after ``named``."""
    values = {
        "tenant": tenant,
        "subject": subject,
        "status": "open",
        "queue": queue,
        "created_at": now,
        "updated_at": now,
        "client_language": language,
    }
    return {f"{named}{k}": v for k, v in values.items()} if named else values


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
    values = ticket_values(tenant, subject, queue, now or _now(), language)
    seq = numbering.sequence(conn, tenant)
    if seq is not None:
        drawn = _INSERT_DRAWN.first(conn, {**values, "seq": seq, "prefix": prefix})
        assert drawn is not None
        return drawn[0], drawn[1]
    number = numbering.next_number(conn, tenant)
    ref = f"{prefix}-{number}"
    row = _INSERT_TICKET.first(conn, {**values, "number": number, "ref": ref})
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
        INSERT_OUTBOX,
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
    conn: Connection,
    tenant: str,
    ticket_id: int,
    *,
    role: str | None = None,
    limit: int = THREAD_IDS,
) -> list[str]:
    """Message-IDs of the ticket, oldest first: the References of a mail we send on it."""
    params: dict[str, Any] = {"tenant": tenant, "id": ticket_id, "limit": limit}
    if role is not None:
        params["role"] = role
    return [r[0] for r in _THREAD_IDS[role is not None].all(conn, params)][::-1]


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
