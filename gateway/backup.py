"""``gateway backup`` and ``gateway restore``: one encrypted archive of everything the
gateway keeps (database, blobs, its own secrets), and the way back.

Consistency: the database is copied with SQLite's online backup API, a
snapshot of one committed state while the daemon goes on writing. Blobs are
written and fsynced *before* the commit that names them, so every blob the
snapshot names already exists when the snapshot is taken; the folder is copied
after it, and the archive is checked to hold every blob the snapshot names (a
retention purge in between would otherwise go unnoticed). With the database
blob store the blobs are rows, inside the snapshot itself, and count as held.

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
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.engine import make_url

from routing.config import GatewayConfig
from routing.ops_config import BACKUP_KEY_ENV
from store.blobs import fsync_dir

__all__ = [
    "ARCHIVE_NAME",
    "BackupError",
    "BackupResult",
    "RestoreResult",
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
_SKIP = {"status.json", "status.tmp"}  # the daemon's live state, not data


def _named(conn: sqlite3.Connection) -> set[str]:
    """Every blob a row names: each attachment, and each message's raw bytes unless a
    retention purge already let them go (``raw_purged_at``, where the schema has it)."""
    columns = {r[1] for r in conn.execute("PRAGMA table_info(messages)")}
    raw = "SELECT raw_sha256 FROM messages"
    if "raw_purged_at" in columns:
        raw += " WHERE raw_purged_at IS NULL"
    return {r[0] for r in conn.execute(f"SELECT sha256 FROM attachments UNION {raw}")}


def _blob_rows(conn: sqlite3.Connection) -> set[str]:
    """The blobs the database holds itself (``[gateway] blobs = "database"``): they travel
    inside the snapshot; none where the schema has no such table yet."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'blobs'").fetchone():
        return set()
    return {r[0] for r in conn.execute("SELECT sha256 FROM blobs")}


class BackupError(Exception):
    """The operator's one-line reason; ``code`` is the sysexits code for the CLI."""

    def __init__(self, message: str, code: int = 70) -> None:
        super().__init__(message)
        self.code = code


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
            raise BackupError(
                f"no backup key: set [backup] key_file or ${BACKUP_KEY_ENV} "
                "(make one with gateway backup --new-key FILE)",
                78,
            )
        try:
            raw = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise BackupError(
                f"cannot read backup key {path}: {getattr(exc, 'strerror', exc)}", 66
            ) from None
        where = str(path)
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise BackupError(f"backup key in {where} is not base64", 78) from None
    if len(key) != KEY_BYTES:
        raise BackupError(f"backup key in {where} must be {KEY_BYTES} bytes, not {len(key)}", 78)
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
                raise BackupError(f"{path}: the backup key must not be inside the {what}", 73)
    key = os.urandom(KEY_BYTES)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise BackupError(f"{path} exists; a key is never overwritten", 73) from None
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
        raise BackupError("not a gateway backup archive (bad magic)", 65)
    (n,) = struct.unpack(">I", f.read(4) or b"\0\0\0\0")
    raw = f.read(n)
    try:
        meta = json.loads(raw)
    except ValueError:
        raise BackupError("the archive header is damaged", 65) from None
    return meta, MAGIC + struct.pack(">I", n) + raw


