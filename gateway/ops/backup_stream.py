"""The archive's container: age (https://age-encryption.org/v1) around a tar stream,
and the reader of the HGWBACKUP1 archives made before it.

age encrypts in 64 KiB chunks (the STREAM construction, a last-chunk flag in each
nonce), so a truncated, reordered or altered archive fails instead of restoring
half, and a reader only ever sees authenticated bytes. pyrage streams both ways
(``encrypt_io`` pulls plaintext from a reader, ``decrypt_io`` pushes it into a
writer, 8 KiB at a time), but tarfile pushes when writing and pulls when reading:
a pipe and a thread join the two, so no archive is ever held in memory or written
unencrypted. The archive's facts (engine, time) are its first tar member,
``archive.json``: age has no cleartext header, and ``age -d`` sees a plain tar.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import pyrage

from gateway.ops import backup_legacy
from gateway.ops.backup_key import BackupKey, legacy_key_id
from gateway.ops.errors import (
    ArchiveDamaged,
    ArchiveUnwritable,
    BackupError,
    NothingToRead,
    WrongKey,
)

__all__ = ["META", "archive_meta", "plaintext", "sealed", "write_meta"]

AGE_MAGIC = b"age-encryption.org/v1\n"
META = "archive.json"


@contextmanager
def sealed(out: BinaryIO, key: BackupKey) -> Iterator[BinaryIO]:
    """A writable stream whose bytes reach ``out`` encrypted to the key's recipient;
    the age file is complete once the block ends without an error."""
    r, w = os.pipe()
    reader, writer = open(r, "rb", buffering=0), open(w, "wb")
    failed: list[BaseException] = []

    def encrypt() -> None:
        try:
            pyrage.encrypt_io(reader, out, [key.identities[0].to_public()])
        except BaseException as exc:  # handed to the caller's thread below
            failed.append(exc)
        finally:
            reader.close()  # a writer still going meets a broken pipe, not a hang

    worker = threading.Thread(target=encrypt, name="backup-encrypt", daemon=True)
    worker.start()
    try:
        try:
            yield writer
        finally:
            try:
                writer.close()  # end of plaintext: the encryptor seals the last chunk
            except BrokenPipeError:
                pass
            worker.join()
    except BrokenPipeError:
        if not failed:
            raise
    if failed:
        raise ArchiveUnwritable(f"cannot encrypt the archive: {failed[0]}") from None


@contextmanager
def plaintext(archive: Path, key: BackupKey) -> Iterator[BinaryIO]:
    """The archive's tar stream, of either format, authenticated as it is read; a wrong
    key, a damaged or a cut archive raise BackupError (at the latest when the block ends)."""
    try:
        f = open(archive, "rb")
    except OSError as exc:
        raise NothingToRead(f"{archive}: {exc.strerror or exc}") from None
    with f:
        magic = f.read(len(AGE_MAGIC))
        f.seek(0)
        if magic.startswith(backup_legacy.MAGIC):
            yield backup_legacy.archive_stream(f, _legacy_key(f, key))
        elif magic == AGE_MAGIC:
            with _age_plaintext(f, key) as stream:
                yield stream
        else:
            raise ArchiveDamaged("not a gateway backup archive (bad magic)")


def archive_meta(archive: Path, key: BackupKey) -> dict[str, object]:
    """The archive's facts, read before anything is written: this also proves the key
    (an age archive's first chunk is decrypted, an HGWBACKUP1 header names its key)."""
    with open(archive, "rb") as f:
        if f.read(len(backup_legacy.MAGIC)) == backup_legacy.MAGIC:
            f.seek(0)
            head, _ = backup_legacy.read_header(f)
            f.seek(0)
            _legacy_key(f, key)
            return head
    with plaintext(archive, key) as stream:
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                member = tar.next()
                body = tar.extractfile(member) if member and member.name == META else None
                if body is None:
                    raise ArchiveDamaged(f"the archive does not begin with {META}")
                meta = json.loads(body.read())
        except (tarfile.TarError, ValueError):
            raise ArchiveDamaged(f"the archive's {META} is damaged") from None
    return meta if isinstance(meta, dict) else {}


def write_meta(tar: tarfile.TarFile, meta: dict[str, object]) -> None:
    body = json.dumps(meta, sort_keys=True).encode()
    info = tarfile.TarInfo(META)
    info.size, info.mode = len(body), 0o600
    tar.addfile(info, io.BytesIO(body))


def _legacy_key(f: BinaryIO, key: BackupKey) -> bytes:
    head, _ = backup_legacy.read_header(f)
    f.seek(0)
    made = head.get("kid")
    if key.legacy is None:
        raise WrongKey(
            f"wrong backup key: this archive (HGWBACKUP1, before age) was made with key "
            f"{made}, and the key given holds no HGWBACKUP1 key",
        )
    if made != legacy_key_id(key.legacy):
        raise WrongKey(
            f"wrong backup key: this archive was made with key {made}, "
            f"the key given is {legacy_key_id(key.legacy)}",
        )
    return key.legacy


@contextmanager
def _age_plaintext(f: BinaryIO, key: BackupKey) -> Iterator[BinaryIO]:
    r, w = os.pipe()
    reader, writer = open(r, "rb"), open(w, "wb", buffering=0)
    failed: list[BaseException] = []

    def decrypt() -> None:
        try:
            pyrage.decrypt_io(f, writer, list(key.identities))
        except BaseException as exc:  # handed to the caller's thread below
            failed.append(exc)
        finally:
            writer.close()  # the reader sees the end, early if the archive failed

    worker = threading.Thread(target=decrypt, name="backup-decrypt", daemon=True)
    worker.start()
    try:
        yield reader
    finally:
        reader.close()  # a reader that stopped early: the writer meets a broken pipe
        worker.join()
        if failed and not isinstance(failed[0], BrokenPipeError):
            raise _age_error(failed[0], key) from None


def _age_error(exc: BaseException, key: BackupKey) -> BackupError:
    """pyrage's errors in the operator's words (it names no chunk)."""
    text = str(exc)
    if isinstance(exc, pyrage.DecryptError) and "No matching keys" in text:
        return WrongKey(
            f"wrong backup key: this archive was not made for the key given ({key.recipient})",
        )
    if "truncated" in text:
        return ArchiveDamaged("the archive is truncated (its last chunk is missing)")
    return ArchiveDamaged(f"the archive is damaged or altered ({text})")
