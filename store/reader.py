"""Reads beside the single writer: a synchronous pool read from a few threads of its own.

Why not the writer: its queue is for commits, and a page view that waited there
waited behind every mail's transaction and fsync (figure 8 of BENCHMARKS.md:
0.03 of a bare aiohttp page). Why not the async engine: through SQLAlchemy
async + aiosqlite each statement costs several event-loop/thread hand-offs
(store/db.py, ``create_writer_engine``); here a whole read (a session lookup,
a ticket with its messages) is one hop to a thread and back.

A read runs in a transaction of its own that is never committed: on SQLite
(WAL) a snapshot that neither blocks the writer nor waits for it; on
PostgreSQL one statement snapshot each at READ COMMITTED.

``read(work, inline=True)`` is for a read of a few rows that a page makes on
every view (figure 8): on SQLite it runs on the event loop itself, on a
connection of its own that never waits (``busy_timeout`` 0), because the hop to
a thread and back cost more CPU than the read (about 30 µs a hop, and the GIL
passed between the threads twice). A read that would wait (SQLITE_BUSY: WAL
recovery, a closing connection's checkpoint) is refused at once and runs on the
thread instead. On PostgreSQL a read is a network round trip, never inline.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

from store.db import create_writer_engine

__all__ = ["READ_THREADS", "Reader"]

T = TypeVar("T")
READ_THREADS = 1


class Reader:
    """``await reader.read(work)``: ``work(conn)`` on a pooled connection, in a read thread."""

    def __init__(self, engine: Engine, *, threads: int = READ_THREADS) -> None:
        self.engine = engine
        self._threads = ThreadPoolExecutor(threads, thread_name_prefix="store-reader")
        self._inline: Engine | None = None
        self._inline_conn: Connection | None = None  # kept open: the loop is one user
        if engine.dialect.name == "sqlite":
            url = engine.url.render_as_string(hide_password=False)
            self._inline = create_writer_engine(url, busy_timeout_ms=0)

    @classmethod
    def for_url(cls, url: str) -> Reader:
        """A reader with its own synchronous pool on the database at ``url``."""
        return cls(create_writer_engine(url))

    async def read(self, work: Callable[[Connection], T], *, inline: bool = False) -> T:
        """``work(conn)``'s result; ``inline``: a small read, on the loop where it can be."""
        if inline and self._inline is not None:
            try:
                return self._read_inline(work, self._inline)
            except (sqlite3.OperationalError, OperationalError):
                pass  # it would have waited (or fails): the thread's connection waits
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, self._read_sync, work, self.engine)

    def _read_inline(self, work: Callable[[Connection], T], engine: Engine) -> T:
        """On the loop, on one connection kept open (a pool checkout and return cost
        as much as the read); its transaction rolled back after each read."""
        conn = self._inline_conn
        if conn is None or conn.closed or conn.invalidated:
            conn = self._inline_conn = engine.connect()
        try:
            return work(conn)
        finally:
            try:
                conn.rollback()
            except Exception:
                self._inline_conn = None
                conn.close()
                raise

    @staticmethod
    def _read_sync(work: Callable[[Connection], T], engine: Engine) -> T:
        with engine.connect() as conn:
            return work(conn)  # the transaction is rolled back when the connection returns

    def close(self) -> None:
        self._threads.shutdown(wait=True)
        self.engine.dispose()
        if self._inline_conn is not None:
            self._inline_conn.close()
        if self._inline is not None:
            self._inline.dispose()
