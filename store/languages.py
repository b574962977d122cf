"""The client's language on a ticket (``tickets.client_language``): read for every mail
to the client, written when a client's mail shows a language (outbound/language.py)."""

from __future__ import annotations

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.engine import Connection

from store.direct import Direct
from store.models import tickets

__all__ = ["set_ticket_language", "ticket_language"]


# Built once (each message reads or writes one): a statement built per call costs its
# cache key every time; and said straight to the driver (store/direct.py). An UPDATE may
# not name a bound value after a column (w_...).
_READ = Direct(
    select(tickets.c.client_language).where(
        tickets.c.tenant == bindparam("tenant"), tickets.c.id == bindparam("id")
    )
)
_WRITE = Direct(
    update(tickets)
    .where(
        tickets.c.tenant == bindparam("w_tenant"),
        tickets.c.id == bindparam("w_id"),
        or_(tickets.c.client_language.is_(None), tickets.c.client_language != bindparam("lang")),
    )
    .values(client_language=bindparam("lang"))
)


def ticket_language(conn: Connection, tenant: str, ticket_id: int) -> str | None:
    """The stored language; None for a ticket whose client never showed one."""
    row = _READ.first(conn, {"tenant": tenant, "id": ticket_id})
    return row[0] if row is not None else None


def set_ticket_language(conn: Connection, tenant: str, ticket_id: int, lang: str) -> None:
    """One statement that writes only when the language changed (no read before it)."""
    _WRITE.rowcount(conn, {"w_tenant": tenant, "w_id": ticket_id, "lang": lang})
