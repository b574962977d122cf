"""Imported history keeps its own dates (``gateway import``, gateway/ops/importer.py).

Imported mail goes through the live pipeline, which dates a new ticket by the moment
it is stored and leaves it open: a year of history would be a year of open tickets,
all opened today, and an SLA would count them all. After an import, each ticket that
holds imported mail only is dated by its messages' own ``Date`` headers (the first
opens it, the last is its last update) and closed unless that last message is recent.
A ticket that also has live mail is the live side's and is left alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection

from store import repos
from store.clocks import aware
from store.models import messages, tickets

__all__ = ["Settled", "settle_imported"]

_CHUNK = 500  # ids per IN list: well under every engine's limit on bound parameters


@dataclass(frozen=True, slots=True)
class Settled:
    dated: int = 0  # tickets given their own dates
    closed: int = 0  # of those, closed: their last message is older than open_since


def settle_imported(
    conn: Connection, tenant: str, refs: Iterable[str], open_since: datetime, now: datetime
) -> Settled:
    """Date the tickets an import touched (by ref) by their mail and close the quiet
    ones; returns the counts. A rerun settles again what it touches, so a reply that
    came only with the rerun moves its ticket's dates too.

    A ``Date`` in the future (a sender's clock was wrong) counts as ``now``; a message
    without a readable one counts by the moment it was stored.
    """
    wanted = sorted(set(refs))
    ids: list[int] = []
    for i in range(0, len(wanted), _CHUNK):
        ids += conn.execute(
            select(tickets.c.id).where(
                tickets.c.tenant == tenant, tickets.c.ref.in_(wanted[i : i + _CHUNK])
            )
        ).scalars()
    spans: dict[int, list[datetime]] = {}
    live: set[int] = set()
    for i in range(0, len(ids), _CHUNK):
        rows = conn.execute(
            select(messages.c.ticket_id, messages.c.date, messages.c.created_at, messages.c.source)
            .where(messages.c.tenant == tenant, messages.c.ticket_id.in_(ids[i : i + _CHUNK]))
        )
        for ticket_id, date, stored, source in rows:
            if source != "import":
                live.add(ticket_id)
                continue
            spans.setdefault(ticket_id, []).append(min(_when(date, stored), now))
    stay: list[dict[str, object]] = []
    close: list[dict[str, object]] = []
    for ticket_id, dates in spans.items():
        if ticket_id in live:
            continue
        first, last = min(dates), max(dates)
        row = {"w_id": ticket_id, "first": first, "last": last}
        (close if last < open_since else stay).append(row)
    where = (tickets.c.tenant == tenant, tickets.c.id == bindparam("w_id"))
    dates = {"created_at": bindparam("first"), "updated_at": bindparam("last")}
    if stay:  # one statement for all (executemany), not one round trip per ticket
        conn.execute(update(tickets).where(*where).values(**dates), stay)
    if close:
        conn.execute(
            update(tickets)
            .where(*where)
            .values(**dates, status="closed", resolved_at=bindparam("last")),
            close,
        )
    dated, closed = len(stay) + len(close), len(close)
    repos.add_audit(
        conn,
        tenant,
        "import.settled",
        actor="gateway",
        detail={"dated": dated, "closed": closed, "open_since": open_since.isoformat()},
        now=now,
    )
    return Settled(dated, closed)


def _when(date: str | None, stored: datetime) -> datetime:
    if date:
        try:
            parsed = datetime.fromisoformat(date)
        except ValueError:
            parsed = None
        if parsed is not None:
            return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return aware(stored)  # type: ignore[return-value]
