"""The daemon's side of its worker processes: start, read, replace, stop (by pid).

Shared by the parse workers (gateway/intake/parse_pool.py) and the send worker
(gateway/sending/pool.py). A worker is a plain subprocess, ``python -m <module>``
of this checkout, on a pipe pair the event loop reads and writes without a
thread; it answers in frames (gateway/worker_io.py), the first ``("ready", pid)``.
What a worker's death means for the work it held is the pool's to say; here it
is only noticed (the end of the pipe) and a replacement started, with a backoff
when replacements die young.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import structlog

from gateway.worker_io import FRAME

__all__ = ["LOST", "read_frame", "respawn", "spawn", "state", "stop"]

log = structlog.get_logger("gateway.workers")
START_TIMEOUT = 60.0  # a worker's imports, on a loaded machine
_BACKOFF = (0.5, 30.0)  # between replacements of workers that die young
_CODE_ROOT = str(Path(__file__).resolve().parents[1])  # the checkout the daemon runs
# What reading a dead worker's pipe raises.
LOST = (asyncio.IncompleteReadError, ConnectionError, IndexError, pickle.PickleError)

T = TypeVar("T")


async def spawn(module: str, *args: str) -> asyncio.subprocess.Process:
    """The worker started and ready (its first frame said so), or an error."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_CODE_ROOT, env.get("PYTHONPATH", "")) if p)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=env,
        limit=1 << 20,
    )
    try:
        async with asyncio.timeout(START_TIMEOUT):
            first = await read_frame(proc)
        if first[0] != "ready":
            raise RuntimeError(f"{module} said {first[0]!r} first")
    except BaseException:
        await stop(proc)
        raise
    return proc


async def read_frame(proc: asyncio.subprocess.Process) -> tuple[object, ...]:
    """The worker's next answer; one of ``LOST`` at the end of its pipe."""
    stdout = proc.stdout
    assert stdout is not None
    (size,) = FRAME.unpack(await stdout.readexactly(FRAME.size))
    value = pickle.loads(await stdout.readexactly(size))
    assert isinstance(value, tuple)
    return value


async def stop(proc: asyncio.subprocess.Process, grace: float = 5.0) -> None:
    """Its stdin closed (it ends on its own), then killed by pid if it does not."""
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        async with asyncio.timeout(grace):
            await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, 9)
        await proc.wait()


def state(
    role: str, proc: asyncio.subprocess.Process | None, live: bool, in_flight: int, replaced: int
) -> dict[str, object]:
    """One worker as ``gateway status`` and ``/status`` show it (parse and send alike):
    an operator who sees intake or the outbox stall can tell a dead or busy worker."""
    return {
        "role": role,
        "pid": proc.pid if proc is not None else None,
        "alive": live and proc is not None and proc.returncode is None,
        "in_flight": in_flight,  # messages (parse) or mails (send) it holds unanswered
        "replaced": replaced,  # of its pool: workers started in place of dead ones
    }


async def respawn(
    start: Callable[[], Awaitable[T]], closing: Callable[[], bool], what: str
) -> T | None:
    """``start()`` again until it works (backing off) or the pool is ``closing``."""
    pause = _BACKOFF[0]
    while not closing():
        try:
            return await start()
        except Exception as exc:
            log.error(f"{what}.start_failed", error=repr(exc)[:200], retry_in=pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, _BACKOFF[1])
    return None
