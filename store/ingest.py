"""One inbound message's rows for one tenant, written from a plan made before any of them.

The pipeline decides first (``gateway/intake/decide.py``, a pure function)
and this module writes: every insert and update an inbound message makes is
here, in one order (the ticket, the message, its attachments, its
Message-ID for threading, the participants, the audit event) and with the
one timestamp the plan was made at. Reactions (acknowledgements, notices)
come after, from ``outbound.reactions``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, insert, select, true, update
from sqlalchemy.engine import Connection
from sqlalchemy.sql.expression import CTE

from store import clocks, deferred, numbering, repos
from store import participants as people
from store.direct import Direct, Family
from store.models import attachments, messages, tickets

__all__ = [
    "Audit",
    "Ingest",
    "NewTicket",
    "Participant",
    "Written",
    "audit",
    "insert_attachments",
    "insert_message",
    "record_message_id",
    "touch_ticket",
    "write",
]

# Statements built once: building an insert with .values() per call cost more
# than running it (SQLAlchemy coerces every value into the construct); and said
# straight to the driver (store/direct.py says why). The message INSERT is compiled
# for its columns: one set from gateway/intake/decide.py, so one entry.
_INSERT_MESSAGE: Family[tuple[str, ...]] = Family(
    lambda keys: Direct(insert(messages).returning(messages.c.id), keys)
)
# A ticket's touch names its WHERE's parameters w_tenant and w_id (an UPDATE's WHERE
# may not reuse a column's name as a parameter name). It returns the ticket's clocks:
# a client's follow-up moves them with no read of its own (store/clocks.py).
_TOUCH = (
    update(tickets)
    .where(tickets.c.tenant == bindparam("w_tenant"), tickets.c.id == bindparam("w_id"))
    .values(updated_at=bindparam("ts"))
    .returning(*clocks.CLOCK_COLUMNS)
)
_TOUCH_TICKET = Direct(_TOUCH)
# A message's attachment rows, held for the writer's flush (store/deferred.py): one
# statement for a batch's files instead of one a message with files. Nothing of the
# batch reads them back (the mail that carries a file reads the parsed message's list).
_INSERT_ATTACHMENT = Direct(
    insert(attachments),
    ("tenant", "message_id", "position", "filename", "content_type", "size", "sha256",
     "inline", "content_id"),
)  # fmt: skip


# On PostgreSQL a message's INSERT goes out in one statement with its ticket's: a new
# ticket's INSERT (its number drawn in it) or a follow-up's touch, as data-modifying
# CTEs. Each was a round trip of the writer's of its own (figure 9). SQLite has no such
# CTE, and no round trips to save. By the message's columns, as ``_INSERT_MESSAGE``.
def _message_with(ticket: Any, keys: tuple[str, ...]) -> CTE:
    return (
        insert(messages)
        .values({**{k: bindparam(k) for k in keys}, "ticket_id": ticket})
        .returning(messages.c.id.label("message_row"))
        .cte("m")
    )


def _opened_with(keys: tuple[str, ...]) -> Select[Any]:
    """A new ticket and its first message: (the message's row id, the ticket's id, ref)."""
    t = repos.insert_drawn("t_").cte("t")
    m = _message_with(select(t.c.id).scalar_subquery(), keys)
    return select(m.c.message_row, t.c.id, t.c.ref).select_from(m).select_from(t)


def _touched_with(keys: tuple[str, ...]) -> Select[Any]:
    """A follow-up and its ticket's touch: the message's row id and ``_TOUCH_TICKET``'s
    row (NULLs when the ticket is not the tenant's, as the touch alone finds none)."""
    u = _TOUCH.cte("u")
    m = _message_with(bindparam("w_id"), keys)
    return select(m.c.message_row, *u.c).select_from(m.outerjoin(u, true()))


_OPENED_WITH: Family[tuple[str, ...]] = Family(lambda keys: Direct(_opened_with(keys)))
_TOUCHED_WITH: Family[tuple[str, ...]] = Family(lambda keys: Direct(_touched_with(keys)))


@dataclass(frozen=True, slots=True)
class NewTicket:
    prefix: str
    subject: str
    queue: str
    language: str | None = None  # the client's, when the first message shows it


@dataclass(frozen=True, slots=True)
class Participant:
    address: str
    name: str
    role: str  # client | cc


@dataclass(frozen=True, slots=True)
class Audit:
    action: str
    actor: str
    detail: dict[str, Any]
    ticket_id: int | None = None


@dataclass(frozen=True, slots=True)
class Ingest:
    """Every row one inbound message adds or changes for one tenant."""

    message: dict[str, Any]  # the ``messages`` row but its tenant, ticket and time
    attachments: tuple[dict[str, Any], ...]
    actor: str  # who the audit event names: the sender
    detail: dict[str, Any]  # the audit event's, after the stored message's row id
    open: NewTicket | None = None  # a ticket to open, or
    ticket_id: int | None = None  # the ticket it continues, or neither (machine mail alone)
    changes: dict[str, Any] = field(default_factory=dict)  # a rule's queue, priority, ...
    tags: tuple[str, ...] = ()  # added to the ticket's own
    participants: tuple[Participant, ...] = ()
    # Its Message-ID becomes a threading anchor for later mail; not for a message
    # whose sender is unverified or an outsider (others could thread onto it).
    anchor: bool = True
    # The status ``changes`` moves the ticket from (a client's reply reopens it), for
    # its own ``ticket.status`` event; None: the status stays.
    status_was: str | None = None


@dataclass(frozen=True, slots=True)
class Written:
    ticket_id: int | None
    ref: str | None
    subject: str  # the ticket's
    message_row: int
    # A continued ticket's clocks after the write (``clocks.clock_row``), for a client's
    # follow-up to move them with no second read; None for a new ticket.
    clocks: dict[str, Any] | None = None


def write(conn: Connection, tenant: str, plan: Ingest, now: datetime) -> Written:
    """Apply ``plan``; a ticket that vanished since the lookup leaves ``ref`` None."""
    ticket_id, ref, subject, after = plan.ticket_id, None, "", None
    message = {"tenant": tenant, "created_at": now, **plan.message}
    row: int | None = None
    if plan.open is not None:
        row, ticket_id, ref = _open(conn, tenant, plan, plan.open, message, now)
        subject = plan.open.subject
    elif ticket_id is not None:
        row, after = _touch(conn, tenant, ticket_id, plan, message, now)
        ref, subject = (after["ref"], after["subject"]) if after is not None else (None, "")
    if row is None:
        row = insert_message(conn, tenant, now, ticket_id=ticket_id, **plan.message)
    insert_attachments(conn, tenant, row, plan.attachments)
    detail = {"message": row, **plan.detail}
    if ticket_id is None:
        repos.add_audit(conn, tenant, "message.recorded", actor=plan.actor, detail=detail, now=now)
        return Written(None, None, "", row)
    if plan.anchor and plan.message.get("message_id"):
        record_message_id(conn, tenant, plan.message["message_id"], ticket_id, "in")
    people.hold(conn, tenant, ticket_id, [(p.address, p.name, p.role) for p in plan.participants],
                now)  # fmt: skip
    if plan.status_was is not None and "status" in plan.changes:
        repos.add_audit(
            conn, tenant, "ticket.status", actor=plan.actor, ticket_id=ticket_id,
            detail={"from": plan.status_was, "to": plan.changes["status"]}, now=now,
        )  # fmt: skip
    action = "ticket.created" if plan.open is not None else "message.added"
    repos.add_audit(
        conn, tenant, action, actor=plan.actor, ticket_id=ticket_id, detail=detail, now=now
    )
    return Written(ticket_id, ref, subject, row, after)


def _open(
    conn: Connection,
    tenant: str,
    plan: Ingest,
    new: NewTicket,
    message: dict[str, Any],
    now: datetime,
) -> tuple[int | None, int, str]:
    """The new ticket, with its message on PostgreSQL when no UPDATE follows: (the
    message's row id or None when it is still to be written, the ticket's id, ref)."""
    alone = conn.dialect.name == "postgresql" and not plan.changes and not plan.tags
    seq = numbering.sequence(conn, tenant) if alone else None  # no UPDATE follows
    if seq is not None:
        values = repos.ticket_values(tenant, new.subject, new.queue, now, new.language, "t_")
        values |= {"t_seq": seq, "t_prefix": new.prefix}
        opened = _OPENED_WITH[tuple(message)].first(conn, message | values)
        assert opened is not None
        return opened[0], opened[1], opened[2]
    ticket_id, ref = repos.new_ticket(
        conn, tenant, new.prefix, new.subject, queue=new.queue, now=now, language=new.language
    )
    changes = _changes(conn, tenant, ticket_id, plan.changes, plan.tags)
    if changes:
        repos.update_ticket(conn, tenant, ticket_id, now=now, **changes)
    return None, ticket_id, ref


def _touch(
    conn: Connection,
    tenant: str,
    ticket_id: int,
    plan: Ingest,
    message: dict[str, Any],
    now: datetime,
) -> tuple[int | None, dict[str, Any] | None]:
    """The continued ticket touched (``touch_ticket``), with the message on PostgreSQL
    when nothing else changes: (the message's row id or None, the ticket's clocks row)."""
    changes = _changes(conn, tenant, ticket_id, plan.changes, plan.tags)
    if changes or conn.dialect.name != "postgresql":
        return None, touch_ticket(conn, tenant, ticket_id, now, changes)
    values = {"w_tenant": tenant, "w_id": ticket_id, "ts": now}
    found = _TOUCHED_WITH[tuple(message)].rows(conn, message | values)[0]
    row = found.pop("message_row")
    return row, clocks.clock_row(found) if found["id"] is not None else None


def audit(conn: Connection, tenant: str, event: Audit, now: datetime) -> None:
    repos.add_audit(
        conn,
        tenant,
        event.action,
        actor=event.actor,
        ticket_id=event.ticket_id,
        detail=event.detail,
        now=now,
    )


def _changes(
    conn: Connection, tenant: str, ticket_id: int, changes: dict[str, Any], tags: Sequence[str]
) -> dict[str, Any]:
    """A rule's ticket actions; tags join the ticket's own, so only new ones are a change."""
    changes = dict(changes)
    if tags:
        row = repos.ticket_row(conn, tenant, ticket_id) or {}
        have = list(row.get("tags") or [])
        if any(t not in have for t in tags):
            changes["tags"] = have + [t for t in tags if t not in have]
    return changes


def touch_ticket(
    conn: Connection,
    tenant: str,
    ticket_id: int,
    now: datetime,
    changes: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Mark the ticket updated, with a rule's or a reopening's ``changes``, in one UPDATE;
    the ticket's clocks row as it is after it (ref and subject in it), None if not ours."""
    if not changes:
        found = _TOUCH_TICKET.rows(conn, {"w_tenant": tenant, "w_id": ticket_id, "ts": now})
        return clocks.clock_row(found[0]) if found else None
    row = conn.execute(
        update(tickets)
        .where(tickets.c.tenant == tenant, tickets.c.id == ticket_id)
        .values(updated_at=now, **changes)
        .returning(*clocks.CLOCK_COLUMNS)
    ).first()
    return clocks.clock_row(row._mapping) if row is not None else None


def insert_message(conn: Connection, tenant: str, now: datetime, **values: Any) -> int:
    row = {"tenant": tenant, "created_at": now, **values}
    found = _INSERT_MESSAGE[tuple(row)].first(conn, row)
    assert found is not None
    return int(found[0])


def insert_attachments(
    conn: Connection, tenant: str, message_row: int, items: Sequence[dict[str, Any]]
) -> None:
    if items:
        rows = [
            {"tenant": tenant, "message_id": message_row, "position": i, **item}
            for i, item in enumerate(items)
        ]
        deferred.write(conn, _INSERT_ATTACHMENT, rows)


def record_message_id(
    conn: Connection, tenant: str, message_id: str, ticket_id: int, origin: str
) -> None:
    """Remember an id for threading; the first ticket to claim an id keeps it. Held for
    the writer's flush, where the threading lookup sees it (``repos.tickets_for_message_ids``)."""
    row = {"tenant": tenant, "message_id": message_id, "ticket_id": ticket_id, "origin": origin}
    deferred.write(conn, repos.INSERT_MESSAGE_ID, [row])
