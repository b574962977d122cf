"""A ticket's SLA clocks, kept in the same transaction as the message that moves them.

The rules (Zammad's "pending" states, without asking the agent to set one):

- First response: the first agent reply that was relayed to the client. A
  ``#note`` or a bare ``#close`` sends the client nothing, so it is no response.
- Waiting on the client: from an agent's relayed reply on an open ticket until
  the client writes again. That period is paused on the resolution clock.
- Resolution: the moment the ticket is closed. Reopened, the clock goes on
  where it stopped; the time it was closed does not count (a pause).

Timestamps are stored in UTC; ``sla_pauses`` is a list of ``[start, end]`` ISO
strings, the last one possibly open (``end`` null).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from store.models import sla_tenant_state, tickets

__all__ = [
    "CLOCKS",
    "CLOCK_COLUMNS",
    "SLA_SINCE",
    "TICKET_HEAD",
    "SlaState",
    "aware",
    "clock_row",
    "on_message",
    "open_tickets",
    "pauses_of",
    "set_digest_sent",
    "set_notified",
    "sla_states",
    "sync_sla_states",
    "ticket_clocks",
    "watched",
]

# What names a ticket in a list, and its SLA clocks: the clocks here, the monthly
# report (store/reports.py) and the desk's lists (store/desk.py) read the same columns.
TICKET_HEAD = (
    tickets.c.id,
    tickets.c.ref,
    tickets.c.subject,
    tickets.c.status,
    tickets.c.queue,
    tickets.c.priority,
    tickets.c.assignee,
)
CLOCKS = (
    tickets.c.created_at,
    tickets.c.first_response_at,
    tickets.c.first_response_by,
    tickets.c.resolved_at,
    tickets.c.sla_pauses,
)
# When SLA began for the ticket's tenant (NULL: not under SLA, or not yet recorded):
# a row that carries it can say by itself whether its clocks count (``watched``).
SLA_SINCE = (
    select(sla_tenant_state.c.since)
    .where(sla_tenant_state.c.tenant == tickets.c.tenant)
    .scalar_subquery()
    .label("sla_since")
)
# What ``on_message`` reads (``clock_row``); a follow-up's UPDATE returns it (store/ingest.py).
CLOCK_COLUMNS = (*TICKET_HEAD, *CLOCKS, tickets.c.sla_notified)
# Built once: every client's and agent's message reads its ticket's clocks (and
# moving them needs no ``sla_since``: that costs the hot path no subquery).
_TICKET_CLOCKS = select(*CLOCK_COLUMNS).where(
    tickets.c.tenant == bindparam("tenant"), tickets.c.id == bindparam("id")
)
_SHOWN_CLOCKS = select(*CLOCK_COLUMNS, SLA_SINCE).where(
    tickets.c.tenant == bindparam("tenant"), tickets.c.id == bindparam("id")
)


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def pauses_of(raw: Sequence[Sequence[str | None]] | None) -> list[tuple[datetime, datetime | None]]:
    out: list[tuple[datetime, datetime | None]] = []
    for start, end in raw or []:
        if start is None:
            continue
        out.append(
            (
                datetime.fromisoformat(start).astimezone(UTC),
                datetime.fromisoformat(end).astimezone(UTC) if end else None,
            )
        )
    return out


def _raw(pauses: list[tuple[datetime, datetime | None]]) -> list[list[str | None]]:
    return [[a.isoformat(), b.isoformat() if b else None] for a, b in pauses]


def watched(ticket: Mapping[str, Any]) -> bool:
    """Whether a ticket's SLA clocks count: it was opened since SLA began for its tenant
    (a row read with ``SLA_SINCE``). The SLA watch alerts on no other ticket (it reads
    ``open_tickets`` with ``since``), so the desk, the CLI and ``gateway status`` show
    clocks by this same rule: a backlog from before SLA is shown without any."""
    since = ticket.get("sla_since")
    return since is not None and ticket["created_at"] >= since


def ticket_clocks(
    conn: Connection, tenant: str, ticket_id: int, *, shown: bool = True
) -> dict[str, Any] | None:
    """One ticket's clocks; ``shown``: with ``sla_since``, for ``watched``."""
    query = _SHOWN_CLOCKS if shown else _TICKET_CLOCKS
    row = conn.execute(query, {"tenant": tenant, "id": ticket_id}).first()
    return clock_row(row._mapping) if row is not None else None


def open_tickets(
    conn: Connection, tenant: str, since: datetime | None = None
) -> list[dict[str, Any]]:
    """Tickets whose clocks may still run: open and pending ones (closed clocks have
    stopped; a pending one waits on the client, paused), and with ``since`` only those
    opened from then on (SLA came later than the others)."""
    query = select(*CLOCK_COLUMNS, SLA_SINCE).where(
        tickets.c.tenant == tenant, tickets.c.status.in_(("open", "pending"))
    )
    if since is not None:
        query = query.where(tickets.c.created_at >= since)
    rows = conn.execute(query.order_by(tickets.c.id))
    return [clock_row(r._mapping) for r in rows]


