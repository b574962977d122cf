"""The daemon's long-running services, in one ``asyncio.TaskGroup``, each watched.

A service is a coroutine that should run until it is cancelled: the outbox
delivery, the scanner probe, each leased duty (a mailbox's poller, the
periodic jobs), the status file, the config watch. Each already survives its
own faults (a store that is down, a dead IMAP session); reaching the end, or
an exception escaping, is a bug. The supervisor logs it (``service.died`` with
the traceback, or ``service.ended``) and applies the service's policy:

- ``RESTART``: run it again after a pause that doubles from ``backoff[0]`` up to
  ``backoff[1]`` (and starts small again once a run lasted longer than that), for
  services whose state lives in the store or in memory that a new run rebuilds;
- ``STOP``: stop the whole daemon with ``EX_SOFTWARE`` (70), for a service
  without which the daemon must not go on (the instance lease: restarted blindly,
  it could wait while another gateway takes the name we still act under). The
  daemon then stops cleanly, intake first, and systemd's ``Restart=on-failure``
  starts a fresh process.

Leaving the supervisor (``async with``) cancels every service and waits until
each has finished its own clean-up (a leased duty releases its lease), so
nothing outlives the block; services stopped earlier (a mailbox removed by a
reload) are awaited too. An exception that escapes the watching itself (a
``BaseException``) cancels the others and propagates, as a TaskGroup does.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType

import structlog

__all__ = ["Policy", "Supervisor"]

log = structlog.get_logger("gateway.daemon")


class Policy(enum.Enum):
    RESTART = "restart"
    STOP = "stop"


@dataclass
class _Record:
    """What ``gateway status`` shows of a service: how often it was restarted, and why."""

    policy: Policy
    restarts: int = 0
    last_error: str | None = None


class Supervisor:
    def __init__(
        self, on_stop: Callable[[str], None], *, backoff: tuple[float, float] = (1.0, 60.0)
    ) -> None:
        """``on_stop(name)`` is called when a ``STOP`` service ends or dies."""
        self._on_stop = on_stop
        self._backoff = backoff
        self._group = asyncio.TaskGroup()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._records: dict[str, _Record] = {}

    async def __aenter__(self) -> Supervisor:
        await self._group.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()
        await self._group.__aexit__(exc_type, exc, tb)

    def start(
        self, name: str, run: Callable[[], Awaitable[None]], policy: Policy = Policy.RESTART
    ) -> None:
        """Run ``run()`` as the service ``name`` (a name in use is an error)."""
        if name in self._tasks:
            raise ValueError(f"service {name!r} is already running")
        self._records[name] = _Record(policy)
        self._tasks[name] = self._group.create_task(self._watch(name, run, policy), name=name)

    def stop(self, name: str) -> None:
        """Cancel one service; leaving the supervisor still waits for its clean-up."""
        task = self._tasks.pop(name, None)
        self._records.pop(name, None)
        if task is not None:
            task.cancel()

    def names(self) -> list[str]:
        return list(self._tasks)

    def state(self) -> dict[str, dict[str, object]]:
        return {
            name: {"policy": r.policy.value, "restarts": r.restarts, "last_error": r.last_error}
            for name, r in self._records.items()
        }

    async def _watch(self, name: str, run: Callable[[], Awaitable[None]], policy: Policy) -> None:
        first, most = self._backoff
        pause = first
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            try:
                await run()
            except Exception as exc:  # CancelledError is a BaseException: it leaves
                error = f"{type(exc).__name__}: {exc}"[:500]
                log.error("service.died", service=name, policy=policy.value, exc_info=True)
            else:
                error = "ended"
                log.error("service.ended", service=name, policy=policy.value)
            record = self._records.get(name)
            if record is not None:
                record.last_error = error
            if policy is Policy.STOP:
                self._on_stop(name)
                return
            if loop.time() - began > most:
                pause = first  # it ran well for a while: this is a new fault, not a loop
            log.info("service.restarting", service=name, seconds=pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, most)
            if record is not None:
                record.restarts += 1
