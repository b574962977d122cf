"""Leases: one gateway instance at a time does a thing, and a dead one's turn passes on.

Several instances share one database (docs/scaling.md). An IMAP mailbox must
be polled by one of them at a time, and the periodic jobs (retention, SLA
watch, reports, backups) run once, not once per instance. Each such duty has
a row here; its holder renews it well before ``expires_at``, and anyone may
take it once that moment has passed, so a SIGKILLed holder's duty moves on
after at most one lease. A row, not a PostgreSQL advisory lock: it works the
same on SQLite, survives a pooled connection being recycled, and shows who
holds what (``gateway status``, the tests).

Taking and renewing is one statement, atomic on both engines:
``INSERT ... ON CONFLICT (name) DO UPDATE ... WHERE holder = me OR expired
RETURNING holder``: no row back means someone else holds it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.engine import Connection

from store.models import leases

__all__ = ["acquire", "holder_of", "holders", "release"]


def _insert(conn: Connection) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(leases)


def acquire(conn: Connection, name: str, holder: str, now: datetime, ttl: float) -> bool:
    """Take ``name`` for ``holder`` until ``now + ttl``, or renew it; False if another
    instance holds it and its lease has not run out."""
    stmt = _insert(conn).values(
        name=name, holder=holder, expires_at=now + timedelta(seconds=ttl), acquired_at=now
    )
    excluded = stmt.excluded
    stmt = stmt.on_conflict_do_update(
        index_elements=[leases.c.name],
        set_={
            "holder": excluded.holder,
            "expires_at": excluded.expires_at,
            # a renewal keeps the moment it was first taken; a takeover starts anew
            "acquired_at": _keep_if_same_holder(excluded),
        },
        where=(leases.c.holder == excluded.holder) | (leases.c.expires_at < excluded.acquired_at),
    ).returning(leases.c.holder)
    return conn.execute(stmt).first() is not None


def _keep_if_same_holder(excluded: Any) -> Any:
    from sqlalchemy import case

    return case(
        (leases.c.holder == excluded.holder, leases.c.acquired_at), else_=excluded.acquired_at
    )


def release(conn: Connection, name: str, holder: str) -> None:
    """Give ``name`` up at a clean stop, so another instance need not wait for it to run out."""
    conn.execute(delete(leases).where(leases.c.name == name, leases.c.holder == holder))


def holder_of(conn: Connection, name: str) -> tuple[str, datetime] | None:
    """Who holds ``name`` and until when (expired or not), or None if nobody has it."""
    row = conn.execute(
        select(leases.c.holder, leases.c.expires_at).where(leases.c.name == name)
    ).first()
    return None if row is None else (row.holder, row.expires_at)


def holders(conn: Connection) -> dict[str, tuple[str, datetime]]:
    """Every lease: name -> (holder, expires_at), for status and tests."""
    return {
        r.name: (r.holder, r.expires_at)
        for r in conn.execute(select(leases.c.name, leases.c.holder, leases.c.expires_at))
    }
