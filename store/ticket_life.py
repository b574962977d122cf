"""The reads a ticket's life needs: its status before a message moves it, the stored
message a second delivery is a copy of, and the pending tickets due to close.

Apart from ``store/repos.py`` because they belong together: a client's reply reopens
a closed or pending ticket (gateway/intake/decide.py), the same mail delivered twice
(To and Cc of one tenant, forwarded in two transactions) is one message, and a
pending ticket nobody answered closes itself (gateway/ops/jobs.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, exists, select, true
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ColumnElement, Select

from store import participants as people
from store.direct import Direct
from store.models import messages, participants, tickets
from store.repos import THREAD_IDS

__all__ = [
    "STATUSES",
    "SenderState",
    "pending_due",
    "sender_state",
    "state_of",
    "stored_copy",
    "thread_after",
    "ticket_state",
    "ticket_status",
]

# open: an agent is to act; pending: waiting on the client (a reply opens it again);
# closed: done (a client's reply reopens it).
STATUSES = ("open", "pending", "closed")


# Built once: read for every follow-up (a statement built per call costs its cache key).
# Straight to the driver (store/direct.py). The client's language comes with it: the
# reply's reactions answer in it (outbound/language.py), with no second read.
_STATE = Direct(
    select(tickets.c.status, tickets.c.client_language).where(
        tickets.c.tenant == bindparam("tenant"), tickets.c.id == bindparam("id")
    )
)


@dataclass(frozen=True, slots=True)
class SenderState:
    """A ticket as a follow-up finds it, read before the follow-up is written."""

    status: str
    language: str | None  # the client's, if known
    taking_part: bool  # the sender takes part in it
    thread: tuple[str, ...]  # its Message-IDs, oldest first (the newest THREAD_IDS)


def thread_after(thread: tuple[str, ...], message_id: str | None) -> tuple[str, ...]:
    """A ticket's Message-IDs (``SenderState.thread``) once a message with ``message_id``
    is stored in it: what ``repos.thread_ids`` would read then, with no read after the
    message's INSERT (one round trip a follow-up on PostgreSQL)."""
    if not message_id:
        return thread
    return (*thread, message_id)[-THREAD_IDS:]


# A follow-up's one read: the state above, whether its sender takes part in the ticket,
# and the ticket's newest Message-IDs (one row each; one row of NULL when it has none).
# Each was a statement of its own on the hot path of every reply. ``ticket`` names the
# ticket: a bound id, or the first look's guess (store/bouncing.py), which reads this
# with the reply's dedupe key. The rows: (ticket id, status, language, participant,
# recent message's row id, its Message-ID), in no order (``sender_state`` sorts them).
def state_of(ticket: ColumnElement[Any]) -> Select[Any]:
    recent = (
        select(messages.c.id, messages.c.message_id)
        .where(
            messages.c.tenant == bindparam("tenant"),
            messages.c.ticket_id == ticket,
            messages.c.message_id.is_not(None),
        )
        .order_by(messages.c.id.desc())
        .limit(THREAD_IDS)
        .subquery("recent")
    )
    return (
        select(
            tickets.c.id,
            tickets.c.status,
            tickets.c.client_language,
            exists()
            .where(
                participants.c.tenant == tickets.c.tenant,
                participants.c.ticket_id == tickets.c.id,
                participants.c.address == bindparam("address"),
            )
            .label("participant"),
            recent.c.id.label("recent_id"),
            recent.c.message_id.label("recent"),
        )
        .select_from(tickets.outerjoin(recent, true()))
        .where(tickets.c.tenant == bindparam("tenant"), tickets.c.id == ticket)
    )


_SENDER_STATE = Direct(state_of(bindparam("id")))


def sender_state(
    conn: Connection,
    tenant: str,
    ticket_id: int,
    sender: str,
    read: tuple[int, Sequence[Any]] | None = None,
) -> SenderState | None:
    """The ticket as ``sender``'s follow-up finds it, participants held for the writer's
    flush included; None if it is not the tenant's. ``read``: a ticket's id and
    ``state_of``'s rows for it, read already (the first look's guess): taken when it
    is this ticket, so a reply's usual state costs no statement of its own (a round trip
    on PostgreSQL)."""
    if read is not None and read[0] == ticket_id:
        rows = read[1]
    else:
        rows = _SENDER_STATE.all(conn, {"tenant": tenant, "id": ticket_id, "address": sender})
    if not rows:
        return None
    _, status, language, participant, _, _ = rows[0]
    taking_part = bool(participant) or bool(people.held(conn, tenant, ticket_id, sender))
    recent = sorted((r[4], r[5]) for r in rows if r[5] is not None)
    return SenderState(status, language, taking_part, tuple(mid for _, mid in recent))


def ticket_status(conn: Connection, tenant: str, ticket_id: int) -> str | None:
    state = ticket_state(conn, tenant, ticket_id)
    return state[0] if state is not None else None


def ticket_state(conn: Connection, tenant: str, ticket_id: int) -> tuple[str, str | None] | None:
    """(status, client language) of the ticket; None if it is not the tenant's."""
    row = _STATE.first(conn, {"tenant": tenant, "id": ticket_id})
    return (row[0], row[1]) if row is not None else None


def stored_copy(conn: Connection, tenant: str, key: str) -> dict[str, Any] | None:
    """The message stored under ``key``: what tells a second delivery of it (same
    sender, subject and text, other transport headers) from a reused Message-ID."""
    row = conn.execute(
        select(
            messages.c.id,
            messages.c.ticket_id,
            messages.c.from_addr,
            messages.c.subject,
            messages.c.text,
            messages.c.raw_sha256,
        ).where(messages.c.tenant == tenant, messages.c.message_key == key)
    ).first()
    return dict(row._mapping) if row is not None else None


def pending_due(conn: Connection, tenant: str, before: datetime) -> list[dict[str, Any]]:
    """Pending tickets untouched since ``before``: nobody wrote since it was set pending."""
    rows = conn.execute(
        select(tickets.c.id, tickets.c.ref, tickets.c.subject, tickets.c.updated_at)
        .where(
            tickets.c.tenant == tenant,
            tickets.c.status == "pending",
            tickets.c.updated_at < before,
        )
        .order_by(tickets.c.id)
    )
    return [dict(r._mapping) for r in rows]
