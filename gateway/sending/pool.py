"""The send worker, seen from the daemon: the outbox lanes' connections held in it.

Why a process: in the K=32 GIL profile the outbox lanes' SMTP conversations
(aiosmtplib) were a fifth of the daemon's samples, on the event loop that also
serves intake. Here a lane's connection (``Delivery.connect``, outbound/sender.py's
``Link``) is a ``RemoteConnection``: the lane's mails go to the worker in one frame
(gateway/sending/worker.py) and each one's ``Attempt`` comes back as it is done,
so the next mail does not wait for the daemon's busy loop; everything that writes
(claims, marks, retries, notices) stays in the daemon's writer. The worker is a
plain subprocess (gateway/workers.py: started, replaced, stopped by pid).

Failing closed: a worker that dies makes the mail each lane may have been sending
a ``retry`` (recorded as a transport fault is: attempt counted, backoff) and hands
the lane's mails not yet started back unsent; a new worker takes its place. A mail the
server took (250) whose answer the worker could not give before it died goes
again: one lost reply, at most one duplicate, as with any SMTP client's crash. A
mail not answered in the longest one attempt may take (2 x timeout, and 10 s)
gets the worker killed, so nothing stays claimed behind a stuck worker.
A lane the daemon stops waiting for (the outbox is cancelled when the daemon
stops) is cancelled in the worker too, so it sends nothing nobody would record.
Closing the pool closes the worker's stdin: it stops what is still in flight,
says QUIT on every connection and ends, or is killed by pid after 5 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import AsyncIterator
from typing import Any

import structlog

from gateway import workers
from gateway.worker_io import frame
from outbound.sender import Attempt
from routing.config import OutboundAccount

__all__ = ["RemoteConnection", "SendPool", "SendWorkerLost", "send_pool"]

log = structlog.get_logger("gateway.sending.pool")
MODULE = "gateway.sending.worker"
_SLACK = 10.0  # seconds past an attempt's longest (2 x timeout) before the worker is stuck


class SendWorkerLost(Exception):
    """The send worker died (or was stopped) with this mail: a retry, like a dropped link."""


class SendPool:
    """One send worker process; ``connection`` makes a lane's ``Link`` to it."""

    def __init__(self, loop: str = "asyncio") -> None:
        self.args = ("--loop", loop)  # the worker's event loop: the daemon's [gateway] loop
        self.proc: asyncio.subprocess.Process | None = None
        self.replaced = 0  # workers started in place of dead ones (for tests and status)
        self._reading: asyncio.Task[None] | None = None
        self._up = asyncio.Event()  # a live worker to write to
        self._pending: dict[int, asyncio.Queue[Any]] = {}  # each lane's answers
        self._unanswered: dict[int, int] = {}  # each lane's mails not answered yet
        self._seq = itertools.count()
        self._links = itertools.count()
        self._closing = False
        self._spawning: set[asyncio.Task[None]] = set()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self._up.is_set() else None

    def state(self) -> list[dict[str, object]]:
        """The worker for ``gateway status``, as the parse workers are shown."""
        in_flight = sum(self._unanswered.values())
        return [workers.state("send", self.proc, self._up.is_set(), in_flight, self.replaced)]

    async def start(self) -> None:
        """The worker up and ready, or an error (the daemon does not start without it)."""
        self._adopt(await workers.spawn(MODULE, *self.args))
        log.info("send_worker.started", pid=self.pid)

    def connection(
        self, account: OutboundAccount | None, hostname: str, timeout: float
    ) -> RemoteConnection:
        """A lane's connection, as ``AccountConnection(account, hostname, timeout)``."""
        return RemoteConnection(self, next(self._links), account, hostname, timeout)

    def lane(self, request: tuple[Any, ...]) -> tuple[int, asyncio.Queue[Any]]:
        """A lane's ``("lane", ...)`` written (its seq filled in here); its answers come
        on the queue: ``(i, Attempt, opened)`` each, then None, or a SendWorkerLost."""
        if self._closing or not self._up.is_set() or self.proc is None:
            raise SendWorkerLost("no send worker running")
        proc = self.proc
        assert proc.stdin is not None
        seq = next(self._seq)
        answers: asyncio.Queue[Any] = asyncio.Queue()
        self._pending[seq] = answers
        self._unanswered[seq] = len(request[-1])
        try:
            proc.stdin.write(frame((request[0], seq, *request[1:])))
        except (ConnectionError, RuntimeError) as exc:  # its pipe is closed: it is dying
            del self._pending[seq], self._unanswered[seq]
            raise SendWorkerLost(f"send worker {proc.pid}: {exc!r}") from None
        return seq, answers

    async def ready(self) -> None:
        """Until a worker is up (a replacement may be starting); SendWorkerLost if none comes."""
        if self._closing:
            raise SendWorkerLost("the send worker is stopped")
        try:
            async with asyncio.timeout(workers.START_TIMEOUT):
                await self._up.wait()
        except TimeoutError:
            raise SendWorkerLost("no send worker could be started") from None

    async def answer(self, seq: int, answers: asyncio.Queue[Any], longest: float) -> Any:
        """The lane's next answer; a worker silent for longer than one attempt can last
        (``longest``: ``[outbound] timeout``, an attempt at most twice it) is killed."""
        proc = self.proc
        try:
            async with asyncio.timeout(2 * longest + _SLACK):
                item = await answers.get()
        except TimeoutError:
            if proc is not None:
                log.warning("send_worker.stuck", pid=proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, 9)  # its reader sees the end of the pipe, replaces it
            raise SendWorkerLost("the send worker did not answer") from None
        if isinstance(item, SendWorkerLost):
            raise item
        return item

    def done(self, seq: int, ended: bool) -> None:
        """The lane's answers no longer awaited; not ``ended``: the worker stops it."""
        self._pending.pop(seq, None)
        self._unanswered.pop(seq, None)
        proc = self.proc
        if not ended and self._up.is_set() and proc is not None and proc.stdin is not None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                proc.stdin.write(frame(("cancel", seq)))

    def close_link(self, key: int) -> None:
        """QUIT on the link's connection, in the worker; nothing to wait for."""
        proc = self.proc
        if self._up.is_set() and proc is not None and proc.stdin is not None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                proc.stdin.write(frame(("close", key)))

    async def close(self) -> None:
        """Stop the worker by its pid: stdin closed (it says QUIT), killed if it lingers."""
        self._closing = True
        for task in list(self._spawning):
            task.cancel()
        await asyncio.gather(*self._spawning, return_exceptions=True)
        self._up.clear()
        if self.proc is not None:
            await workers.stop(self.proc)
        if self._reading is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reading  # it fails what was still waiting

    def _adopt(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._reading = asyncio.create_task(self._read(proc), name=f"send-worker-{proc.pid}")
        self._up.set()

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        """Each answer to its mail; at the end of the pipe, the worker is dead."""
        with contextlib.suppress(*workers.LOST):
            while True:
                kind, seq, *rest = await workers.read_frame(proc)
                answers = self._pending.get(seq)  # type: ignore[call-overload]
                if answers is not None:
                    answers.put_nowait(tuple(rest) if kind == "attempt" else None)
                    if kind == "attempt":
                        self._unanswered[seq] -= 1  # type: ignore[index]
        self._up.clear()
        lost, self._pending = self._pending, {}
        self._unanswered = {}
        for answers in lost.values():
            answers.put_nowait(SendWorkerLost(f"send worker {proc.pid} died"))
        if self._closing:
            return
        code = await proc.wait()
        log.warning("send_worker.died", pid=proc.pid, returncode=code, mails_lost=len(lost))
        task = asyncio.create_task(self._replace(), name="send-worker-replace")
        self._spawning.add(task)
        task.add_done_callback(self._spawning.discard)

    async def _replace(self) -> None:
        proc = await workers.respawn(
            lambda: workers.spawn(MODULE, *self.args), lambda: self._closing, "send_worker"
        )
        if proc is not None:
            self.replaced += 1
            self._adopt(proc)
            log.info("send_worker.replaced", pid=proc.pid)


class RemoteConnection:
    """A lane's connection held by the send worker (outbound/sender.py's ``Link``)."""

    def __init__(
        self,
        pool: SendPool,
        key: int,
        account: OutboundAccount | None,
        hostname: str,
        timeout: float,
    ) -> None:
        self.pool, self.key = pool, key
        self.account, self.hostname, self.timeout = account, hostname, timeout
        self.opened = 0
        self._used = False

    async def deliver(
        self, rows: list[dict[str, Any]], start_by: float
    ) -> AsyncIterator[tuple[int, Attempt]]:
        """As ``AccountConnection.deliver``, the lane's mails in one frame to the worker.
        Its death: the mail it may have been sending is a retry, the rest left unsent."""
        if self.account is None:
            for i in range(len(rows)):
                yield i, Attempt("retry", "no outbound account configured for this tenant")
            return
        mails = [
            {"mail_from": r["mail_from"], "rcpt_tos": r["rcpt_tos"], "body": r["body"]}
            for r in rows
        ]
        request = ("lane", self.key, self.account, self.hostname, self.timeout, start_by, mails)
        pool, answered = self.pool, 0
        try:
            await pool.ready()
            seq, answers = pool.lane(request)
        except SendWorkerLost as exc:
            yield 0, Attempt("retry", str(exc)[:1000])
            return
        self._used, ended = True, False
        try:
            while True:
                try:
                    item = await pool.answer(seq, answers, self.timeout)
                except SendWorkerLost as exc:
                    ended = True
                    if answered < len(rows):
                        yield answered, Attempt("retry", str(exc)[:1000])
                    return
                if item is None:
                    ended = True
                    return
                i, attempt, opened = item
                self.opened += opened
                answered = i + 1
                yield i, attempt
        finally:  # a lane cancelled (the daemon stops) has the worker stop it too
            pool.done(seq, ended)

    async def close(self) -> None:
        if self._used:
            self.pool.close_link(self.key)


@contextlib.asynccontextmanager
async def send_pool(size: int, loop: str = "asyncio") -> AsyncIterator[SendPool | None]:
    """The daemon's send worker for its lifetime; None (send in the daemon) when ``size`` is 0."""
    if size < 1:
        yield None
        return
    pool = SendPool(loop)
    await pool.start()
    try:
        yield pool
    finally:
        await pool.close()
