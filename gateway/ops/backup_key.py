"""The backup key: an age X25519 identity, so ``age -d -i KEYFILE ARCHIVE`` opens an
archive without the gateway; and the key of the archives made before age.

A key file is in age's identity-file layout (``#`` comments, ``AGE-SECRET-KEY-1...``
lines), which is what ``gateway backup --new-key`` writes. A key made before the age
format (32 random bytes, base64, alone on a line or as ``# HGWBACKUP1 key: ...``)
still restores the HGWBACKUP1 archives made with it, and still makes backups: their
age identity is derived from it (HKDF-SHA256), so an upgrade needs no new key on the
day. ``--new-key`` with such a key configured writes that derived identity and the
old key into the new file, which then opens every archive made so far.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyrage
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pyrage import x25519

from gateway.ops.errors import BackupError, BackupMisconfigured, NothingToRead, WouldOverwrite
from routing.config import GatewayConfig
from routing.config.jobs import BACKUP_KEY_ENV

__all__ = [
    "BackupKey",
    "legacy_key_id",
    "load_backup_key",
    "new_key_file",
    "parse_backup_key",
]

LEGACY_KEY_BYTES = 32
_LEGACY = re.compile(r"(?:# HGWBACKUP1 key: )?([A-Za-z0-9+/]{43}=)")


@dataclass(frozen=True, slots=True)
class BackupKey:
    """``identities[0]`` makes new archives; every one of them is tried on an age
    archive; ``legacy`` opens HGWBACKUP1 archives."""

    identities: tuple[x25519.Identity, ...]
    legacy: bytes | None = None

    @property
    def recipient(self) -> str:
        """The public half (``age1...``): names the key, and is what archives are made to."""
        return str(self.identities[0].to_public())


def legacy_key_id(key: bytes) -> str:
    """How HGWBACKUP1 headers name their key: an HMAC of a constant, 8 bytes hex."""
    return hmac.new(key, b"helpdesk-gateway backup key id", hashlib.sha256).hexdigest()[:16]


def parse_backup_key(text: str, where: str) -> BackupKey:
    """A key file's or ``$GATEWAY_BACKUP_KEY``'s text; ``where`` names it in errors."""
    identities: list[x25519.Identity] = []
    legacy: bytes | None = None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        m = _LEGACY.fullmatch(line)
        if m:
            legacy = base64.b64decode(m.group(1))
            continue
        if not line or line.startswith("#"):
            continue
        try:
            identities.append(x25519.Identity.from_str(line))
        except pyrage.IdentityError:
            raise BackupMisconfigured(
                f"backup key in {where}, line {n}: not an age identity (AGE-SECRET-KEY-1...) "
                f"nor a {LEGACY_KEY_BYTES}-byte base64 key",
            ) from None
    if legacy is not None:
        derived = _derived_identity(legacy)
        if str(derived) not in {str(i) for i in identities}:
            identities.append(derived)
    if not identities:
        raise BackupMisconfigured(f"backup key in {where} holds no key")
    return BackupKey(tuple(identities), legacy)


def load_backup_key(config: GatewayConfig) -> BackupKey:
    """``$GATEWAY_BACKUP_KEY`` first (containers), then ``[backup] key_file``."""
    text = os.environ.get(BACKUP_KEY_ENV, "").strip()
    if text:
        return parse_backup_key(text, f"${BACKUP_KEY_ENV}")
    path = config.backup.key_file
    if path is None:
        raise BackupMisconfigured(
            f"no backup key: set [backup] key_file or ${BACKUP_KEY_ENV} "
            "(make one with gateway backup --new-key FILE)",
        )
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise NothingToRead(
            f"cannot read backup key {path}: {getattr(exc, 'strerror', exc)}",
        ) from None
    return parse_backup_key(text, str(path))


def new_key_file(path: Path, config: GatewayConfig | None = None) -> str:
    """Write a new key file (0600) and return its public key. Refuses to overwrite or to
    sit in the data or backup folder; carries over a configured pre-age key (see above)."""
    target = path.resolve()
    legacy = None
    if config is not None:
        for folder, what in (
            (config.data_dir, "data directory"),
            (config.backup.dir, "backup folder"),
        ):
            if folder is not None and target.is_relative_to(folder.resolve()):
                raise WouldOverwrite(f"{path}: the backup key must not be inside the {what}")
        try:
            legacy = load_backup_key(config).legacy
        except BackupError:
            pass  # no key configured yet: a new one
    identity = _derived_identity(legacy) if legacy else x25519.Identity.generate()
    recipient = str(identity.to_public())
    lines = [
        "# helpdesk-gateway backup key, an age identity: open an archive without the gateway",
        "# with  age -d -i THIS-FILE gateway-backup-<time>.tar.age > backup.tar",
        f"# created: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"# public key: {recipient}",
        str(identity),
    ]
    if legacy:
        lines += [
            "# the key of the archives made before the age format (.hgbk):",
            f"# HGWBACKUP1 key: {base64.b64encode(legacy).decode()}",
        ]
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise WouldOverwrite(f"{path} exists; a key is never overwritten") from None
    try:
        os.write(fd, ("\n".join(lines) + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return recipient


def _derived_identity(legacy: bytes) -> x25519.Identity:
    """The age identity a pre-age key makes its new archives with: HKDF, so the AES key
    and the X25519 secret are never the same bytes."""
    secret = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"helpdesk-gateway age identity"
    ).derive(legacy)
    return x25519.Identity.from_str(_bech32("age-secret-key-", secret).upper())


_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def _bech32(hrp: str, data: bytes) -> str:
    """BIP 173 bech32, the encoding of age's keys (pyrage makes an identity from text only)."""
    acc = bits = 0
    five: list[int] = []
    for byte in data:
        acc, bits = (acc << 8) | byte, bits + 8
        while bits >= 5:
            bits -= 5
            five.append((acc >> bits) & 31)
    if bits:
        five.append((acc << (5 - bits)) & 31)
    values = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp] + five + [0] * 6
    chk = 1
    for v in values:
        top, chk = chk >> 25, (chk & 0x1FFFFFF) << 5 ^ v
        for i, g in enumerate((0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)):
            chk ^= g if (top >> i) & 1 else 0
    chk ^= 1
    return (
        hrp
        + "1"
        + "".join(_CHARSET[d] for d in five + [(chk >> 5 * (5 - i)) & 31 for i in range(6)])
    )
