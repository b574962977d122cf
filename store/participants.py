"""Who takes part in a ticket: the rows, stored or held for the writer's flush.

Why a module: an inbound message's participants are held (store/deferred.py) and
written with the batch's other held rows, one ``executemany`` for the batch instead
of one statement a message; every read of them in the commit stages (the sender's
check, a relay's recipients, an agent's ``#cc``) must then see the held rows too,
so the statement, its reads and its changes live together here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, select
from sqlalchemy.engine import Connection

from store import deferred
from store.db import insert_ignore
from store.direct import Direct
from store.models import participants

__all__ = ["INSERT", "add", "held", "hold", "is_participant", "of_ticket", "remove"]

INSERT = Direct(
    lambda conn: insert_ignore(conn, participants),
    ("tenant", "ticket_id", "address", "name", "role", "created_at"),
)
_IS_PARTICIPANT = Direct(
    select(participants.c.id).where(
        participants.c.tenant == bindparam("tenant"),
        participants.c.ticket_id == bindparam("id"),
        participants.c.address == bindparam("address"),
    )
)


def held(conn: Connection, tenant: str, ticket_id: int, address: str | None = None) -> list[Any]:
    """The ticket's participant rows held for the flush (of ``address`` alone if given)."""
    return [
        r
        for r in deferred.pending(conn, INSERT)
        if r["tenant"] == tenant
        and r["ticket_id"] == ticket_id
        and (address is None or r["address"] == address)
    ]


def _row(
    tenant: str, ticket_id: int, address: str, name: str, role: str, now: datetime
) -> dict[str, Any]:
    return {"tenant": tenant, "ticket_id": ticket_id, "address": address, "name": name,
            "role": role, "created_at": now}  # fmt: skip


def hold(
    conn: Connection,
    tenant: str,
    ticket_id: int,
    people: Sequence[tuple[str, str, str]],
    now: datetime,
) -> None:
    """(address, name, role) of an inbound message, written now or (while held) at the
    flush; an address already on the ticket stays as it was (a unique index decides)."""
    rows = [_row(tenant, ticket_id, a, n, r, now) for a, n, r in people if a]
    deferred.write(conn, INSERT, rows)


def is_participant(conn: Connection, tenant: str, ticket_id: int, address: str) -> bool:
    if held(conn, tenant, ticket_id, address):
        return True
    found = _IS_PARTICIPANT.first(conn, {"tenant": tenant, "id": ticket_id, "address": address})
    return found is not None


def of_ticket(conn: Connection, tenant: str, ticket_id: int) -> list[dict[str, Any]]:
    """(address, name, role) of each participant, in the order they joined."""
    rows = conn.execute(
        select(participants.c.address, participants.c.name, participants.c.role)
        .where(participants.c.tenant == tenant, participants.c.ticket_id == ticket_id)
        .order_by(participants.c.id)
    )
    out = [dict(r._mapping) for r in rows]
    seen = {p["address"] for p in out}
    for r in held(conn, tenant, ticket_id):
        if r["address"] not in seen:
            seen.add(r["address"])
            out.append({"address": r["address"], "name": r["name"], "role": r["role"]})
    return out


def add(
    conn: Connection, tenant: str, ticket_id: int, address: str, name: str, role: str,
    now: datetime,
) -> bool:  # fmt: skip
    """True if the address was new on the ticket: written at once (an agent's ``#cc add``
    says whether it changed anything)."""
    if not address or held(conn, tenant, ticket_id, address):
        return False
    return bool(INSERT.rowcount(conn, _row(tenant, ticket_id, address, name, role, now)))


def remove(conn: Connection, tenant: str, ticket_id: int, address: str) -> bool:
    """True if the address took part in the ticket and no longer does (held or stored)."""

    def mine(r: Mapping[str, Any]) -> bool:
        return (r["tenant"], r["ticket_id"], r["address"]) == (tenant, ticket_id, address)

    taken = deferred.cancel(conn, INSERT, mine)
    res = conn.execute(
        delete(participants).where(
            participants.c.tenant == tenant,
            participants.c.ticket_id == ticket_id,
            participants.c.address == address,
        )
    )
    return bool(taken or res.rowcount)
