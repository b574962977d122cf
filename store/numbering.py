"""A tenant's next ticket number: a counter row on SQLite, a sequence on PostgreSQL.

SQLite has one writer, so the counter row (``ticket_counters``) costs nothing
to hold until the commit, and numbers have no gaps. On PostgreSQL several
instances commit concurrently (docs/scaling.md), and that row lock made them
commit one tenant's batches one at a time (figure 9 of BENCHMARKS.md), and
needed a batch-wide locking order against deadlocks. ``nextval`` takes no lock
that lasts: a batch rolled back burns the numbers it drew (a gap, as RT's and
Zammad's ids have), and the unique index on (tenant, number) stays the guard.

A tenant's sequence is made the first time one of its tickets is numbered, on a
connection of its own that commits at once (so a batch rolled back afterwards
does not take it away, and the batch holds no lock on the catalogue), under an
advisory lock (two instances' ``CREATE SEQUENCE IF NOT EXISTS`` may otherwise
both try to make it and one fail), starting after the tenant's highest number
in ``tickets`` and ``ticket_counters`` (a database numbered by the counter
before). Its name is derived from a hash of the tenant id, so any id makes a
valid, short identifier without quoting; :data:`RESYNC` derives it the same way
in SQL.
"""

from __future__ import annotations

import hashlib
import weakref

from sqlalchemy import bindparam, func, insert, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.pool import Pool

from store.direct import Direct
from store.models import ticket_counters, tickets

__all__ = ["RESYNC", "next_number", "sequence", "sequence_name"]

_PREFIX = "ticket_number_"
_HEX = 20  # 80 bits of sha256: no two tenants of one database share a name
_LOCK_KEY = 0x7469636B  # pg_advisory_xact_lock key taken while a sequence is made
_NEXT_COUNTED = Direct(
    update(ticket_counters)
    .where(ticket_counters.c.tenant == bindparam("w_tenant"))
    .values(last_number=ticket_counters.c.last_number + 1)
    .returning(ticket_counters.c.last_number)
)
_TOP = select(
    func.greatest(
        select(func.coalesce(func.max(tickets.c.number), 0))
        .where(tickets.c.tenant == bindparam("tenant"))
        .scalar_subquery(),
        select(func.coalesce(func.max(ticket_counters.c.last_number), 0))
        .where(ticket_counters.c.tenant == bindparam("tenant"))
        .scalar_subquery(),
    )
)
# Tenants whose sequence this process knows to exist, per connection pool (a pool is
# one database; a test's new database has a new engine).
_MADE: weakref.WeakKeyDictionary[Pool, set[str]] = weakref.WeakKeyDictionary()

# After a restore (gateway/ops/restore.py): pg_dump's sequences already continue
# after their dump's numbers, but a sequence the target kept from before, or a dump
# numbered by the counter, must not hand out a number that is taken.
RESYNC = f"""
DO $$
DECLARE
    r record;
    seq text;
    upcoming bigint;
BEGIN
    FOR r IN SELECT tenant, max(number) AS top FROM tickets GROUP BY tenant LOOP
        seq := '{_PREFIX}' || left(encode(sha256(convert_to(r.tenant, 'UTF8')), 'hex'), {_HEX});
        SELECT coalesce(s.last_value + 1, s.start_value) INTO upcoming
            FROM pg_sequences s
            WHERE s.schemaname = current_schema() AND s.sequencename = seq;
        IF upcoming IS NOT NULL AND upcoming <= r.top THEN
            PERFORM setval(seq, r.top);
        END IF;
    END LOOP;
END $$
"""


def sequence_name(tenant: str) -> str:
    return _PREFIX + hashlib.sha256(tenant.encode()).hexdigest()[:_HEX]


def sequence(conn: Connection, tenant: str) -> str | None:
    """The tenant's sequence on PostgreSQL, made the first time it is asked for (a new
    ticket's INSERT draws from it: store/repos.py); None on SQLite, which counts."""
    if conn.dialect.name != "postgresql":
        return None
    seq = sequence_name(tenant)
    made = _MADE.setdefault(conn.engine.pool, set())
    if tenant not in made:
        _make_sequence(conn, tenant, seq)
        made.add(tenant)
    return seq


def next_number(conn: Connection, tenant: str) -> int:
    """Draw the tenant's next ticket number from its counter row, inside ``conn``'s
    transaction: SQLite's way (on PostgreSQL a new ticket's INSERT draws it from
    ``sequence``, store/repos.py)."""
    counted = _NEXT_COUNTED.first(conn, {"w_tenant": tenant})
    if counted is not None:
        return int(counted[0])
    start = conn.execute(
        select(func.coalesce(func.max(tickets.c.number), 0)).where(tickets.c.tenant == tenant)
    )
    number = int(start.scalar_one()) + 1
    conn.execute(insert(ticket_counters).values(tenant=tenant, last_number=number))
    return number


def _make_sequence(conn: Connection, tenant: str, seq: str) -> None:
    with conn.engine.connect() as own, own.begin():
        own.execute(select(func.pg_advisory_xact_lock(_LOCK_KEY)))
        if own.execute(select(func.to_regclass(seq))).scalar() is not None:
            return
        top = int(own.execute(_TOP, {"tenant": tenant}).scalar_one())
        # seq: hex digits and a fixed prefix; top: an int. Neither needs quoting.
        own.execute(text(f"CREATE SEQUENCE IF NOT EXISTS {seq} START WITH {top + 1}"))
