"""The daemon's two files besides the store: the status it writes, the config it watches."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import structlog

__all__ = ["digest", "watch_file", "write_status"]

log = structlog.get_logger("gateway.daemon")


async def write_status(path: Path, snapshot: Callable[[], dict[str, object]]) -> None:
    """The daemon's state for ``gateway status`` (another process): a file, renamed in whole."""
    tmp = path.with_suffix(".tmp")
    while True:
        try:
            tmp.write_text(json.dumps(snapshot(), indent=1), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("status.write_failed", error=str(exc))
        await asyncio.sleep(1.0)


def digest(path: Path) -> str:
    """The file's SHA-256, or "" if it cannot be read: a reload compares it to skip a touch."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""


async def watch_file(path: Path, on_change: Callable[[], None], debounce_ms: int = 500) -> None:
    """Call ``on_change`` when the file changes, debounced: an editor's save is often
    several writes and a rename, and one reload should follow it, not three.

    The folder is watched, not the file, because a save by rename replaces the
    inode a file watch would hold. Where inotify is unavailable we poll.
    """
    from watchfiles import awatch

    name = path.name

    def only_ours(_change: object, changed: str) -> bool:
        return Path(changed).name == name

    for force_polling in (False, True):
        try:
            on_change()  # a change made while the watch was being set up
            # Every 2 s without an event we yield anyway and on_change compares the
            # file's digest: a safety net for events the kernel did not deliver.
            async for _ in awatch(
                path.parent,
                watch_filter=only_ours,
                debounce=debounce_ms,
                recursive=False,
                force_polling=force_polling,
                poll_delay_ms=500,
                rust_timeout=2000,
                yield_on_timeout=True,
            ):
                on_change()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # no inotify here: fall back to polling, once
            log.warning("config.watch_failed", error=f"{type(exc).__name__}: {exc}")