def clock_row(m: Mapping[str, Any]) -> dict[str, Any]:
    """A row read with ``CLOCKS`` as ``routing.sla.assess`` takes it: aware datetimes
    (SQLite's are naive) and ``pauses`` parsed; the other columns as read."""
    d = dict(m)
    for key in ("created_at", "updated_at", "first_response_at", "resolved_at", "sla_since"):
        if key in d:
            d[key] = aware(d[key])
    d["pauses"] = pauses_of(d.pop("sla_pauses"))
    if "sla_notified" in d:
        d["sla_notified"] = list(d["sla_notified"] or [])
    return d


def on_message(
    conn: Connection,
    tenant: str,
    ticket_id: int,
    *,
    role: str,
    answered: bool,
    sender: str,
    now: datetime,
    created: bool = False,
    row: dict[str, Any] | None = None,
) -> None:
    """Move the clocks for a message just stored (after the agent's commands ran).

    ``answered``: an agent's reply was relayed to the client in this transaction.
    A client's new ticket starts with every clock at rest, so it costs no statement;
    otherwise the row is written only when a clock moved. ``row``: the ticket's clocks
    as they are now (``clock_row``), when the caller has them (a client's follow-up:
    its ticket's UPDATE returned them, and nothing since moved them); else read here.
    """
    if created and role == "client":
        return
    t = row if row is not None else ticket_clocks(conn, tenant, ticket_id, shown=False)
    if t is None:
        return
    now = now.astimezone(UTC)
    pauses = t["pauses"]
    before = (_raw(pauses), list(t["sla_notified"]))
    waiting = bool(pauses) and pauses[-1][1] is None
    values: dict[str, Any] = {}
    notified = t["sla_notified"]
    if role == "agent" and answered:
        if t["first_response_at"] is None:
            values.update(first_response_at=now, first_response_by=sender)
        if t["status"] in ("open", "pending") and not waiting:
            pauses.append((now, None))
            waiting = True
    elif role == "client" and waiting:
        pauses[-1] = (pauses[-1][0], now)
        waiting = False
    if t["status"] == "closed" and t["resolved_at"] is None:
        values["resolved_at"] = now
        if waiting:
            pauses[-1] = (pauses[-1][0], now)
    elif t["status"] == "open" and t["resolved_at"] is not None:
        # Reopened: the closed time is a pause, and its resolution warnings may come again.
        pauses.append((t["resolved_at"], now))
        values["resolved_at"] = None
        notified = [n for n in notified if not n.startswith("resolution:")]
    if not values and (_raw(pauses), notified) == before:
        return
    values["sla_pauses"] = _raw(pauses)
    values["sla_notified"] = notified
    conn.execute(
        update(tickets)
        .where(tickets.c.tenant == tenant, tickets.c.id == ticket_id)
        .values(**values)
    )


def set_notified(conn: Connection, tenant: str, ticket_id: int, notified: list[str]) -> None:
    conn.execute(
        update(tickets)
        .where(tickets.c.tenant == tenant, tickets.c.id == ticket_id)
        .values(sla_notified=notified)
    )


@dataclass(frozen=True, slots=True)
class SlaState:
    """When SLA began for a tenant, and when its agents last got a digest of alerts."""

    since: datetime
    last_digest_at: datetime | None


def sla_states(conn: Connection) -> dict[str, SlaState]:
    """Every tenant's row: a handful, read in one statement each round."""
    rows = conn.execute(select(sla_tenant_state))
    return {
        r.tenant: SlaState(aware(r.since), aware(r.last_digest_at))  # type: ignore[arg-type]
        for r in rows
    }


def sync_sla_states(
    conn: Connection, configured: set[str], states: dict[str, SlaState], now: datetime
) -> None:
    """A tenant newly under SLA starts now; one no longer under it loses its row, so
    turning SLA on again later starts afresh instead of counting the time it was off."""
    for tenant in sorted(configured - states.keys()):
        # Another instance on the same database may record it first: theirs stands.
        savepoint = conn.begin_nested()
        try:
            conn.execute(insert(sla_tenant_state).values(tenant=tenant, since=now.astimezone(UTC)))
        except IntegrityError:
            savepoint.rollback()
        else:
            savepoint.commit()
    gone = states.keys() - configured
    if gone:
        conn.execute(delete(sla_tenant_state).where(sla_tenant_state.c.tenant.in_(gone)))


def set_digest_sent(conn: Connection, tenant: str, now: datetime) -> None:
    conn.execute(
        update(sla_tenant_state)
        .where(sla_tenant_state.c.tenant == tenant)
        .values(last_digest_at=now.astimezone(UTC))
    )
