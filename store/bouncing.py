"""Addresses our mail bounces from: marked by a DSN about our own mail, cleared when the
address writes to us again (outbound/reactions.py), looked at before any mail is queued.

Apart from ``store/repos.py`` for its size; the same rules: the tenant first, and every
statement filters on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    and_,
    bindparam,
    delete,
    exists,
    func,
    literal,
    literal_column,
    null,
    select,
    union_all,
)
from sqlalchemy.engine import Connection
from sqlalchemy.sql import CompoundSelect, Select

from store import acks, deferred, repos
from store.db import insert_ignore
from store.direct import Direct, Family
from store.models import bouncing, message_ids, messages
from store.ticket_life import state_of

__all__ = [
    "agents_bouncing",
    "bouncing_among",
    "clear_bouncing",
    "first_look",
    "mark_bouncing",
]

_TENANT = bindparam("tenant")
# Straight to the driver (store/direct.py): every message asks. The sender and a
# tenant's agents: a handful of sizes, each its own fixed statement.
_BOUNCING_AMONG: Family[int] = Family(
    lambda size: Direct(
        select(bouncing.c.address).where(
            bouncing.c.tenant == _TENANT, repos.among_ids(size, bouncing.c.address, "a")
        )
    )
)
_CLEAR_BOUNCING = Direct(
    delete(bouncing).where(bouncing.c.tenant == _TENANT, bouncing.c.address == bindparam("address"))
)


# A message's first read: the dedupe key's stored message (its raw sha256), whether its
# sender bounces and the acknowledgements sent to the sender (store/acks.py), in one
# statement (each was a read of its own). Every subquery filters on the tenant. With the
# Message-IDs its In-Reply-To and References name (routing/threader.py), the tickets
# they thread to come with it too, a row each (one row of NULLs when none is known),
# by a statement for each size of ``repos.ids_asked``: that was a read of its own for
# nearly every reply. On PostgreSQL also the state of the ticket the reply most likely
# continues (the one its first Message-ID names, In-Reply-To's, else the newest of those
# known), in rows of their own (``ticket_life.state_of``): the reply's decision needs
# it, and it was a third round trip. The threader still picks the ticket; a guess that
# is not it costs the read it saved (``ticket_life.sender_state``). Not on SQLite,
# where a statement is a call, not a round trip: the compound statement cost more
# CPU than the read it saves (``bench.statements``, bench/results/notes/rt25.md).
def _nulls(n: int, name: str) -> list[Any]:
    return [null().label(f"{name}{i}") for i in range(n)]


def _first_look(conn: Connection, size: int = 0) -> CompoundSelect | Select[Any]:
    looked = [
        select(messages.c.raw_sha256)
        .where(messages.c.tenant == _TENANT, messages.c.message_key == bindparam("key"))
        .scalar_subquery()
        .label("raw_sha256"),
        exists()
        .where(bouncing.c.tenant == _TENANT, bouncing.c.address == bindparam("sender"))
        .label("bouncing"),
        acks.count_stored(conn).scalar_subquery().label("acks"),
    ]
    if not size:
        return select(*looked)
    one = select(literal(1).label("one")).subquery("one")
    known = one.outerjoin(message_ids, and_(message_ids.c.tenant == _TENANT, repos.among_ids(size)))
    ids = select(literal_column("0"), *looked, message_ids.c.message_id, message_ids.c.ticket_id)
    if conn.dialect.name != "postgresql":
        return ids.select_from(known)
    first = message_ids.c.message_id == bindparam("m0")
    guess = func.coalesce(
        select(message_ids.c.ticket_id)
        .where(message_ids.c.tenant == _TENANT, first)
        .scalar_subquery(),
        select(func.max(message_ids.c.ticket_id))
        .where(message_ids.c.tenant == _TENANT, repos.among_ids(size))
        .scalar_subquery(),
    )
    state = state_of(guess).subquery("state").c
    return union_all(
        ids.add_columns(*_nulls(len(state) - 1, "state")).select_from(known),
        select(literal_column("1"), *_nulls(len(looked) + 1, "look"), *state),
    )


# By the size of ``repos.ids_asked``; 0: no Message-IDs asked.
_FIRST_LOOK: Family[int] = Family(lambda size: Direct(lambda conn: _first_look(conn, size)))


def first_look(
    conn: Connection,
    tenant: str,
    key: str,
    sender: str,
    ack_since: datetime,
    ids: Sequence[str] = (),
) -> tuple[str | None, bool, int, dict[str, int] | None, tuple[int, list[Any]] | None]:
    """(raw sha256 stored under the dedupe ``key`` or None, ``sender`` bounces, the
    acknowledgements to ``sender`` stored since ``ack_since``: ``acks.acks_held`` adds
    those held for the batch's flush, the stored tickets of ``ids`` or None when not
    asked: none, or more than ``repos.IDS_AT_ONCE``, and the guessed ticket's id and
    ``ticket_life.state_of``'s rows for ``sender``, or None: none known, or SQLite)."""
    values = {"tenant": tenant, "key": key, "sender": sender.lower()}
    values |= acks.parameters(sender, ack_since)
    if not ids or len(ids) > repos.IDS_AT_ONCE:
        row = _FIRST_LOOK[0].first(conn, values)
        assert row is not None  # no FROM: always one row
        return row[0], bool(row[1]), int(row[2]), None, None
    size, asked = repos.ids_asked(ids)
    rows = _FIRST_LOOK[size].all(conn, values | asked | {"address": sender})
    looks = [r for r in rows if not r[0]]
    first = looks[0]  # the outer join keeps its one row
    known = {r[4]: r[5] for r in looks if r[4] is not None}
    state = [r[5:] for r in rows if r[0]]
    guessed = (state[0][0], state) if state else None
    return first[1], bool(first[2]), int(first[3]), known, guessed


def agents_bouncing(conn: Connection, tenant: str, addresses: Sequence[str]) -> set[str]:
    """``bouncing_among`` for a tenant's agents, asked once in a batch the writer holds
    (store/deferred.py ``kept``): they are the same for each of its messages."""
    kept = deferred.kept(conn)
    if kept is None:
        return bouncing_among(conn, tenant, addresses)
    key = ("agents_bouncing", tenant, tuple(addresses))
    found = kept.get(key)
    if found is None:
        found = kept[key] = frozenset(bouncing_among(conn, tenant, addresses))
    return set(found)


def _changed(conn: Connection) -> None:
    """A mark made or cleared: the agents' marks kept for the batch are read again (also
    after a savepoint that undid it)."""
    kept = deferred.kept(conn)
    if kept:
        kept.clear()


def bouncing_among(conn: Connection, tenant: str, addresses: Sequence[str]) -> set[str]:
    if not addresses:
        return set()
    size, params = repos.ids_asked([a.lower() for a in addresses], "a")
    return {r[0] for r in _BOUNCING_AMONG[size].all(conn, {"tenant": tenant, **params})}


def mark_bouncing(
    conn: Connection,
    tenant: str,
    address: str,
    status: str,
    reason: str,
    *,
    now: datetime | None = None,
) -> bool:
    _changed(conn)
    res = conn.execute(
        insert_ignore(conn, bouncing),
        {
            "tenant": tenant,
            "address": address.lower(),
            "status": status,
            "reason": reason[:1000],
            "since": now or repos.now(),
        },
    )
    return bool(res.rowcount)


def clear_bouncing(conn: Connection, tenant: str, address: str) -> bool:
    _changed(conn)
    return bool(_CLEAR_BOUNCING.rowcount(conn, {"tenant": tenant, "address": address.lower()}))
