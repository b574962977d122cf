"""One writer thread that commits whatever is queued, in one transaction.

SQLite has a single writer; many sessions fighting for it sleep in its busy
handler (measured: ~106 ms p99 with 8 sessions). One thread that takes every queued unit of work
and commits them together costs one fsync per batch instead of per message,
and never waits for a batch to fill (a lone sender is not slowed down).

A unit of work is a plain (synchronous) function of a connection; a batch
runs in the writer's own thread on a synchronous engine, one hand-off per
batch instead of several per statement (store/db.py says why). The thread takes
its units from a queue the event loop puts them in, and starts the next batch as
soon as a COMMIT ends, without waiting for the loop's turn; the results of a batch
go back to the loop in one call. If a batch
fails, each unit is retried alone, so one poison message cannot fail its
neighbours; but not when SQLite was busy (another process held the write lock
past the busy timeout): no unit was at fault, and retrying each alone would
wait the timeout once more per unit, so a message queued behind a batch of
workers' units would hear its 451 only after all of them. The rows a message
adds that nothing reads before the commit (audit events, outbox rows) are held
and written once per batch (store/deferred.py).

Several instances on one PostgreSQL (docs/scaling.md) commit concurrently.
Ticket numbers there come from a sequence per tenant (store/numbering.py), which
holds no lock until the commit: batches that number tickets for the same tenants
no longer wait for each other, nor deadlock when they do so in opposite orders
(figure 9 of BENCHMARKS.md). A unit retried alone that still meets a transient
conflict (a deadlock, a serialization failure, or a unique-index race another
instance won, such as the same mail delivered to two MX hosts) runs again, up to
:data:`ATTEMPTS` times, and the next run finds the winner's rows instead of
answering the sender 451. So does a unit whose connection is found dead before its
commit: the writer's engine does not ping the server before each batch (a round
trip each on PostgreSQL).

Not every commit waits for the disk. The outbox's claims and the outcomes of its
sends (``submit(..., durable=False)``) are written without the fsync: a batch made
of such units alone commits with ``synchronous=NORMAL`` on SQLite (WAL: lost only
by the operating system's crash or a power cut, never by the process's, and made
durable by the next commit that waits) and ``synchronous_commit = off`` on
PostgreSQL. What such a loss undoes is a claim (the row is due again; a restart
releases claims anyway) or a "sent" mark (the mail goes again with the same
Message-ID: the at-least-once every mail system gives after a crash). It never
undoes an accepted message: a batch with any durable unit waits for the disk.
One fsync fewer per outbox round (claim, send, mark) keeps the one writer free
for the messages whose 250 waits on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import random
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import structlog
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from store import deferred
from store.db import forget_wait_for_disk, wait_for_disk
from store.errors import StoreUnavailable
from store.faults import BEFORE_COMMIT, crash_point, is_message_commit

__all__ = ["ATTEMPTS", "Work", "Writer"]

T = TypeVar("T")
Work = Callable[[Connection], T]
log = structlog.get_logger("store.writer")

ATTEMPTS = 4  # runs of a unit alone that meets a transient conflict
# deadlock_detected, serialization_failure, unique_violation
_TRANSIENT = {"40P01", "40001", "23505"}
# Set on an error that lost the connection before COMMIT was sent: nothing of the
# transaction was kept, so the unit may run again on a fresh connection.
_UNSENT = "_gateway_unsent"


def _transient(exc: BaseException) -> bool:
    if getattr(exc, _UNSENT, False):
        return True
    return isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) in _TRANSIENT


def _busy(exc: BaseException) -> bool:
    """SQLite's write lock was not had within the busy timeout: the database's state,
    not the units'."""
    orig = getattr(exc, "orig", exc)
    code = getattr(orig, "sqlite_errorcode", None)
    return (
        isinstance(orig, sqlite3.OperationalError)
        and code is not None
        and (code & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    )


def _lost(conn: Connection) -> bool:
    """True when the connection is gone (SQLAlchemy saw it, or the driver did on a
    statement said straight to it, such as a savepoint); it is then dropped from the pool."""
    try:
        if conn.invalidated:
            return True
        if getattr(conn.connection.dbapi_connection, "closed", False) is True:
            conn.invalidate()
            return True
    except Exception:  # closed meanwhile: the unit's own error is the one to report
        return False
    return False


class _NoWait:
    """A unit whose commit need not wait for the disk (``submit(durable=False)``)."""

    __slots__ = ("work",)

    def __init__(self, work: Work[Any]) -> None:
        self.work = work

    def __call__(self, conn: Connection) -> Any:
        return self.work(conn)


class Writer:
    def __init__(self, engine: Engine, *, max_batch: int = 64) -> None:
        self.engine = engine
        self._conn: Connection | None = None  # the writer thread's own, between batches
        self.max_batch = max_batch
        # Units in, read by the writer's thread; None after the last (``close``).
        self._inbox: queue.SimpleQueue[tuple[Work[Any], asyncio.Future[Any]] | None]
        self._inbox = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closing = False
        self.batches = 0
        self.units = 0
        self.retries = 0  # units run again after a transient conflict
        # perf_counter at the recent batches' BEGIN and after their COMMIT: where a
        # message's wait goes (gateway/intake/pipeline.py's GATEWAY_TIMELINE); the batch
        # running now began at ``batch_begun``. By the time a unit's caller reads these the
        # thread may have committed a later batch too: a unit finds its own by its BEGIN.
        self.batch_begun = 0.0
        self.recent_batches: deque[tuple[float, float]] = deque(maxlen=32)

    def start(self) -> None:
        """The writer's thread takes its next batch itself as soon as a COMMIT ends: a
        batch handed over by the event loop waited for the loop's next turn (~0.8 ms a
        batch with 8 senders, a fifth of the writer's cycle). Measured: K=32 +2%, a lone
        sender's loop CPU -6%; K=8 unchanged, bound by the GIL the thread shares with the
        loop (bench/results/notes/writer22.md)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="store-writer", daemon=True)
            self._thread.start()

    async def submit(self, work: Work[T], *, durable: bool = True) -> T:
        """Run ``work`` inside a committed transaction; return its result. ``durable``
        False: the commit need not wait for the disk (see the module's docstring)."""
        return await self.enqueue(work, durable=durable)

    def enqueue(self, work: Work[T], *, durable: bool = True) -> asyncio.Future[T]:
        """``submit`` in two steps: ``work`` is queued when this returns, and the future
        it returns gives its result. Units queued one after another run in that order
        (gateway/intake/in_order.py)."""
        if not durable:
            work = _NoWait(work)
        if self._closing:
            raise StoreUnavailable("writer is shutting down")
        self.start()
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._inbox.put((work, fut))
        return fut

    async def close(self) -> None:
        """Stop taking work, finish what is queued."""
        self._closing = True
        if self._thread is not None:
            self._inbox.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        self.engine.dispose()

    # --- the writer's thread ----------------------------------------------------------

    def _serve(self) -> None:
        more = True
        while more:
            first = self._next()
            if first is None:
                break
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    more = False
                    break
                batch.append(item)
            live = [(w, f) for w, f in batch if not f.cancelled()]
            if live:
                try:
                    self._commit(live)
                except BaseException as exc:  # ours, not a unit's: fail them, go on
                    _settle([(f, False, exc) for _, f in live])
        self._let_go()

    def _next(self) -> tuple[Work[Any], asyncio.Future[Any]] | None:
        """Wait for a unit (a leaf of its own, so a profile counts it idle)."""
        return self._inbox.get()

    def _commit(self, batch: list[tuple[Work[Any], asyncio.Future[Any]]]) -> None:
        if len(batch) > 1:
            try:
                results = self._transaction_sync([w for w, _ in batch])
            except Exception as exc:  # retry alone, below
                log.warning("batch_failed", size=len(batch), error=type(exc).__name__)
                if _busy(exc):
                    _settle([(f, False, exc) for _, f in batch])
                    return
            else:
                _settle([(f, True, r) for (_, f), r in zip(batch, results, strict=True)])
                return
        for work, fut in batch:
            for attempt in range(1, ATTEMPTS + 1):
                try:
                    (result,) = self._transaction_sync([work])
                except Exception as exc:
                    if attempt < ATTEMPTS and _transient(exc):
                        self.retries += 1
                        error = type(getattr(exc, "orig", exc)).__name__
                        log.info("unit_retried", attempt=attempt, error=error)
                        time.sleep(random.uniform(0, 0.01 * attempt))
                        continue
                    _settle([(fut, False, exc)])
                else:
                    _settle([(fut, True, result)])
                break

    def _connection(self) -> Connection:
        """The writer's connection, kept from batch to batch: a checkout from the pool and
        its return (with the pool's ROLLBACK) cost ~0.2 ms of CPU a transaction, the
        most of a lone sender's message (bench/results/notes/pace21.md)."""
        if self._conn is None:
            self._conn = self.engine.connect().execution_options(sqlite_begin="IMMEDIATE")
        return self._conn

    def _let_go(self) -> None:
        """After a failed batch (its connection may be dead, or hold a PostgreSQL SET
        undone) and at the end: the next batch starts on a connection from the pool."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # a dead one has nothing to close
                conn.close()

    def _transaction_sync(self, works: list[Work[Any]]) -> list[Any]:
        begun = self.batch_begun = time.perf_counter()
        durable = not all(isinstance(w, _NoWait) for w in works)
        info: dict[Any, Any] | None = None  # the connection's, read after a failure lets it go
        try:
            conn = self._connection().execution_options(commit_waits=durable)
            with conn.begin(), deferred.hold(conn):
                info = conn.info
                try:
                    wait_for_disk(conn, durable)
                    results = []
                    for w in works:
                        if is_message_commit(w):
                            results.append(w(conn))
                            continue
                        deferred.flush(conn)  # other work may read what the messages held
                        with deferred.suspended(conn):
                            results.append(w(conn))
                    deferred.flush(conn)
                except Exception as exc:
                    # A connection that died while idle in the pool (a server restart, a
                    # failover) fails the first statement; the writer's engine does not
                    # ping before each batch, so such a unit runs again (see _transient).
                    # A loss at the COMMIT below is not retried: its outcome is unknown.
                    if _lost(conn):
                        setattr(exc, _UNSENT, True)
                    raise
                if any(is_message_commit(w) for w in works):
                    crash_point(BEFORE_COMMIT)
        except BaseException:
            # A PostgreSQL SET is undone with its transaction: unknown, so said next time.
            if info is not None:
                forget_wait_for_disk(info)
            self._let_go()
            raise
        self.recent_batches.append((begun, time.perf_counter()))
        self.batches += 1
        self.units += len(works)
        return results


def _settle(outcomes: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    """Hand results (``ok``) or errors to the futures, on their loop: one wake-up of the
    loop a batch. A future given up meanwhile (its caller cancelled, or its loop closed)
    is left as it is."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].get_loop(), []).append(outcome)
    for loop, theirs in by_loop.items():
        try:
            loop.call_soon_threadsafe(_set, theirs)
        except RuntimeError:  # the loop is closed: nobody waits for these any more
            pass


def _set(outcomes: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for fut, ok, value in outcomes:
        if fut.done():
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)
