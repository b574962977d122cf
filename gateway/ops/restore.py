"""``gateway restore``: an archive of either format (age, or HGWBACKUP1 from before it)
back into an empty data directory and database, verified before anything is placed."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gateway.ops import backup_pg
from gateway.ops.backup import (
    ENGINES,
    MANIFEST,
    blob_rows,
    named_blobs,
    sqlite_path,
    store_engine,
)
from gateway.ops.backup_key import BackupKey
from gateway.ops.backup_stream import META, archive_meta, plaintext
from gateway.ops.errors import ArchiveDamaged, BackupError, BackupMisconfigured, WouldOverwrite
from routing.config import GatewayConfig

__all__ = ["RestoreResult", "restore"]

CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class RestoreResult:
    database: str  # the SQLite file, or host:port/dbname
    data_dir: Path
    tickets: int
    messages: int
    blobs: int
    created: str
    engine: str = "sqlite"


def restore(config: GatewayConfig, archive: Path, key: BackupKey) -> RestoreResult:
    """Unpack into the configured empty data directory and database, verified first.

    SQLite: no database file at the configured path; the integrity check, every blob
    a row names present and every blob's hash, before anything is moved into place.
    PostgreSQL: no other session on the database and no tickets in it; the blobs
    checked against the manifest, then pg_restore (all or nothing), then the restored
    counts against the manifest, then the data directory."""
    engine = store_engine(config)
    head = archive_meta(archive, key)  # proves the key before anything is written
    made = str(head.get("engine", "sqlite"))  # archives before PostgreSQL were all SQLite
    if made != engine:
        raise BackupMisconfigured(
            f"{archive.name} holds a {ENGINES.get(made, made)} database but database_url "
            f"names {ENGINES[engine]}: restore it with a config for {ENGINES.get(made, made)}",
        )
    db = sqlite_path(config) if engine == "sqlite" else None
    lp = backup_pg.libpq(config.database_url) if db is None else None
    if db is not None and db.exists():
        raise WouldOverwrite(f"{db} exists: restore never overwrites a database")
    data_dir = config.data_dir
    if not _empty(data_dir):
        raise WouldOverwrite(f"{data_dir} is not empty: restore only into an empty data directory")
    if lp is not None:
        backup_pg.check_target(lp)
    data_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".restore-", dir=data_dir))
    try:
        _unpack(archive, key, staging)
        if db is not None:
            snap = staging / "gateway.db"
            if not snap.is_file():
                raise ArchiveDamaged("the archive holds no database")
            tickets, messages, blobs = _verify(snap, staging / "data" / "blobs")
            _place(staging / "data", data_dir)
            db.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(snap, db)
            where = str(db)
        else:
            assert lp is not None
            tickets, messages, blobs = _restore_postgresql(lp, staging)
            _place(staging / "data", data_dir)
            where = lp.label
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return RestoreResult(
        where, data_dir, tickets, messages, blobs, str(head.get("created", "")), engine
    )


def _empty(data_dir: Path) -> bool:
    """Nothing but empty folders (a shared blob folder's mount point) and the fresh
    reply-token secret loading the config made: it guards nothing yet, the archive's
    replaces it."""
    if not data_dir.exists():
        return True
    fresh = data_dir / "secret.key"
    for p in data_dir.iterdir():
        if p == fresh or (p.is_dir() and not p.is_symlink() and not any(p.iterdir())):
            continue
        return False
    return True


def _unpack(archive: Path, key: BackupKey, staging: Path) -> None:
    """Decrypt and unpack into ``staging``; the dump's pieces are joined into one file
    (pg_restore wants a seekable file). Every chunk is authenticated before use."""
    try:
        with plaintext(archive, key) as stream:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                _extract(tar, staging)
            while stream.read(CHUNK):  # past the tar's end too: every chunk authenticated
                pass
    except tarfile.TarError as exc:
        raise ArchiveDamaged(f"the archive's contents are damaged: {exc}") from None


def _extract(tar: tarfile.TarFile, staging: Path) -> None:
    """Every member into ``staging``, the dump's pieces joined into one file."""
    dump = None
    n = 0
    try:
        for member in tar:
            if member.name == META:
                continue
            if not member.name.startswith(f"{backup_pg.DUMP_MEMBER}/"):
                tar.extract(member, staging, filter="data")
                continue
            if member.name != f"{backup_pg.DUMP_MEMBER}/{n:06d}" or not member.isfile():
                raise ArchiveDamaged(f"the archive's dump is out of order ({member.name})")
            if dump is None:
                dump = open(staging / backup_pg.DUMP_MEMBER, "wb")
            piece = tar.extractfile(member)
            assert piece is not None
            shutil.copyfileobj(piece, dump, CHUNK)
            n += 1
    finally:
        if dump is not None:
            dump.close()


def _restore_postgresql(lp: backup_pg.Libpq, staging: Path) -> tuple[int, int, int]:
    try:
        manifest = json.loads((staging / MANIFEST).read_bytes())
        named = set(manifest["named_blobs"])
        expected = (int(manifest["tickets"]), int(manifest["messages"]))
    except (OSError, ValueError, KeyError, TypeError):
        raise ArchiveDamaged("the archive holds no readable manifest") from None
    dump = staging / backup_pg.DUMP_MEMBER
    if not dump.is_file():
        raise ArchiveDamaged("the archive holds no database dump")
    blobs = _check_blobs(named, staging / "data" / "blobs")
    backup_pg.check_target(lp)  # again: unpacking a large archive takes a while
    backup_pg.pg_restore(lp, dump)
    backup_pg.resync_numbers(lp)
    tickets, messages, restored = backup_pg.counts(lp)
    if (tickets, messages) != expected or restored != named:
        raise BackupError(
            f"the restored database ({tickets} tickets, {messages} messages, {len(restored)} "
            f"blobs named) differs from the archive's manifest ({expected[0]} tickets, "
            f"{expected[1]} messages, {len(named)} blobs); the data directory was not written",
        )
    return tickets, messages, blobs + int(manifest.get("blob_rows", 0))


def _place(src: Path, dst: Path) -> None:
    """Move the archive's data files in (secret.key included: old reply tokens stay
    valid). Into an existing folder, such as a shared blob folder's mount point, entry
    by entry; shutil.move copies where a rename cannot cross file systems."""
    if not src.is_dir():
        return
    dst.mkdir(parents=True, exist_ok=True)
    for item in sorted(src.iterdir()):
        target = dst / item.name
        if item.is_dir() and target.is_dir():
            _place(item, target)
        else:
            shutil.move(item, target)


def _verify(db: Path, blobs: Path) -> tuple[int, int, int]:
    conn = sqlite3.connect(db)
    try:
        ok = conn.execute("PRAGMA integrity_check").fetchone()[0]
        if ok != "ok":
            raise ArchiveDamaged(f"the restored database fails its integrity check: {ok}")
        named = named_blobs(conn)
        tickets = conn.execute("SELECT count(*) FROM tickets").fetchone()[0]
        messages = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
        rows = 0
        for sha, data in conn.execute("SELECT sha256, data FROM blobs") if blob_rows(conn) else ():
            if hashlib.sha256(data).hexdigest() != sha:  # content-addressed, as files are
                raise ArchiveDamaged(f"blob {sha} was altered (its bytes hash otherwise)")
            rows += 1
    finally:
        conn.close()
    return tickets, messages, _check_blobs(named, blobs) + rows


def _check_blobs(named: set[str], blobs: Path) -> int:
    """Every named blob present, every blob's bytes hashing to its name; how many."""
    for sha in sorted(named):
        if not (blobs / sha[:2] / sha).is_file():
            raise ArchiveDamaged(f"blob {sha} is named by the database but not in the archive")
    files = sorted(blobs.glob("??/*")) if blobs.is_dir() else []
    for p in files:  # content-addressed: a blob's name is the hash of its bytes
        if _sha256(p) != p.name:
            raise ArchiveDamaged(f"blob {p.name} was altered (its bytes hash otherwise)")
    return len(files)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()
