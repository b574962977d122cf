"""Parsing in worker processes (``[gateway] parse_workers``), off the daemon's GIL.

Why processes: the event loop and the store's writer thread share one GIL, so
the daemon runs on one core however many it has; parsing was a fifth to a
quarter of its CPU (BENCHMARKS.md §1). A worker gets the raw bytes and gives
back the ``ParsedMessage`` (gateway/intake/parse_worker.py): a pickle of a
few strings, ~15 µs to load against ~450 µs to parse. Asked to, a worker also
tells the message's language (routing/language.py), the classifier's ~0.3 ms that
the writer's transaction then does not spend; a pool made with ``language`` has
each worker load the model from its start (``warmed``: until each has it), so no
message waits ~0.5-2 s on the load.

The workers are plain subprocesses started once, when the daemon starts, each
on a pipe pair the event loop reads and writes without a thread. A worker is
sent at most ``DEPTH`` messages and ``HELD_BYTES`` of them at a time (always
one), so it finds its next message in the pipe without waiting for the loop to
be scheduled; the rest wait here as references, so 32 big messages in flight
are not 32 copies in pipe buffers.

Failing closed: a worker that dies (killed, out of memory) fails the messages
it held with ``ParseWorkerLost``, a 451 (``outcome_for_exception``: a fault,
never a refusal), so the sender tries again and nothing half-parsed is stored;
a new worker takes its place. A message whose wait is cancelled (the pipeline's
timeout) after ``STUCK`` seconds in a worker gets that worker killed, so one
pathological message cannot hold a worker for ever. Closing the pool closes
the workers' stdin and waits for each by its pid, killing what does not end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import structlog

from gateway import workers
from gateway.intake.parse_worker import REQUEST
from parsers import errors as parse_errors
from parsers.limits import Limits
from parsers.types import ParsedMessage

__all__ = ["ParsePool", "ParseWorkerLost", "parse_pool"]

log = structlog.get_logger("gateway.intake.parse_pool")
DEPTH = 8  # messages sent to one worker at a time
HELD_BYTES = 4 << 20  # and their bytes (one message alone may be bigger)
STUCK = 10.0  # seconds a message may have been parsing when its wait is given up
_ONE_WRITE = 256 * 1024  # a smaller message goes with its header in one write


class ParseWorkerLost(Exception):
    """The worker parsing this message died: a temporary failure, the sender retries."""


@dataclass(eq=False, slots=True)
class _Job:
    data: bytes
    limits: Limits
    language: bool  # tell the message's language too
    future: asyncio.Future[tuple[object, ...]]
    sent_at: float | None = None
    worker: _Worker | None = None


@dataclass(eq=False)
class _Worker:
    proc: asyncio.subprocess.Process
    held: deque[_Job] = field(default_factory=deque)  # sent, in the order answers come
    held_bytes: int = 0
    reading: asyncio.Task[None] | None = None
    alive: bool = True
    warm: asyncio.Event = field(default_factory=asyncio.Event)  # the language model loaded

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, job: _Job, now: float) -> None:
        limits = job.limits
        stdin = self.proc.stdin
        assert stdin is not None
        head = REQUEST.pack(
            len(job.data),
            limits.max_header_bytes,
            limits.max_mime_depth,
            limits.max_parts,
            job.language,
        )
        if len(job.data) < _ONE_WRITE:
            stdin.write(head + job.data)  # one system call
        else:  # no second copy of a big message
            stdin.write(head)
            stdin.write(job.data)
        job.sent_at, job.worker = now, self
        self.held.append(job)
        self.held_bytes += len(job.data)

    def has_room(self) -> bool:
        return self.alive and (
            not self.held or (len(self.held) < DEPTH and self.held_bytes < HELD_BYTES)
        )


class ParsePool:
    """``size`` worker processes; ``parse`` is ``parsers.parse`` run in one of them.
    ``language``: the daemon's tenants may need the language told, so every worker
    (a replacement too) loads the model at its start; else none ever does unasked."""

    def __init__(self, size: int, *, language: bool = False) -> None:
        if size < 1:
            raise ValueError("a parse pool needs at least one worker")
        self.size = size
        self.language = language
        self.workers: list[_Worker] = []
        self.replaced = 0  # workers started in place of dead ones (for tests and status)
        self._waiting: deque[_Job] = deque()
        self._closing = False
        self._spawning: set[asyncio.Task[None]] = set()

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.workers if w.alive]

    def state(self) -> list[dict[str, object]]:
        """Each worker for ``gateway status`` (gateway/workers.py's ``state``)."""
        return [
            workers.state("parse", w.proc, w.alive, len(w.held), self.replaced)
            for w in self.workers
        ]

    async def start(self) -> None:
        """All workers up and ready, or an error (the daemon does not start without them)."""
        started = await asyncio.gather(
            *(self._spawn() for _ in range(self.size)), return_exceptions=True
        )
        for w in started:
            if isinstance(w, _Worker):
                self._adopt(w)
        failed = [w for w in started if isinstance(w, BaseException)]
        if failed:
            await self.close()
            raise RuntimeError(f"parse workers did not start: {failed[0]!r}") from failed[0]
        log.info("parse_pool.started", workers=self.size, pids=self.pids)

    async def parse(self, data: bytes, limits: Limits, *, language: bool = False) -> ParsedMessage:
        """What ``parsers.parse(data, limits=limits)`` returns or raises, carrying its
        language (``routing.language.told``) if asked; a lost worker raises
        ParseWorkerLost."""
        if self._closing:
            raise ParseWorkerLost("the parse pool is closed")
        loop = asyncio.get_running_loop()
        job = _Job(bytes(data), limits, language, loop.create_future())
        self._waiting.append(job)
        self._dispatch()
        try:
            answer = await job.future
        except asyncio.CancelledError:
            self._given_up(job, loop.time())
            raise
        return _result(answer)

    async def warmed(self) -> None:
        """Until every worker started so far has loaded the language model (or failed
        to: its first message that needs it tries again); a pool without ``language``
        has nothing to wait for."""
        if self.language:
            await asyncio.gather(*(w.warm.wait() for w in self.workers if w.alive))

    async def close(self) -> None:
        """Stop every worker by its pid: stdin closed, then killed if it does not end."""
        self._closing = True
        for task in list(self._spawning):
            task.cancel()
        for task in list(self._spawning):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        while self._waiting:
            job = self._waiting.popleft()
            if not job.future.done():
                job.future.set_exception(ParseWorkerLost("the parse pool closed"))
        await asyncio.gather(*(self._stop(w) for w in self.workers), return_exceptions=True)
        self.workers.clear()

    # -- the workers ------------------------------------------------------------------------

    async def _spawn(self) -> _Worker:
        args = ["--language"] if self.language else []
        return _Worker(await workers.spawn("gateway.intake.parse_worker", *args))

    def _adopt(self, worker: _Worker) -> None:
        self.workers.append(worker)
        worker.reading = asyncio.create_task(self._read(worker), name=f"parse-worker-{worker.pid}")
        self._dispatch()

    async def _read(self, worker: _Worker) -> None:
        """Each answer to the oldest message sent; at the end of the pipe, the worker is dead."""
        try:
            while True:
                answer = await workers.read_frame(worker.proc)
                if answer[0] == "warm":  # not an answer: the model's load is done
                    if answer[2]:
                        log.error("parse_worker.language_failed", pid=worker.pid, error=answer[2])
                    worker.warm.set()
                    continue
                job = worker.held.popleft()
                worker.held_bytes -= len(job.data)
                if not job.future.done():
                    job.future.set_result(answer)
                self._dispatch()
        except workers.LOST:
            pass
        worker.alive = False
        if worker.proc.stdin is not None:
            worker.proc.stdin.close()
        lost = list(worker.held)
        worker.held.clear()
        for job in lost:
            if not job.future.done():
                job.future.set_exception(ParseWorkerLost(f"parse worker {worker.pid} died"))
        if self._closing:
            return
        code = await worker.proc.wait()
        log.warning("parse_worker.died", pid=worker.pid, returncode=code, messages_lost=len(lost))
        self.workers.remove(worker)
        task = asyncio.create_task(self._replace(), name="parse-worker-replace")
        self._spawning.add(task)
        task.add_done_callback(self._spawning.discard)

    async def _replace(self) -> None:
        worker = await workers.respawn(self._spawn, lambda: self._closing, "parse_worker")
        if worker is not None:
            self.replaced += 1
            log.info("parse_worker.replaced", pid=worker.pid)
            self._adopt(worker)

    async def _stop(self, worker: _Worker) -> None:
        worker.alive = False
        await workers.stop(worker.proc)
        if worker.reading is not None:
            worker.reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker.reading

    # -- the messages -----------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Waiting messages to the least busy live workers, as much as each may hold."""
        now = asyncio.get_running_loop().time()
        while self._waiting:
            live = [w for w in self.workers if w.has_room()]
            if not live:
                return
            job = self._waiting.popleft()
            if job.future.done():  # given up while it waited
                continue
            min(live, key=lambda w: len(w.held)).send(job, now)

    def _given_up(self, job: _Job, now: float) -> None:
        """A wait cancelled: drop the message if unsent; kill its worker if it is stuck."""
        worker = job.worker
        if worker is None:
            with contextlib.suppress(ValueError):
                self._waiting.remove(job)
            return
        stuck = job.sent_at is not None and now - job.sent_at >= STUCK
        head = worker.alive and worker.held and worker.held[0] is job
        if stuck and head and worker.proc.returncode is None:
            log.warning("parse_worker.stuck", pid=worker.pid, seconds=round(now - job.sent_at, 1))
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, 9)  # its reader sees the end of the pipe and replaces it


_REFUSALS: dict[str, type[parse_errors.ParseError]] = {
    name: cls
    for name in parse_errors.__all__
    if isinstance(cls := getattr(parse_errors, name), type)
    and issubclass(cls, parse_errors.ParseError)
}


def _result(answer: tuple[object, ...]) -> ParsedMessage:
    """The worker's answer as ``parse`` would have given it: the value, or its ParseError."""
    kind = answer[0]
    if kind == "ok" and isinstance(answer[1], ParsedMessage):
        return answer[1]
    if kind == "refused":
        raise _REFUSALS.get(str(answer[1]), parse_errors.Unreadable)(str(answer[2]))
    raise ParseWorkerLost(f"parse worker fault: {answer[1]}: {answer[2]}")


@contextlib.asynccontextmanager
async def parse_pool(size: int, *, language: bool = False) -> AsyncIterator[ParsePool | None]:
    """The daemon's pool for its lifetime; None (parse in the daemon) when ``size`` is 0."""
    if size < 1:
        yield None
        return
    pool = ParsePool(size, language=language)
    await pool.start()
    try:
        yield pool
    finally:
        await pool.close()
