"""A reaction to a stored mail that fails never fails the mail it reacts to.

The mail is ours once stored: a 4xx for our own fault would make the sender
retry, forever, a mail that would fail the same way. So each reaction
(acknowledgement, agent notice, relay, SLA clock, bounce handling) runs
guarded: undone alone, recorded where agents see it, and logged.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

import structlog
from sqlalchemy.engine import Connection

from store import faults, repos
from store.db import Savepoint

__all__ = ["guarded", "guarded_pair"]

log = structlog.get_logger("outbound.reactions")
T = TypeVar("T")


def guarded(
    conn: Connection,
    tenant: str,
    ticket_id: int | None,
    reaction: str,
    work: Callable[[], T],
    now: datetime,
    *,
    writes: bool = True,
) -> T | None:
    """Run one reaction; if it raises, undo only its own rows, record and log why.

    ``writes``: the reaction writes rows, so it runs in its own savepoint (a
    mere compose writes none and needs none). The failure is an audit event
    ``reaction.failed`` on the ticket, where agents see it (``tickets show``).
    """
    savepoint = Savepoint(conn) if writes else None
    try:
        faults.fail_reaction(reaction)
        result = work()
    except Exception as exc:
        if savepoint is not None:
            savepoint.rollback()
        error = f"{type(exc).__name__}: {exc}"[:500]
        log.warning("reaction.failed", tenant=tenant, reaction=reaction, error=error)
        repos.add_audit(
            conn,
            tenant,
            "reaction.failed",
            actor="gateway",
            ticket_id=ticket_id,
            detail={"reaction": reaction, "error": error},
            now=now,
        )
        return None
    if savepoint is not None:
        savepoint.commit()
    return result


def guarded_pair(
    conn: Connection,
    tenant: str,
    ticket_id: int | None,
    first: tuple[str, Callable[[], T]],
    then: tuple[str, Callable[[T | None], object]] | None,
    now: datetime,
) -> T | None:
    """``guarded`` of ``first``, then of ``then`` given first's result (None if it failed),
    in one savepoint while both succeed: a message's reactions and its clocks, one
    savepoint a message instead of two (on PostgreSQL each said is a round trip, figure
    9). If either raises, the pair's
    savepoint is undone and each runs again as ``guarded`` runs it, in its own: a failure
    still undoes only its own rows and is recorded under its own name, and its partner
    is kept."""
    savepoint = Savepoint(conn)
    try:
        faults.fail_reaction(first[0])
        result = first[1]()
        if then is not None:
            faults.fail_reaction(then[0])
            then[1](result)
    except Exception:
        savepoint.rollback()
        result = guarded(conn, tenant, ticket_id, first[0], first[1], now)
        if then is not None:
            guarded(conn, tenant, ticket_id, then[0], lambda: then[1](result), now)
        return result
    savepoint.commit()
    return result
