"""The client's language on a ticket (``tickets.client_language``): read for every mail
to the client, written when a client's mail shows a language (outbound/language.py)."""

from __future__ import annotations

from sqlalchemy import or_, select, update
from sqlalchemy.engine import Connection

from store.models import tickets

__all__ = ["set_ticket_language", "ticket_language"]


def ticket_language(conn: Connection, tenant: str, ticket_id: int) -> str | None:
    """The stored language; None for a ticket whose client never showed one."""
    return conn.execute(
        select(tickets.c.client_language).where(
            tickets.c.tenant == tenant, tickets.c.id == ticket_id
        )
    ).scalar()


def set_ticket_language(conn: Connection, tenant: str, ticket_id: int, lang: str) -> None:
    """One statement that writes only when the language changed (no read before it)."""
    conn.execute(
        update(tickets)
        .where(
            tickets.c.tenant == tenant,
            tickets.c.id == ticket_id,
            or_(tickets.c.client_language.is_(None), tickets.c.client_language != lang),
        )
        .values(client_language=lang)
    )
