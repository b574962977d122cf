"""Moving blobs to the store ``[gateway] blobs`` names, when it was changed.

Every start (like the migrations) brings over what the other store still
holds: after a switch to ``database`` the files under ``data_dir/blobs``
become rows, after a switch back the rows become files. Without it a switch
would leave old attachments unreadable, and an erasure or a purge unable to
delete blobs it no longer sees. Each blob is durable in its new place (a row
committed, a file fsynced) before it leaves the old one, so a crash midway
loses nothing and the next start finishes the move. When nothing is left to
move, this is a directory check or one indexed query.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import structlog
from sqlalchemy import delete, select
from sqlalchemy.engine import Connection

from store.blobs import FileBlobStore, Staged
from store.blobs_db import DatabaseBlobStore
from store.models import blobs
from store.writer import Writer

__all__ = ["files_to_rows", "rows_to_files"]

log = structlog.get_logger("store.blob_moves")
_BATCH_BYTES = 32 * 1024 * 1024  # per transaction: a few big mails or many small ones
_BATCH_ROWS = 16


async def files_to_rows(root: Path, writer: Writer, store: DatabaseBlobStore) -> int:
    """The file store's blobs under ``root`` as rows; each file goes once its row committed.
    A file whose bytes do not hash to its name is left where it is, and logged."""
    paths = await asyncio.to_thread(_blob_files, root)
    if not paths:
        return 0
    moved = 0
    batch: list[tuple[Path, bytes]] = []
    size = 0
    for i, path in enumerate(paths):
        data = await asyncio.to_thread(_read, path)
        if data is not None and hashlib.sha256(data).hexdigest() == path.name:
            batch.append((path, data))
            size += len(data)
        elif data is not None:
            log.warning("blobs.file_altered", path=str(path))
        if batch and (size >= _BATCH_BYTES or i == len(paths) - 1):
            rows = tuple(sorted({p.name: d for p, d in batch}.items()))
            staged = Staged(tuple(p.name for p, _ in batch), rows)
            await writer.submit(lambda conn, s=staged: store.bind(conn, s))
            await asyncio.to_thread(_unlink, [p for p, _ in batch])
            moved += len(batch)
            batch, size = [], 0
    await asyncio.to_thread(_remove_empty, root)
    if moved:
        log.info("blobs.moved", to="database", count=moved)
    return moved


async def rows_to_files(writer: Writer, store: FileBlobStore) -> int:
    """The database store's rows as files; each row goes once its file is fsynced."""
    engine = writer.engine

    def next_rows(after: str) -> list[tuple[str, bytes]]:
        with engine.connect() as conn:
            query = (
                select(blobs.c.sha256, blobs.c.data)
                .where(blobs.c.sha256 > after)
                .order_by(blobs.c.sha256)
                .limit(_BATCH_ROWS)
            )
            return [(str(s), bytes(d)) for s, d in conn.execute(query)]

    def put(rows: list[tuple[str, bytes]]) -> list[str]:
        written = []
        for sha, data in rows:
            if store.put(data) == sha:  # hashed again: a row must hold what it is named
                written.append(sha)
            else:
                log.warning("blobs.row_altered", sha256=sha)
        return written

    def drop(conn: Connection, shas: list[str]) -> None:
        conn.execute(delete(blobs).where(blobs.c.sha256.in_(shas)))

    moved, after = 0, ""
    while rows := await asyncio.to_thread(next_rows, after):
        written = await asyncio.to_thread(put, rows)
        await writer.submit(lambda conn, s=written: drop(conn, s))
        moved += len(written)
        after = rows[-1][0]
    if moved:
        log.info("blobs.moved", to="files", count=moved)
    return moved


def _blob_files(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("??/*") if not p.name.startswith(".tmp."))


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:  # another instance moving the same shared folder took it
        return None


def _unlink(paths: list[Path]) -> None:
    for p in paths:
        p.unlink(missing_ok=True)


def _remove_empty(root: Path) -> None:
    """The emptied folders go too: a data directory without ``blobs`` says which store is used."""
    for d in [*sorted(root.iterdir()), root]:
        try:
            d.rmdir()
        except OSError:  # not empty, not a folder, or gone already
            continue
