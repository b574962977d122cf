"""The HGWBACKUP1 writer as the gateway shipped it before age (gateway/ops/backup.py at
commit 6de1405), kept here only to make the old archives the restore must still read."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import struct
import tarfile
from pathlib import Path
from typing import BinaryIO

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.ops.backup_key import BackupKey
from gateway.ops.backup_stream import META, plaintext

MAGIC = b"HGWBACKUP1\n"
CHUNK = 1 << 20


def key_id(key: bytes) -> str:
    return hmac.new(key, b"helpdesk-gateway backup key id", hashlib.sha256).hexdigest()[:16]


class Sealer(io.RawIOBase):
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


def rewrite_as_legacy(archive: Path, key: BackupKey, legacy: bytes, out: Path) -> None:
    """The same contents as an HGWBACKUP1 archive made with ``legacy``: the members the
    old writer wrote (all but archive.json, whose facts went into the header)."""
    with plaintext(archive, key) as stream, tarfile.open(fileobj=stream, mode="r|") as src:
        with open(out, "wb") as f:
            sealer: Sealer | None = None
            dst: tarfile.TarFile | None = None
            for member in src:
                body = src.extractfile(member) if member.isfile() else None
                if member.name == META:
                    assert body is not None
                    meta = json.loads(body.read())
                    meta["v"] = 1
                    sealer = Sealer(f, legacy, meta)
                    dst = tarfile.open(fileobj=sealer, mode="w|", format=tarfile.PAX_FORMAT)  # type: ignore[call-overload]
                    continue
                assert dst is not None
                dst.addfile(member, body)
            assert dst is not None and sealer is not None
            dst.close()
            sealer.finish()
