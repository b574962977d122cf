"""Rows written once per batch in one ``executemany`` each, read back from here meanwhile.

Why: the writer commits a batch of messages in one transaction (store/writer.py), and
each message adds an audit event, its outbox rows, its own and their Message-IDs, its
participants, its attachments' rows and (the database blob store) its blobs: up to
seven statements a message, each a round trip on PostgreSQL. What a later message of
the same batch reads of them it asks ``pending`` too (the outbox rate limit, the
threading lookup of Message-IDs, the participant checks, a relay's recipients, the
files a notice carries); held here and written just before the commit, the batch pays
one statement a kind instead of one a message. A held row taken back (an agent's ``#cc
remove`` of a participant the batch added) is ``cancel``led by an entry of its own, so a
savepoint rolled back restores it.

Holding them changes no guarantee: a savepoint rolled back (``store.db.Savepoint``,
a message rejected by a rule, a reaction that failed) drops the rows added since it
was taken; a flush that fails fails the batch, which the writer then retries one
message at a time, so a message whose rows fail still fails alone. Only the writer
turns it on (``hold``), for message commits alone; every other caller, and the
writer's other work, writes at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy.engine import Connection

from store.direct import Direct, together

__all__ = [
    "cancel",
    "flush",
    "hold",
    "kept",
    "mark",
    "pending",
    "rollback_to",
    "suspended",
    "write",
]

_KEY = "gateway_deferred"
_KEPT = "gateway_deferred_kept"


class _Held:
    """The held rows in the order held, with each statement's positions among them (the
    reads ask ``pending`` several times a message: no walk over the whole batch's rows)."""

    __slots__ = ("cancels", "entries", "keys", "of")

    def __init__(self) -> None:
        # (statement, row); a ``cancel`` entry is (None, {"of": [positions taken back]}).
        self.entries: list[tuple[Direct | None, Mapping[str, Any]]] = []
        self.of: dict[Direct, list[int]] = {}
        self.cancels: list[int] = []  # positions of the cancel entries
        self.keys: dict[Direct, str] = {}  # a statement's rows written once by, sorted by

    def add(self, stmt: Direct | None, row: Mapping[str, Any]) -> None:
        at = len(self.entries)
        self.entries.append((stmt, row))
        if stmt is None:
            self.cancels.append(at)
        else:
            self.of.setdefault(stmt, []).append(at)

    def live(self, stmt: Direct) -> list[int]:
        """Positions of ``stmt``'s rows no later ``cancel`` took back."""
        at = self.of.get(stmt, [])
        if not self.cancels:
            return at
        gone = {i for c in self.cancels for i in self.entries[c][1]["of"]}
        return [i for i in at if i not in gone]

    def truncate(self, at: int) -> None:
        del self.entries[at:]
        for positions in self.of.values():
            while positions and positions[-1] >= at:
                positions.pop()
        while self.cancels and self.cancels[-1] >= at:
            self.cancels.pop()


@contextmanager
def hold(conn: Connection) -> Iterator[None]:
    """Hold the deferrable rows of what runs inside; written by ``flush`` (call it before
    the commit), dropped if the block raises (its transaction is rolled back anyway)."""
    conn.info[_KEY] = _Held()
    conn.info[_KEPT] = {}
    try:
        yield
    finally:
        # A connection found dead was invalidated: its record, and this, went with it
        # (and ``info`` would raise until the transaction is rolled back).
        if not conn.invalidated:
            conn.info.pop(_KEY, None)
            conn.info.pop(_KEPT, None)


@contextmanager
def suspended(conn: Connection) -> Iterator[None]:
    """Write at once inside (after a ``flush``): the writer's other work (jobs, the outbox's
    claims, the web's view log) may read what it writes, or undo it by its own savepoints."""
    held = conn.info.pop(_KEY, None)
    conn.info.pop(_KEPT, None)
    try:
        yield
    finally:
        if held is not None:
            conn.info[_KEY] = held
            conn.info[_KEPT] = {}  # what the other work did may change what was kept


def write(
    conn: Connection, stmt: Direct, rows: Sequence[Mapping[str, Any]], *, key: str | None = None
) -> None:
    """``stmt.many(conn, rows)``, now or (while held) at the flush. ``key``: a column the
    flush writes ``stmt``'s rows once by and in the order of (content-addressed rows held
    by several messages, whose row locks every writer must take in one order)."""
    held: _Held | None = conn.info.get(_KEY)
    if held is None:
        stmt.many(conn, rows)
    else:
        if key is not None:
            held.keys[stmt] = key
        for r in rows:
            held.add(stmt, r)


def pending(conn: Connection, stmt: Direct) -> list[Mapping[str, Any]]:
    """The rows of ``stmt`` held and not yet written, in the order held."""
    held: _Held | None = conn.info.get(_KEY)
    if held is None:
        return []
    return [held.entries[i][1] for i in held.live(stmt)]


def cancel(conn: Connection, stmt: Direct, match: Callable[[Mapping[str, Any]], bool]) -> int:
    """Take back the held rows of ``stmt`` that ``match``; how many there were."""
    held: _Held | None = conn.info.get(_KEY)
    if held is None:
        return 0
    of = [i for i in held.live(stmt) if match(held.entries[i][1])]
    if of:
        held.add(None, {"of": of})
    return len(of)


def flush(conn: Connection) -> None:
    """Write what is held, one ``executemany`` per statement, in the order first held, all
    in one round trip on PostgreSQL (``store.direct.together``)."""
    held: _Held | None = conn.info.get(_KEY)
    if held is None or not held.entries:
        return
    by_stmt = [(stmt, [held.entries[i][1] for i in held.live(stmt)]) for stmt in held.of]
    held.truncate(0)
    with together(conn):  # one round trip on PostgreSQL, not one a statement
        for stmt, rows in by_stmt:
            key = held.keys.get(stmt)
            if key is not None:
                rows = sorted({r[key]: r for r in reversed(rows)}.values(), key=lambda r: r[key])
            stmt.many(conn, rows)


def kept(conn: Connection) -> dict[Any, Any] | None:
    """Reads the message commits of a held batch may share (None: nothing is held): the
    same for each message (a tenant's agents' bouncing marks, store/bouncing.py), and
    dropped by whoever changes what they read, and whenever other work runs between."""
    return conn.info.get(_KEPT)


def mark(conn: Connection) -> int | None:
    """Where a savepoint begins in the held rows (None: nothing is held)."""
    held: _Held | None = conn.info.get(_KEY)
    return None if held is None else len(held.entries)


def rollback_to(conn: Connection, at: int | None) -> None:
    """Drop the rows held since ``mark`` (a savepoint rolled back)."""
    held: _Held | None = conn.info.get(_KEY)
    if held is not None and at is not None:
        held.truncate(at)
