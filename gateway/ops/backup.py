"""``gateway backup``: one encrypted archive of everything the gateway keeps (database,
blobs, its own secrets), taken while the daemon runs; gateway/ops/restore.py is the way
back, gateway/ops/backup_stream.py the container (age) and backup_key.py the key.

Consistency: the database is copied as one committed state while the daemon goes
on writing: SQLite's online backup API, or on PostgreSQL ``pg_dump`` of an
exported snapshot (gateway/ops/backup_pg.py). Blobs are written and fsynced *before*
the commit that names them, so every blob the snapshot names already exists
when the snapshot is taken; the folder is copied after it, and the archive is
checked to hold every blob the snapshot names (a retention purge in between
would otherwise go unnoticed). Blobs written after the snapshot come along as
extras no row names; the orphan sweep removes them after a restore. With the
database blob store (``[gateway] blobs = "database"``) the blobs are rows inside
the snapshot itself: only the blobs named but kept as files are checked for.

The archive (``gateway-backup-<UTC time>.tar.age``) is a tar stream: ``archive.json``
(the engine, ``sqlite`` or ``postgresql``, and the time; an archive is restored only
into a config of the same engine), then ``gateway.db``, or on PostgreSQL
``manifest.json`` (counts and the blobs the dump names, so a restore is verified
before the database is touched) and the dump in ``database.pgdump/NNNNNN`` pieces,
then the data directory as ``data/...``.
"""

from __future__ import annotations

import io
import json
import os
import re
import sqlite3
import stat
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import make_url

from gateway.ops import backup_pg
from gateway.ops.backup_key import BackupKey, load_backup_key, new_key_file
from gateway.ops.backup_stream import sealed, write_meta
from gateway.ops.errors import (
    BackupError,
    BackupMisconfigured,
    NothingToRead,
    StoreUnavailable,
    TryAgain,
    WouldOverwrite,
)
from routing.config import GatewayConfig
from store.blobs import fsync_dir

__all__ = [
    "ARCHIVE_NAME",
    "BackupError",
    "BackupKey",
    "BackupResult",
    "list_backups",
    "load_backup_key",
    "make_backup",
    "new_key_file",
    "prune_backups",
]

#: ``.tar.age`` since the age format, ``.hgbk`` before (HGWBACKUP1); group 1 is the time.
ARCHIVE_NAME = re.compile(r"^gateway-backup-(\d{8}T\d{6}Z)\.(?:tar\.age|hgbk)$")
MANIFEST = "manifest.json"  # PostgreSQL archives: counts and the blobs the dump names
_SKIP = {"status.json", "status.tmp"}  # the daemon's live state, not data


def named_blobs(conn: sqlite3.Connection) -> set[str]:
    """Every blob a row names: each attachment, and each message's raw bytes unless a
    retention purge already let them go (``raw_purged_at``, where the schema has it)."""
    columns = {r[1] for r in conn.execute("PRAGMA table_info(messages)")}
    raw = "SELECT raw_sha256 FROM messages"
    if "raw_purged_at" in columns:
        raw += " WHERE raw_purged_at IS NULL"
    named = {r[0] for r in conn.execute(f"SELECT sha256 FROM attachments UNION {raw}")}
    return named - blob_rows(conn)


def blob_rows(conn: sqlite3.Connection) -> set[str]:
    """The blobs the database holds itself (``[gateway] blobs = "database"``): they travel
    inside the snapshot; none where the schema has no such table yet."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'blobs'").fetchone():
        return set()
    return {r[0] for r in conn.execute("SELECT sha256 FROM blobs")}


# --- backup ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackupResult:
    path: Path
    size: int
    tickets: int
    messages: int
    blobs: int
    key_id: str
    created_at: datetime
    engine: str = "sqlite"


ENGINES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


def store_engine(config: GatewayConfig) -> str:
    """The store's engine: it decides what the archive holds and where it may be restored."""
    name = make_url(config.database_url).get_backend_name()
    if name not in ENGINES:
        raise StoreUnavailable(f"gateway backup handles SQLite and PostgreSQL stores, not {name}")
    return name


def sqlite_path(config: GatewayConfig) -> Path:
    url = make_url(config.database_url)
    if not url.database:
        raise BackupMisconfigured("database_url names no SQLite file")
    return Path(url.database)


