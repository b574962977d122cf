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
import os
import random
import secrets
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import structlog

from store import leases
from store.repos import now
from store.writer import Writer

__all__ = ["InstanceInUse", "claim_instance", "hold"]

log = structlog.get_logger("gateway.ops.instance")


async def hold(
    writer: Writer,
    name: str,
    holder: str,
    ttl: float,
    duty: Callable[[], Awaitable[None]],
) -> None:
    """Run ``duty()`` whenever ``holder`` holds lease ``name``; only CancelledError leaves.

    The lease is released however the cancellation finds us (even inside the first
    check, or between checks), so a clean stop always frees the name at once."""
    try:
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
                raise
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            failed = None if task.cancelled() else task.exception()
            if failed is not None:
                log.warning("lease.duty_failed", lease=name, error=type(failed).__name__)
            await asyncio.sleep(beat * random.uniform(0.8, 1.2))
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await writer.submit(lambda conn, gone=holder: leases.release(conn, name, gone))
        raise


async def _acquire(writer: Writer, name: str, holder: str, ttl: float) -> bool:
    try:
        return bool(
            await writer.submit(lambda conn: leases.acquire(conn, name, holder, now(), ttl))
        )
    except Exception as exc:  # the store is busy or down: not held, try again
        log.warning("lease.check_failed", lease=name, error=type(exc).__name__)
        return False


class InstanceInUse(Exception):
    """Another live gateway runs under this ``[gateway] instance`` name."""


def _me() -> str:
    # host:pid:nonce -- the nonce tells a restarted process from its predecessor
    # even when the pid is reused.
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{secrets.token_hex(4)}"


def _pid_here(holder: str) -> int | None:
    """The pid of ``holder`` if it names a process on this host, else None."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname()[:80] or not pid_text.isdigit():
        return None
    return int(pid_text)


def _process(pid: int) -> str:
    """What runs as ``pid`` on this host: "gone" (it can be replaced at once),
    "gateway" (a live gateway: refuse at once), or "other" (a reused pid, or a
    process we may not inspect: only waiting out the lease can tell)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "gone"
    except OSError:  # alive, another user's
        pass
    try:  # a zombie (exited, not yet reaped by its parent) answers signal 0 too
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "other"
    if stat.rpartition(")")[2].split()[:1] == ["Z"]:
        return "gone"
    return "gateway" if b"gateway" in cmdline else "other"


async def claim_instance(writer: Writer, instance: str, ttl: float) -> tuple[str, str]:
    """Make sure no other live gateway uses ``instance``, before this one releases the
    name's outbox claims and takes its leases; return (lease name, holder) to keep
    renewing with :func:`hold`.

    Two live instances under one name would release each other's claims and share
    leases, so each running gateway holds the lease ``instance:<name>``. The holder
    is ``host:pid:nonce``, so on its own host the answer is at hand: a predecessor
    whose pid is gone (a crash, ``systemctl restart``) is replaced at once, and a
    gateway still running there is refused at once, naming its pid. A holder on
    another host is waited out for one lease; if its lease is renewed meanwhile,
    it is alive and we refuse to start.
    """
    name, me = f"instance:{instance}", _me()
    seen: datetime | None = None
    while True:
        if await writer.submit(lambda conn: leases.acquire(conn, name, me, now(), ttl)):
            return name, me
        held = await writer.submit(lambda conn: leases.holder_of(conn, name))
        if held is None:
            continue
        holder, until = held
        until = until.replace(tzinfo=UTC) if until.tzinfo is None else until
        pid = _pid_here(holder)
        found = _process(pid) if pid is not None else "elsewhere"
        if found == "gone":
            log.info("instance.replacing", instance=instance, previous=holder)
            await writer.submit(lambda conn, gone=holder: leases.release(conn, name, gone))
            continue
        if found == "gateway":
            raise InstanceInUse(
                f"[gateway] instance {instance!r} is in use: a gateway is already running "
                f"on this host as pid {pid}; stop it first, or give each instance its own name"
            )
        if seen is not None and until > seen:
            raise InstanceInUse(
                f"[gateway] instance {instance!r} is in use by a running gateway "
                f"({holder}); give each instance its own name"
            )
        seen = until
        wait = max(0.0, (until - datetime.now(UTC)).total_seconds()) + 0.5
        log.warning("instance.waiting", instance=instance, holder=holder, seconds=round(wait, 1))
        await asyncio.sleep(wait)
