"""``gateway backup`` and ``gateway restore``: one encrypted archive of everything the
gateway keeps (database, blobs, its own secrets), and the way back.

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

The header records the engine (``"engine"``: ``sqlite``, the default of older
archives, or ``postgresql``); an archive is restored only into a config of the
same engine. A PostgreSQL archive holds ``manifest.json`` (counts and the
blobs the dump names, so a restore is verified before the database is touched),
then the dump in ``database.pgdump/NNNNNN`` pieces, then the data directory.

Encryption: AES-256-GCM in 1 MiB chunks (the STREAM construction: a random
nonce prefix, a chunk counter and a last-chunk flag in each nonce, the header
as associated data), so an archive of any size is encrypted as it is written,
and a truncated, reordered or altered archive fails instead of restoring half.
The key (32 random bytes) comes from ``[backup] key_file`` or
``$GATEWAY_BACKUP_KEY``, never from beside the archive; the header carries only
a key id (an HMAC of a constant), so a wrong key is named as such.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import json
import os
import re
import shutil
import sqlite3
import stat
import struct
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.engine import make_url

from gateway.ops import backup_pg
from gateway.ops.errors import (
    ArchiveDamaged,
    BackupError,
    BackupMisconfigured,
    NothingToRead,
    StoreUnavailable,
    TryAgain,
    WouldOverwrite,
    WrongKey,
)
from routing.config import GatewayConfig
from routing.ops_config import BACKUP_KEY_ENV
from store.blobs import fsync_dir

__all__ = [
    "ARCHIVE_NAME",
    "BackupError",
    "BackupResult",
    "RestoreResult",
    "archive_stream",
    "key_id",
    "list_backups",
    "load_backup_key",
    "make_backup",
    "new_key_file",
    "prune_backups",
    "restore",
]

MAGIC = b"HGWBACKUP1\n"
CHUNK = 1 << 20
KEY_BYTES = 32
ARCHIVE_NAME = re.compile(r"^gateway-backup-(\d{8}T\d{6}Z)\.hgbk$")
MANIFEST = "manifest.json"  # PostgreSQL archives: counts and the blobs the dump names
_SKIP = {"status.json", "status.tmp"}  # the daemon's live state, not data


def _named(conn: sqlite3.Connection) -> set[str]:
    """Every blob a row names: each attachment, and each message's raw bytes unless a
    retention purge already let them go (``raw_purged_at``, where the schema has it)."""
    columns = {r[1] for r in conn.execute("PRAGMA table_info(messages)")}
    raw = "SELECT raw_sha256 FROM messages"
    if "raw_purged_at" in columns:
        raw += " WHERE raw_purged_at IS NULL"
    named = {r[0] for r in conn.execute(f"SELECT sha256 FROM attachments UNION {raw}")}
    return named - _blob_rows(conn)


def _blob_rows(conn: sqlite3.Connection) -> set[str]:
    """The blobs the database holds itself (``[gateway] blobs = "database"``): they travel
    inside the snapshot; none where the schema has no such table yet."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'blobs'").fetchone():
        return set()
    return {r[0] for r in conn.execute("SELECT sha256 FROM blobs")}


# --- the key -------------------------------------------------------------------------------


def key_id(key: bytes) -> str:
    """Names a key without revealing it: an HMAC of a constant, 8 bytes hex."""
    return hmac.new(key, b"helpdesk-gateway backup key id", hashlib.sha256).hexdigest()[:16]


def load_backup_key(config: GatewayConfig) -> bytes:
    """``$GATEWAY_BACKUP_KEY`` first (containers), then ``[backup] key_file``."""
    raw = os.environ.get(BACKUP_KEY_ENV, "").strip()
    where = f"${BACKUP_KEY_ENV}"
    if not raw:
        path = config.backup.key_file
        if path is None:
            raise BackupMisconfigured(
                f"no backup key: set [backup] key_file or ${BACKUP_KEY_ENV} "
                "(make one with gateway backup --new-key FILE)",
            )
        try:
            raw = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise NothingToRead(
                f"cannot read backup key {path}: {getattr(exc, 'strerror', exc)}",
            ) from None
        where = str(path)
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise BackupMisconfigured(f"backup key in {where} is not base64") from None
    if len(key) != KEY_BYTES:
        raise BackupMisconfigured(
            f"backup key in {where} must be {KEY_BYTES} bytes, not {len(key)}"
        )
    return key


