"""The audit rows of page views, buffered and written in batches by one flusher.

Every view of a ticket (``web.ticket_viewed`` on the clients' pages,
``desk.ticket_viewed`` on the agents' desk) is audited. Written one by one,
each view was a unit in the single writer's queue, behind the mail's
transactions and their fsync: the page waited for a commit it does not need
to show anything. Here a view appends its row (stamped with the time of the
view) to a bounded buffer and the page is answered at once; one task writes
what has gathered every ``FLUSH_INTERVAL`` as one ``executemany`` through the
writer, so a burst of views costs the writer one unit, not one each.

What can be lost (docs/privacy.md, "Audit of page views"): a clean stop
(SIGTERM) writes the whole buffer after the last request is answered and before
the writer closes, so it loses none; a ``kill -9`` or a power cut loses the
rows of at most the last ``FLUSH_INTERVAL`` and of a flush in progress. Downloads
are still audited in the writer before the file is sent: a file leaves only
with its row committed.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.engine import Connection

from gateway.clock import Clock, system_clock
from store import repos
from store.writer import Writer

__all__ = ["BUFFER_LIMIT", "FLUSH_INTERVAL", "ViewLog"]

log = structlog.get_logger("web")
FLUSH_INTERVAL = 0.1  # seconds a view's row may wait: short, so a kill -9 loses little
BUFFER_LIMIT = 5000  # rows held at most; a view that finds it full waits for a flush


class ViewLog:
    """``await views.add(...)`` per view; ``close()`` at shutdown, after the last request."""

    def __init__(
        self,
        writer: Writer,
        clock: Clock | None = None,
        *,
        interval: float = FLUSH_INTERVAL,
        limit: int = BUFFER_LIMIT,
    ) -> None:
        self.writer = writer
        self.clock = clock or system_clock()
        self.interval = interval
        self.limit = limit
        self.rows: list[dict[str, Any]] = []
        self.written = 0  # rows committed, for /status and the tests
        self._due = asyncio.Event()
        self._lock = asyncio.Lock()  # one flush at a time: rows reach the store in order
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def add(
        self,
        tenant: str,
        action: str,
        *,
        actor: str,
        ticket_id: int | None,
        detail: dict[str, Any] | None = None,
        now: datetime | None = None,
    ) -> None:
        """Buffer one audit row; written within ``interval``. A full buffer (the store
        is slow or failing) makes this view wait for a flush, and fail if it fails."""
        if len(self.rows) >= self.limit:
            await self.flush()
        self.rows.append(
            {
                "tenant": tenant,
                "ticket_id": ticket_id,
                "actor": actor,
                "action": action,
                "detail": detail or {},
                "created_at": now or self.clock(),
            }
        )
        if self._closed:  # a request that outlived the shutdown: written at once
            await self.flush()
            return
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="view-log")
        self._due.set()

    async def flush(self) -> int:
        """Write what is buffered now; return how many rows. On failure the rows stay
        buffered (in front, in order) and the error is raised."""
        async with self._lock:
            return await self._flush()

    async def _flush(self) -> int:
        rows, self.rows = self.rows, []
        if not rows:
            return 0

        def work(conn: Connection) -> None:
            by_tenant: dict[str, list[dict[str, Any]]] = {}
            for row in rows:
                rest = {k: v for k, v in row.items() if k != "tenant"}
                by_tenant.setdefault(row["tenant"], []).append(rest)
            for tenant, mine in by_tenant.items():
                repos.add_audits(conn, tenant, mine)

        try:
            await self.writer.submit(work)
        except Exception:
            self.rows[:0] = rows
            raise
        self.written += len(rows)
        return len(rows)

    async def _run(self) -> None:
        while True:
            await self._due.wait()
            await asyncio.sleep(self.interval)
            self._due.clear()
            try:
                await self.flush()
            except Exception as exc:  # kept; tried again at the next interval
                log.warning("web.views_unwritten", rows=len(self.rows), error=type(exc).__name__)
                self._due.set()

    async def close(self, _app: object = None) -> None:
        """Stop the flusher and write every buffered row (the writer is still open)."""
        self._closed = True
        async with self._lock:  # the flusher is not inside a flush while we hold this
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
                self._task = None
            left = len(self.rows)
            try:
                await self._flush()
            except Exception as exc:
                log.error("web.views_lost", rows=left, error=type(exc).__name__)
                return
        if left:
            log.info("web.views_flushed", rows=left)
