"""Where raw mail and attachments live: rows of the database (the default,
store/blobs_db.py) or files under the data directory (``[gateway] blobs = "files"``).

Both keep the promise "accepted means committed" (docs/security.md) needs: a blob is
durable before, or atomically with, the commit that names it. A writer
therefore uses two steps. ``stage`` runs before the transaction, on the event
loop's side, and may take time (the file store writes and fsyncs here);
``bind`` runs inside the writer's transaction that names the blobs (the file
store checks that a collection did not remove one meanwhile, the database
store inserts them in that very transaction).

The file store: a blob is written to a temp file, fsynced, renamed into place
and its directory fsynced *before* the transaction that names it commits: the
row is the END record (Postfix), so a crash leaves at worst an unnamed blob,
which a sweep removes, never a row pointing at nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sqlalchemy.engine import Connection

from store.errors import StoreUnavailable
from store.faults import AFTER_BLOB_FSYNC, crash_point

__all__ = ["BlobStore", "FileBlobStore", "Staged", "fsync_dir"]


@dataclass(frozen=True, slots=True)
class Staged:
    """Blobs made ready for the transaction that will name them.

    ``rows`` is what that transaction still has to write (the database store),
    one per distinct hash, ordered by hash so that two transactions lock rows
    in the same order; the file store has written everything already.
    """

    shas: tuple[str, ...]
    rows: tuple[tuple[str, bytes], ...] = ()


class BlobStore(Protocol):
    """What callers type against; ``FileBlobStore`` or ``DatabaseBlobStore``.

    A blob is content-addressed and shared by every tenant and message naming
    its hash, so none of these methods takes a tenant: whoever reads one must
    first have found a row of the reader's tenant that names it.
    """

    async def stage(self, items: Sequence[bytes], shas: Sequence[str] | None = None) -> Staged:
        """Before the transaction: make ``items`` ready, in order, identical ones once.
        ``shas``: their hashes when the caller has them already (the pipeline hashed the
        raw message for its dedupe key, the parser each attachment), else taken here:
        hashing a 25 MB message costs ~60 ms of CPU, so it is done once."""
        ...

    def bind(self, conn: Connection, staged: Staged) -> None:
        """Inside the transaction that names ``staged``: after it commits they are there."""
        ...

    def get(self, sha256: str) -> bytes | None:
        """The bytes, or None; blocking (call it off the event loop)."""
        ...

    def file(self, sha256: str) -> Path | None:
        """The file that holds the blob, to serve as it is; None if there is none."""
        ...

    def hold(self, conn: Connection, shas: set[str]) -> set[str]:
        """Inside a collection's transaction: keep these from being bound by another
        transaction until this one ends; return the ones it may delete."""
        ...

    def orphans(self, conn: Connection, older_than: float) -> set[str]:
        """Blobs stored before ``older_than`` (a Unix time) that may be named by no row."""
        ...

    def delete(self, conn: Connection, shas: Iterable[str]) -> None:
        """Remove these blobs (the caller checked no row names them)."""
        ...


class FileBlobStore:
    """Files under ``root``: the default, and the fastest on one machine."""

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

    async def put_many(
        self, items: Iterable[bytes], shas: Sequence[str] | None = None
    ) -> list[str]:
        """Write off the event loop: fsync may take milliseconds on real disks."""
        data = list(items)
        known: Sequence[str | None] = [None] * len(data) if shas is None else shas

        def work() -> list[str]:
            out = [self.put(d, sha) for d, sha in zip(data, known, strict=True)]
            crash_point(AFTER_BLOB_FSYNC)
            return out

        return await asyncio.to_thread(work)

    async def stage(self, items: Sequence[bytes], shas: Sequence[str] | None = None) -> Staged:
        return Staged(tuple(await self.put_many(items, shas)))

    def bind(self, conn: Connection, staged: Staged) -> None:
        # A purge may have collected an identical blob between our write and this
        # lock (store/retention.py); answer 451 and the retry writes it again.
        if not all(self.exists(sha) for sha in staged.shas):
            raise StoreUnavailable("a blob was collected before its commit")

    def get(self, sha256: str) -> bytes | None:
        try:
            return self.read(sha256)
        except FileNotFoundError:
            return None

    def file(self, sha256: str) -> Path | None:
        path = self.path(sha256)
        return path if path.is_file() else None

    def hold(self, conn: Connection, shas: set[str]) -> set[str]:
        # A file cannot be locked; the write lock the collection runs under and
        # ``bind``'s check inside the committing transaction keep them apart.
        return set(shas)

    def orphans(self, conn: Connection, older_than: float) -> set[str]:
        found: set[str] = set()
        for p in self.root.glob("??/*"):
            try:
                old = p.stat().st_mtime < older_than
            except FileNotFoundError:
                continue
            if old and p.name.startswith(".tmp."):
                p.unlink(missing_ok=True)  # a write that never finished
            elif old:
                found.add(p.name)
        return found

    def delete(self, conn: Connection, shas: Iterable[str]) -> None:
        for sha in shas:
            self.path(sha).unlink(missing_ok=True)

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
