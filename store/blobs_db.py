"""Blobs as rows of the ``blobs`` table: one store for several instances on one database.

Same transaction, not a transaction before: the rows are inserted by ``bind``
inside the writer's transaction that also inserts the message and attachment
rows naming them. A blob is then durable exactly when the rows naming it are,
and a crash, a rollback or a lost dedupe race leaves no orphan to collect. A
separate committed transaction first (the file store's order) would cost a
second commit per message and leave orphans after every failed commit. The
price is a bigger transaction while the write lock is held; SQLite writes the
pages at its one fsync per batch, PostgreSQL streams the bytea into its WAL.

Concurrency on PostgreSQL, where another instance may be collecting the same
hash while we bind it (SQLite has one writer at a time, so there it cannot
happen): ``bind`` upserts with ``ON CONFLICT DO UPDATE`` rather than ``DO
NOTHING`` because the update takes the row lock, and a collection locks the
rows it may delete (``hold``: ``SELECT ... FOR UPDATE``) *before* it checks
that no row names them. Whichever comes first, the other waits: a collection
that waited then sees the committed message naming the blob and keeps it; a
bind that waited for a deleting collection inserts the row anew. ``DO
NOTHING`` would take no lock, and a collection could delete the row between
our insert finding it and our commit.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import delete, exists, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import ClauseElement

from store import deferred
from store.blobs import FileBlobStore, Staged
from store.direct import Direct
from store.models import attachments, blobs, messages

__all__ = ["DatabaseBlobStore", "read_in_transaction"]

_INLINE_HASH_BYTES = 256 * 1024  # more than this is hashed off the event loop
# A blob up to this size waits for the batch's flush (store/deferred.py) when the writer
# holds rows: one statement for the batch's blobs instead of one a message (a round
# trip on PostgreSQL: ~0.35 ms a message of figure 9's). A bigger one is written at
# once: held, a batch of them would be one more whole copy in the driver's buffers.
_HELD_BYTES = 256 * 1024
_CHUNK = 500  # hashes per IN (...), under SQLite's bound-parameter limit


class DatabaseBlobStore:
    """Rows of ``blobs``; ``engine`` is a synchronous one (the writer's) for reads
    from a thread (web downloads, exports), on a connection of its own."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def stage(self, items: Sequence[bytes], shas: Sequence[str] | None = None) -> Staged:
        """Only the hashes (the caller's when given): the bytes are written by ``bind``,
        in the transaction."""
        data = list(items)
        if shas is not None:
            shas = list(shas)
        elif sum(len(d) for d in data) > _INLINE_HASH_BYTES:
            shas = await asyncio.to_thread(_hashes, data)
        else:
            shas = _hashes(data)
        rows = dict(zip(shas, data, strict=True))  # identical content once
        return Staged(tuple(shas), tuple(sorted(rows.items())))

    def bind(self, conn: Connection, staged: Staged) -> None:
        if not staged.rows:
            return
        now = datetime.now(UTC)
        rows = [
            {"sha256": sha, "size": len(data), "data": data, "created_at": now}
            for sha, data in staged.rows
        ]
        big = [r for r in rows if r["size"] > _HELD_BYTES]
        if big:
            _BIND.many(conn, big)
        if len(big) < len(rows):
            small = [r for r in rows if r["size"] <= _HELD_BYTES]
            deferred.write(conn, _BIND, small, key="sha256")

    def get(self, sha256: str) -> bytes | None:
        with self.engine.connect() as conn:
            data = conn.execute(
                select(blobs.c.data).where(blobs.c.sha256 == sha256)
            ).scalar_one_or_none()
        return None if data is None else bytes(data)

    def file(self, sha256: str) -> Path | None:
        return None

    def hold(self, conn: Connection, shas: set[str]) -> set[str]:
        held: set[str] = set()
        ordered = sorted(shas)
        for i in range(0, len(ordered), _CHUNK):
            held |= {
                str(s)
                for (s,) in conn.execute(
                    select(blobs.c.sha256)
                    .where(blobs.c.sha256.in_(ordered[i : i + _CHUNK]))
                    .order_by(blobs.c.sha256)
                    .with_for_update()  # nothing on SQLite, whose writer is alone anyway
                )
            }
        return held

    def orphans(self, conn: Connection, older_than: float) -> set[str]:
        """Narrowed here to the rows no row seems to name (so a big store does not come
        back whole); ``store.retention.collect_blobs`` checks again after ``hold``."""
        cutoff = datetime.fromtimestamp(older_than, UTC)
        # A probe of ix_messages_raw_sha256_kept per blob on SQLite (it read the whole
        # of messages into a temporary list before that index), an anti-join on PostgreSQL.
        query = select(blobs.c.sha256).where(
            blobs.c.created_at < cutoff,
            ~exists().where(attachments.c.sha256 == blobs.c.sha256),
            ~exists().where(
                messages.c.raw_sha256 == blobs.c.sha256, messages.c.raw_purged_at.is_(None)
            ),
        )
        return {str(s) for (s,) in conn.execute(query)}

    def containing(self, needle: re.Pattern[bytes]) -> list[str]:
        """Every blob whose bytes match: an erasure's check where the blobs are not
        files to search (PostgreSQL's are the server's). Streamed, a few rows at a time."""
        found: list[str] = []
        with self.engine.connect() as conn:
            rows = conn.execution_options(stream_results=True, yield_per=8).execute(
                select(blobs.c.sha256, blobs.c.data).order_by(blobs.c.sha256)
            )
            for sha, data in rows:
                if needle.search(data):
                    found.append(str(sha))
        return found

    def delete(self, conn: Connection, shas: Iterable[str]) -> None:
        ordered = sorted(shas)
        for i in range(0, len(ordered), _CHUNK):
            conn.execute(delete(blobs).where(blobs.c.sha256.in_(ordered[i : i + _CHUNK])))


def _upsert(conn: Connection) -> ClauseElement:
    if conn.dialect.name == "postgresql":
        stmt = postgresql.insert(blobs)
        # A no-op update of a column no index covers: it only takes the row lock.
        return stmt.on_conflict_do_update(
            index_elements=[blobs.c.sha256], set_={"size": stmt.excluded.size}
        )
    return sqlite.insert(blobs).on_conflict_do_nothing(index_elements=[blobs.c.sha256])


# Once per dialect, said to the driver (store/direct.py): built anew for every message,
# the statement and SQLAlchemy's execute path were most of the bind's cost.
_BIND = Direct(_upsert, keys=("sha256", "size", "data", "created_at"))


def read_in_transaction(conn: Connection, sha256: str, folder: Path) -> bytes | None:
    """A blob's bytes as stored, read inside a writer's transaction: held for the batch's
    flush or a ``blobs`` row (which that transaction may have written itself, unseen by
    any other connection), else the file under ``folder`` (the file store writes before
    the transaction); None when none has it (erased, or collected). Mail that carries
    stored files (an agent's notice) reads them here, never from what the parser held."""
    for row in deferred.pending(conn, _BIND):
        if row["sha256"] == sha256:
            return bytes(row["data"])
    data = conn.execute(select(blobs.c.data).where(blobs.c.sha256 == sha256)).scalar()
    if data is not None:
        return bytes(data)
    path = FileBlobStore(folder).path(sha256)
    try:
        return path.read_bytes()
    except OSError:
        return None


def _hashes(data: list[bytes]) -> list[str]:
    return [hashlib.sha256(d).hexdigest() for d in data]