def new_key_file(path: Path, config: GatewayConfig | None = None) -> str:
    """Make a new random key file (0600); refuses to overwrite or to sit in the data folder."""
    target = path.resolve()
    if config is not None:
        for folder, what in (
            (config.data_dir, "data directory"),
            (config.backup.dir, "backup folder"),
        ):
            if folder is not None and target.is_relative_to(folder.resolve()):
                raise WouldOverwrite(f"{path}: the backup key must not be inside the {what}")
    key = os.urandom(KEY_BYTES)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise WouldOverwrite(f"{path} exists; a key is never overwritten") from None
    try:
        os.write(fd, base64.b64encode(key) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    return key_id(key)


# --- the encrypted stream --------------------------------------------------------------------


class _Sealer(io.RawIOBase):
    """A write-only file: plaintext in, MAGIC + header + sealed chunks out."""

    def __init__(self, out: BinaryIO, key: bytes, meta: dict[str, object]) -> None:
        self.out = out
        self.aead = AESGCM(key)
        self.prefix = os.urandom(7)
        header = json.dumps(
            {**meta, "kid": key_id(key), "chunk": CHUNK, "nonce": self.prefix.hex()},
            sort_keys=True,
        ).encode()
        self.aad = MAGIC + struct.pack(">I", len(header)) + header
        out.write(self.aad)
        self.buf = bytearray()
        self.counter = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.buf += data
        while len(self.buf) > CHUNK:  # keep at least one byte back: the last chunk is flagged
            self._seal(bytes(self.buf[:CHUNK]), last=False)
            del self.buf[:CHUNK]
        return len(data)

    def _seal(self, chunk: bytes, *, last: bool) -> None:
        nonce = self.prefix + struct.pack(">I", self.counter) + (b"\x01" if last else b"\x00")
        self.out.write(self.aead.encrypt(nonce, chunk, self.aad))
        self.counter += 1

    def finish(self) -> None:
        self._seal(bytes(self.buf), last=True)
        self.buf.clear()


def read_header(f: BinaryIO) -> tuple[dict[str, object], bytes]:
    magic = f.read(len(MAGIC))
    if magic != MAGIC:
        raise ArchiveDamaged("not a gateway backup archive (bad magic)")
    (n,) = struct.unpack(">I", f.read(4) or b"\0\0\0\0")
    raw = f.read(n)
    try:
        meta = json.loads(raw)
    except ValueError:
        raise ArchiveDamaged("the archive header is damaged") from None
    return meta, MAGIC + struct.pack(">I", n) + raw


def _opened(f: BinaryIO, key: bytes) -> Iterator[bytes]:
    meta, aad = read_header(f)
    if meta.get("kid") != key_id(key):
        raise WrongKey(
            f"wrong backup key: this archive was made with key {meta.get('kid')}, "
            f"the key given is {key_id(key)}",
        )
    aead = AESGCM(key)
    prefix = bytes.fromhex(str(meta["nonce"]))
    size = int(meta["chunk"]) + 16  # type: ignore[call-overload]
    counter = 0
    chunk = f.read(size)
    while True:
        nxt = f.read(size)
        last = not nxt
        nonce = prefix + struct.pack(">I", counter) + (b"\x01" if last else b"\x00")
        try:
            yield aead.decrypt(nonce, chunk, aad)
        except InvalidTag:
            if last and _opens(aead, nonce[:-1] + b"\x00", chunk, aad):
                raise ArchiveDamaged(
                    f"the archive is truncated (it ends after chunk {counter}, not the last)",
                ) from None
            raise ArchiveDamaged(
                f"the archive is damaged or altered (chunk {counter} fails authentication)",
            ) from None
        if last:
            return
        chunk, counter = nxt, counter + 1


def _opens(aead: AESGCM, nonce: bytes, chunk: bytes, aad: bytes) -> bool:
    try:
        aead.decrypt(nonce, chunk, aad)
    except InvalidTag:
        return False
    return True


def archive_stream(f: BinaryIO, key: bytes) -> BinaryIO:
    """The archive's plaintext (a tar stream), each chunk authenticated before it is
    handed out: a reader sees only bytes the key holder wrote, in their order."""
    return io.BufferedReader(_Opener(_opened(f, key)), buffer_size=CHUNK)


class _Opener(io.RawIOBase):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        while not self.buf:
            try:
                self.buf = next(self.chunks)
            except StopIteration:
                return 0
        n = min(len(b), len(self.buf))
        b[:n], self.buf = self.buf[:n], self.buf[n:]
        return n


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


def _engine(config: GatewayConfig) -> str:
    """The store's engine: it decides what the archive holds and where it may be restored."""
    name = make_url(config.database_url).get_backend_name()
    if name not in ENGINES:
        raise StoreUnavailable(f"gateway backup handles SQLite and PostgreSQL stores, not {name}")
    return name


def _sqlite_path(config: GatewayConfig) -> Path:
    url = make_url(config.database_url)
    if not url.database:
        raise BackupMisconfigured("database_url names no SQLite file")
    return Path(url.database)


def make_backup(
    config: GatewayConfig,
    out_dir: Path,
    key: bytes,
    now: datetime,
    stop: threading.Event | None = None,
) -> BackupResult:
    """Write ``gateway-backup-<UTC time>.hgbk`` into ``out_dir``; return what it holds.

    ``stop`` lets a stopping daemon end a long copy early (the thread running it cannot
    be cancelled); the unfinished archive is then removed, as after any failure."""
    return _make_backup(config, out_dir, key, now, stop)


def _make_backup(
    config: GatewayConfig, out_dir: Path, key: bytes, now: datetime, stop: threading.Event | None
) -> BackupResult:
    engine = _engine(config)
    db = _sqlite_path(config) if engine == "sqlite" else None
    if db is not None and not db.exists():
        raise NothingToRead(f"no database at {db}")
    data_dir = config.data_dir.resolve()
    out_dir = out_dir.resolve()
    if out_dir.is_relative_to(data_dir):
        raise WouldOverwrite(f"{out_dir}: backups must be written outside the data directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    final = out_dir / f"gateway-backup-{stamp}.hgbk"
    part = out_dir / f".{final.name}.part"
    meta = {"created": now.astimezone(UTC).isoformat(), "engine": engine, "format": "tar", "v": 1}
    try:
        with tempfile.TemporaryDirectory(prefix="gw-backup-") as tmp, open(part, "wb") as f:
            sealer = _Sealer(f, key, meta)
            with tarfile.open(fileobj=sealer, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                if db is not None:
                    named, rows, tickets, messages = _sqlite_into(tar, db, Path(tmp))
                else:
                    named, rows, tickets, messages = _postgresql_into(tar, config, stop)
                # The folder is copied after the snapshot: see the module docstring.
                blobs = _add_data_dir(tar, data_dir, out_dir, _sqlite_files(db), stop)
            sealer.finish()
            f.flush()
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
        key_id=key_id(key),
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
        named, rows = _named(dst), len(_blob_rows(dst))
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
    """Our archives in a folder, oldest first (the name carries the UTC time)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if ARCHIVE_NAME.match(p.name))


def prune_backups(folder: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` archives; return what was deleted."""
    archives = list_backups(folder)
    gone = archives[: max(0, len(archives) - keep)]
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


# --- restore ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RestoreResult:
    database: str  # the SQLite file, or host:port/dbname
    data_dir: Path
    tickets: int
    messages: int
    blobs: int
    created: str
    engine: str = "sqlite"


def restore(config: GatewayConfig, archive: Path, key: bytes) -> RestoreResult:
    """Unpack into the configured empty data directory and database, verified first.

    SQLite: no database file at the configured path; the integrity check, every blob
    a row names present and every blob's hash, before anything is moved into place.
    PostgreSQL: no other session on the database and no tickets in it; the blobs
    checked against the manifest, then pg_restore (all or nothing), then the restored
    counts against the manifest, then the data directory."""
    return _restore(config, archive, key)


def _restore(config: GatewayConfig, archive: Path, key: bytes) -> RestoreResult:
    engine = _engine(config)
    try:
        f = open(archive, "rb")
    except OSError as exc:
        raise NothingToRead(f"{archive}: {exc.strerror or exc}") from None
    with f:
        head, _ = read_header(f)
    made = str(head.get("engine", "sqlite"))  # archives before PostgreSQL were all SQLite
    if made != engine:
        raise BackupMisconfigured(
            f"{archive.name} holds a {ENGINES.get(made, made)} database but database_url "
            f"names {ENGINES[engine]}: restore it with a config for {ENGINES.get(made, made)}",
        )
    if head.get("kid") != key_id(key):  # before anything is written
        raise WrongKey(
            f"wrong backup key: this archive was made with key {head.get('kid')}, "
            f"the key given is {key_id(key)}",
        )
    db = _sqlite_path(config) if engine == "sqlite" else None
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


def _unpack(archive: Path, key: bytes, staging: Path) -> None:
    """Decrypt and unpack into ``staging``; the dump's pieces are joined into one file
    (pg_restore wants a seekable file). Every chunk is authenticated before use."""
    dump = None
    n = 0
    try:
        with open(archive, "rb") as f:
            with tarfile.open(fileobj=archive_stream(f, key), mode="r|") as tar:
                for member in tar:
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
    except tarfile.TarError as exc:
        raise ArchiveDamaged(f"the archive's contents are damaged: {exc}") from None
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
        named = _named(conn)
        tickets = conn.execute("SELECT count(*) FROM tickets").fetchone()[0]
        messages = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
        rows = 0
        for sha, data in conn.execute("SELECT sha256, data FROM blobs") if _blob_rows(conn) else ():
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