def _opened(f: BinaryIO, key: bytes) -> Iterator[bytes]:
    meta, aad = read_header(f)
    if meta.get("kid") != key_id(key):
        raise BackupError(
            f"wrong backup key: this archive was made with key {meta.get('kid')}, "
            f"the key given is {key_id(key)}",
            77,
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
                raise BackupError(
                    f"the archive is truncated (it ends after chunk {counter}, not the last)", 65
                ) from None
            raise BackupError(
                f"the archive is damaged or altered (chunk {counter} fails authentication)", 65
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


def _sqlite_path(config: GatewayConfig) -> Path:
    url = make_url(config.database_url)
    if url.get_backend_name() != "sqlite" or not url.database:
        raise BackupError(
            "gateway backup handles the SQLite store; for PostgreSQL use pg_dump "
            "(see docs/deploy.md) and back up the data directory's blobs",
            69,
        )
    return Path(url.database)


def make_backup(config: GatewayConfig, out_dir: Path, key: bytes, now: datetime) -> BackupResult:
    """Write ``gateway-backup-<UTC time>.hgbk`` into ``out_dir``; return what it holds."""
    db = _sqlite_path(config)
    if not db.exists():
        raise BackupError(f"no database at {db}", 66)
    data_dir = config.data_dir.resolve()
    out_dir = out_dir.resolve()
    if out_dir.is_relative_to(data_dir):
        raise BackupError(f"{out_dir}: backups must be written outside the data directory", 73)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    final = out_dir / f"gateway-backup-{stamp}.hgbk"
    with tempfile.TemporaryDirectory(prefix="gw-backup-") as tmp:
        snap = Path(tmp) / "gateway.db"
        src = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        dst = sqlite3.connect(snap)
        try:
            src.backup(dst)  # the online backup API: one consistent committed state
        finally:
            src.close()
        try:
            named = _named(dst)
            rows = _blob_rows(dst)
            tickets = dst.execute("SELECT count(*) FROM tickets").fetchone()[0]
            messages = dst.execute("SELECT count(*) FROM messages").fetchone()[0]
        finally:
            dst.close()
        part = out_dir / f".{final.name}.part"
        blobs: set[str] = set()
        with open(part, "wb") as f:
            sealer = _Sealer(
                f, key, {"created": now.astimezone(UTC).isoformat(), "format": "tar", "v": 1}
            )
            with tarfile.open(fileobj=sealer, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                tar.add(snap, arcname="gateway.db")
                for path in _data_files(data_dir, db, out_dir):
                    rel = path.relative_to(data_dir)
                    tar.add(path, arcname=f"data/{rel.as_posix()}", recursive=False)
                    if rel.parts[0] == "blobs" and len(rel.parts) == 3:
                        blobs.add(rel.parts[2])
            sealer.finish()
            f.flush()
            os.fsync(f.fileno())
        missing = named - blobs - rows
        if missing:
            part.unlink(missing_ok=True)
            raise BackupError(
                f"{len(missing)} blobs named by the database are missing from the data "
                f"directory (first: {sorted(missing)[0]}); the backup was not kept",
                70,
            )
        os.replace(part, final)
        fsync_dir(out_dir)
    return BackupResult(
        path=final,
        size=final.stat().st_size,
        tickets=tickets,
        messages=messages,
        blobs=len(blobs | rows),
        key_id=key_id(key),
        created_at=now,
    )


def _data_files(data_dir: Path, db: Path, out_dir: Path) -> Iterator[Path]:
    """Every regular file of the data directory but the live database and the daemon's state."""
    skip = {
        db.resolve(),
        *(db.with_name(db.name + s).resolve() for s in ("-wal", "-shm", "-journal")),
    }
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
            if stat.S_ISREG(p.lstat().st_mode):
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
    database: Path
    data_dir: Path
    tickets: int
    messages: int
    blobs: int
    created: str


def restore(config: GatewayConfig, archive: Path, key: bytes) -> RestoreResult:
    """Unpack into the configured (empty) data directory and database path, then verify:
    SQLite's integrity check, every blob a row names present, every blob's hash."""
    db = _sqlite_path(config)
    data_dir = config.data_dir
    if db.exists():
        raise BackupError(f"{db} exists: restore never overwrites a database", 73)
    # Loading the config makes a reply-token secret when there is none; in a data
    # directory without a database it guards nothing yet and the archive's replaces it.
    fresh = config.data_dir / "secret.key"
    present = [p for p in data_dir.iterdir()] if data_dir.exists() else []
    if [p for p in present if p != fresh]:
        raise BackupError(f"{data_dir} is not empty: restore only into an empty data directory", 73)
    try:
        f = open(archive, "rb")
    except OSError as exc:
        raise BackupError(f"{archive}: {exc.strerror or exc}", 66) from None
    with f:
        head, _ = read_header(f)
    if head.get("kid") != key_id(key):  # before anything is written
        raise BackupError(
            f"wrong backup key: this archive was made with key {head.get('kid')}, "
            f"the key given is {key_id(key)}",
            77,
        )
    f = open(archive, "rb")
    data_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".restore-", dir=data_dir))
    try:
        with f:
            meta, _ = read_header(f)
            f.seek(0)
            stream = io.BufferedReader(_Opener(_opened(f, key)), buffer_size=CHUNK)
            try:
                with tarfile.open(fileobj=stream, mode="r|") as tar:
                    tar.extractall(staging, filter="data")
            except tarfile.TarError as exc:
                raise BackupError(f"the archive's contents are damaged: {exc}", 65) from None
        snap = staging / "gateway.db"
        if not snap.is_file():
            raise BackupError("the archive holds no database", 65)
        tickets, messages, blobs = _verify(snap, staging / "data" / "blobs")
        for item in sorted((staging / "data").iterdir()) if (staging / "data").exists() else []:
            os.replace(item, data_dir / item.name)  # secret.key included: old tokens stay valid
        db.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(snap, db)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return RestoreResult(db, data_dir, tickets, messages, blobs, str(meta.get("created", "")))


def _verify(db: Path, blobs: Path) -> tuple[int, int, int]:
    conn = sqlite3.connect(db)
    try:
        ok = conn.execute("PRAGMA integrity_check").fetchone()[0]
        if ok != "ok":
            raise BackupError(f"the restored database fails its integrity check: {ok}", 65)
        named = sorted(_named(conn))
        tickets = conn.execute("SELECT count(*) FROM tickets").fetchone()[0]
        messages = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
        rows: set[str] = set()
        if _blob_rows(conn):  # content-addressed: a blob's name is the hash of its bytes
            for sha, data in conn.execute("SELECT sha256, data FROM blobs"):
                if hashlib.sha256(data).hexdigest() != sha:
                    raise BackupError(f"blob {sha} was altered (its bytes hash otherwise)", 65)
                rows.add(sha)
    finally:
        conn.close()
    for sha in named:
        if sha not in rows and not (blobs / sha[:2] / sha).is_file():
            raise BackupError(f"blob {sha} is named by the database but not in the archive", 65)
    files = sorted(blobs.glob("??/*")) if blobs.is_dir() else []
    for p in files:
        if _sha256(p) != p.name:
            raise BackupError(f"blob {p.name} was altered (its bytes hash otherwise)", 65)
    return tickets, messages, len(rows | {p.name for p in files})


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()