def make_backup(
    config: GatewayConfig,
    out_dir: Path,
    key: BackupKey,
    now: datetime,
    stop: threading.Event | None = None,
) -> BackupResult:
    """Write ``gateway-backup-<UTC time>.tar.age`` into ``out_dir``; return what it holds.

    ``stop`` lets a stopping daemon end a long copy early (the thread running it cannot
    be cancelled); the unfinished archive is then removed, as after any failure."""
    engine = store_engine(config)
    db = sqlite_path(config) if engine == "sqlite" else None
    if db is not None and not db.exists():
        raise NothingToRead(f"no database at {db}")
    data_dir = config.data_dir.resolve()
    out_dir = out_dir.resolve()
    if out_dir.is_relative_to(data_dir):
        raise WouldOverwrite(f"{out_dir}: backups must be written outside the data directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    final = out_dir / f"gateway-backup-{stamp}.tar.age"
    part = out_dir / f".{final.name}.part"
    meta = {"created": now.astimezone(UTC).isoformat(), "engine": engine, "format": "tar", "v": 2}
    try:
        with (
            tempfile.TemporaryDirectory(prefix="gw-backup-") as tmp,
            open(part, "wb") as f,
            sealed(f, key) as plain,
            tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar,
        ):
            write_meta(tar, meta)
            if db is not None:
                named, rows, tickets, messages = _sqlite_into(tar, db, Path(tmp))
            else:
                named, rows, tickets, messages = _postgresql_into(tar, config, stop)
            # The folder is copied after the snapshot: see the module docstring.
            blobs = _add_data_dir(tar, data_dir, out_dir, _sqlite_files(db), stop)
        with open(part, "rb") as f:
            os.fsync(f.fileno())
        missing = named - blobs
        if missing:
            raise BackupError(
                f"{len(missing)} blobs named by the database are missing from the data "
                f"directory (first: {sorted(missing)[0]}); the backup was not kept",
            )
        os.replace(part, final)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    fsync_dir(out_dir)
    return BackupResult(
        path=final,
        size=final.stat().st_size,
        tickets=tickets,
        messages=messages,
        blobs=len(blobs) + rows,
        key_id=key.recipient,
        created_at=now,
        engine=engine,
    )


def _sqlite_into(tar: tarfile.TarFile, db: Path, tmp: Path) -> tuple[set[str], int, int, int]:
    """SQLite's online backup into a temporary file, added as ``gateway.db``; the blobs
    named that must come as files, how many are rows, and the counts."""
    snap = tmp / "gateway.db"
    src = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    dst = sqlite3.connect(snap)
    try:
        src.backup(dst)  # the online backup API: one consistent committed state
    finally:
        src.close()
    try:
        named, rows = named_blobs(dst), len(blob_rows(dst))
        tickets = dst.execute("SELECT count(*) FROM tickets").fetchone()[0]
        messages = dst.execute("SELECT count(*) FROM messages").fetchone()[0]
    finally:
        dst.close()
    tar.add(snap, arcname="gateway.db")
    return named, rows, tickets, messages


def _postgresql_into(
    tar: tarfile.TarFile, config: GatewayConfig, stop: threading.Event | None
) -> tuple[set[str], int, int, int]:
    """The manifest, then pg_dump of the same exported snapshot, streamed."""
    lp = backup_pg.libpq(config.database_url)
    with backup_pg.exported_snapshot(lp) as snap:
        manifest = {
            "engine": "postgresql",
            "server_version": snap.server_version,
            "tickets": snap.tickets,
            "messages": snap.messages,
            "named_blobs": sorted(snap.named),
            "blob_rows": snap.rows,
        }
        body = json.dumps(manifest).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mode = len(body), 0o600
        tar.addfile(info, io.BytesIO(body))
        backup_pg.dump_into(tar, lp, snap.id, stop)
    return snap.named, snap.rows, snap.tickets, snap.messages


def _sqlite_files(db: Path | None) -> set[Path]:
    """The live SQLite database and its journals: copied by the backup API, never as files."""
    if db is None:
        return set()
    return {
        db.resolve(),
        *(db.with_name(db.name + s).resolve() for s in ("-wal", "-shm", "-journal")),
    }


def _add_data_dir(
    tar: tarfile.TarFile,
    data_dir: Path,
    out_dir: Path,
    skip: set[Path],
    stop: threading.Event | None,
) -> set[str]:
    """Copy the data directory (blob folder, secret.key, keys.toml, reports) as
    ``data/...``; return the blob names copied. The one place the blob folder is
    read: a store that keeps blobs elsewhere changes this function only."""
    blobs: set[str] = set()
    for path in _data_files(data_dir, skip, out_dir):
        if stop is not None and stop.is_set():
            raise TryAgain("the backup was cancelled (the daemon is stopping)")
        rel = path.relative_to(data_dir)
        try:
            tar.add(path, arcname=f"data/{rel.as_posix()}", recursive=False)
        except FileNotFoundError:  # deleted since the listing (a purge): the check says if
            continue  # the snapshot still names it
        if rel.parts[0] == "blobs" and len(rel.parts) == 3:
            blobs.add(rel.parts[2])
    return blobs


def _data_files(data_dir: Path, skip: set[Path], out_dir: Path) -> Iterator[Path]:
    """Every regular file of the data directory but ``skip`` and the daemon's state."""
    for root, dirs, files in os.walk(data_dir):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if not (here / d).resolve().is_relative_to(out_dir))
        for name in sorted(files):
            p = here / name
            if (
                p.resolve() in skip
                or name in _SKIP
                or name.startswith(".tmp.")
                or name.endswith(".tmp")
            ):
                continue
            try:
                regular = stat.S_ISREG(p.lstat().st_mode)
            except FileNotFoundError:
                continue
            if regular:
                yield p


def list_backups(folder: Path) -> list[Path]:
    """Our archives in a folder, of either format, oldest first (the name carries the UTC time)."""
    if not folder.is_dir():
        return []
    found = {p: ARCHIVE_NAME.match(p.name) for p in folder.iterdir()}
    return sorted((p for p, m in found.items() if m), key=lambda p: (found[p].group(1), p.name))  # type: ignore[union-attr]


def prune_backups(folder: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` archives; return what was deleted."""
    archives = list_backups(folder)
    gone = archives[: max(0, len(archives) - keep)]
    for p in gone:
        p.unlink(missing_ok=True)
    return gone
