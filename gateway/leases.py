"""Run a duty only while this instance holds its lease (store/leases.py says why).

``hold(...)`` loops forever: it waits until the lease is free (another
instance's ran out, or was released), starts the duty, renews the lease every
third of its length, and cancels the duty the moment renewal fails for long
enough that the lease may have passed on: two instances must never poll one
mailbox or run one job at the same time for longer than the clocks disagree.
On cancellation (a clean stop) it releases the lease, so a peer takes over
at once rather than after it runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable

import structlog

from store import leases
from store.repos import now
from store.writer import Writer

__all__ = ["hold"]

log = structlog.get_logger("gateway.leases")


async def hold(
    writer: Writer,
    name: str,
    holder: str,
    ttl: float,
    duty: Callable[[], Awaitable[None]],
) -> None:
    """Run ``duty()`` whenever ``holder`` holds lease ``name``; only CancelledError leaves."""
    beat = ttl / 3
    while True:
        if not await _acquire(writer, name, holder, ttl):
            await asyncio.sleep(beat * random.uniform(0.8, 1.2))
            continue
        log.info("lease.taken", lease=name, holder=holder)
        task = asyncio.create_task(duty(), name=f"duty:{name}")
        renewed = asyncio.get_running_loop().time()
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=beat)
                if task.done():
                    break
                if await _acquire(writer, name, holder, ttl):
                    renewed = asyncio.get_running_loop().time()
                elif asyncio.get_running_loop().time() - renewed > ttl - beat:
                    # Lost, or the store was unreachable so long that it may be: stop
                    # before the lease can have passed to someone else.
                    log.warning("lease.lost", lease=name, holder=holder)
                    break
        except asyncio.CancelledError:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await writer.submit(lambda conn: leases.release(conn, name, holder))
            raise
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        if not task.cancelled() and task.exception() is not None:
            log.warning("lease.duty_failed", lease=name, error=type(task.exception()).__name__)
        await asyncio.sleep(beat * random.uniform(0.8, 1.2))


async def _acquire(writer: Writer, name: str, holder: str, ttl: float) -> bool:
    try:
        return bool(
            await writer.submit(lambda conn: leases.acquire(conn, name, holder, now(), ttl))
        )
    except Exception as exc:  # the store is busy or down: not held, try again
        log.warning("lease.check_failed", lease=name, error=type(exc).__name__)
        return False
