"""The reader of HGWBACKUP1 archives, the gateway's own format before age: kept so
every archive made so far stays restorable. Nothing writes it any more.

The layout: ``MAGIC``, a 4-byte length and a JSON header (engine, creation time, the
key's id, the chunk size, a random 7-byte nonce prefix), then the tar stream sealed
with AES-256-GCM in 1 MiB chunks; each nonce is the prefix, a 4-byte chunk counter
and a last-chunk flag, and the header is every chunk's associated data.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Iterator
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.ops.backup_key import legacy_key_id
from gateway.ops.errors import ArchiveDamaged, WrongKey

__all__ = ["MAGIC", "archive_stream", "read_header"]

MAGIC = b"HGWBACKUP1\n"
CHUNK = 1 << 20


def read_header(f: BinaryIO) -> tuple[dict[str, object], bytes]:
    """The header's facts, and its bytes (every chunk's associated data)."""
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


def archive_stream(f: BinaryIO, key: bytes) -> BinaryIO:
    """The archive's plaintext (a tar stream), each chunk authenticated before it is
    handed out: a reader sees only bytes the key holder wrote, in their order."""
    return io.BufferedReader(_Opener(_opened(f, key)), buffer_size=CHUNK)


def _opened(f: BinaryIO, key: bytes) -> Iterator[bytes]:
    meta, aad = read_header(f)
    if meta.get("kid") != legacy_key_id(key):
        raise WrongKey(
            f"wrong backup key: this archive was made with key {meta.get('kid')}, "
            f"the key given is {legacy_key_id(key)}",
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
