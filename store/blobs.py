"""Content-addressed files under the data directory.

A blob is written to a temp file, fsynced, renamed into place and its
directory fsynced *before* the transaction that names it commits: the row is
the END record (Postfix), so a crash leaves at worst an unnamed blob, which
a sweep removes, never a row pointing at nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from store.faults import crash_point

__all__ = ["BlobStore", "fsync_dir"]


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str) -> Path:
        # One level of 256 folders: a second level (65,536) made almost every new
        # blob create and fsync a folder of its own for the first 100k messages.
        return self.root / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).exists()

    def read(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()

    def put(self, data: bytes, sha256: str | None = None) -> str:
        """Store bytes durably; identical content is stored once."""
        digest = sha256 or hashlib.sha256(data).hexdigest()
        final = self.path(digest)
        if final.exists():
            return digest
        made = _makedirs(final.parent)
        tmp = final.parent / f".tmp.{digest}.{os.getpid()}.{id(data)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        for d in [final.parent, *made]:
            fsync_dir(d)
        return digest

    async def put_many(self, items: Iterable[bytes]) -> list[str]:
        """Write off the event loop: fsync may take milliseconds on real disks."""
        data = list(items)

        def work() -> list[str]:
            out = [self.put(d) for d in data]
            crash_point("after_blob_fsync")
            return out

        return await asyncio.to_thread(work)

    def sweep(self, named: set[str]) -> int:
        """Delete blobs no row names (left by a crash before commit)."""
        removed = 0
        for p in self.root.glob("??/*"):
            if p.name.startswith(".tmp.") or p.name not in named:
                p.unlink(missing_ok=True)
                removed += 1
        return removed


def _makedirs(path: Path) -> list[Path]:
    """Create missing directories; return the parents whose entries changed."""
    changed: list[Path] = []
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue
        changed.append(d.parent)
    return changed


def fsync_dir(path: Path) -> None:
    """Make a new or renamed entry in ``path`` durable (a file's own fsync does not)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
