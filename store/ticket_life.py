"""The reads a ticket's life needs: its status before a message moves it, the stored
message a second delivery is a copy of, and the pending tickets due to close.

Apart from ``store/repos.py`` because they belong together: a client's reply reopens
a closed or pending ticket (gateway/intake/decide.py), the same mail delivered twice
(To and Cc of one tenant, forwarded in two transactions) is one message, and a
pending ticket nobody answered closes itself (gateway/ops/jobs.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, exists, select
from sqlalchemy.engine import Connection

from store import participants as people
from store.direct import Direct
from store.models import messages, participants, tickets

__all__ = [
    "STATUSES",
    "pending_due",
    "sender_state",
    "stored_copy",
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


# A follow-up's one read: the state above, and whether its sender takes part in the
# ticket (a second statement before, on the hot path of every reply).
_SENDER_STATE = Direct(
    select(
        tickets.c.status,
        tickets.c.client_language,
        exists()
        .where(
            participants.c.tenant == tickets.c.tenant,
            participants.c.ticket_id == tickets.c.id,
            participants.c.address == bindparam("address"),
        )
        .label("participant"),
    ).where(tickets.c.tenant == bindparam("tenant"), tickets.c.id == bindparam("id"))
)


def sender_state(
    conn: Connection, tenant: str, ticket_id: int, sender: str
) -> tuple[str, str | None, bool] | None:
    """(status, client language, sender takes part) of the ticket, participants held for
    the writer's flush included; None if it is not the tenant's."""
    row = _SENDER_STATE.first(conn, {"tenant": tenant, "id": ticket_id, "address": sender})
    if row is None:
        return None
    taking_part = bool(row[2]) or bool(people.held(conn, tenant, ticket_id, sender))
    return row[0], row[1], taking_part


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
