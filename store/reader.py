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
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy.engine import Connection, Engine

from store.db import create_writer_engine

__all__ = ["READ_THREADS", "Reader"]

T = TypeVar("T")
READ_THREADS = 1


class Reader:
    """``await reader.read(work)``: ``work(conn)`` on a pooled connection, in a read thread."""

    def __init__(self, engine: Engine, *, threads: int = READ_THREADS) -> None:
        self.engine = engine
        self._threads = ThreadPoolExecutor(threads, thread_name_prefix="store-reader")

    @classmethod
    def for_url(cls, url: str) -> Reader:
        """A reader with its own synchronous pool on the database at ``url``."""
        return cls(create_writer_engine(url))

    async def read(self, work: Callable[[Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, self._read_sync, work)

    def _read_sync(self, work: Callable[[Connection], T]) -> T:
        with self.engine.connect() as conn:
            return work(conn)  # the transaction is rolled back when the connection returns

    def close(self) -> None:
        self._threads.shutdown(wait=True)
        self.engine.dispose()
