"""Encrypted secrets in the config: ``enc:v1:<key id>:<data>``.

A tenant's SMTP password sits in gateway.toml, a file that gets shared,
versioned and pasted into tickets; so it is stored only encrypted, and the
keys live apart in a 0600 key file (or in the environment, for containers).

AES-GCM binds every value to its tenant and field (the associated data): a
value copied into another tenant's block fails to decrypt instead of quietly
handing tenant B's password to tenant A's mail. Several keys can be loaded at
once so a rotation never leaves a running instance unable to read its config.

Nothing here ever puts a plaintext or key bytes into a message, repr or log.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["Keyring", "SecretError", "add_key", "is_encrypted", "load_keyring"]

PREFIX = "enc:v1:"
ENV_VAR = "GATEWAY_KEYS"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16

_KID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_DATA = re.compile(r"[A-Za-z0-9_-]+")

_KEY_FILE_HEADER = """\
# Keys for the enc:v1:<key id>:<data> secrets in the gateway config.
# Keep this file mode 0600 and never next to a copy of the config you share.
# After `gateway secrets rotate`, remove an old key only once every instance
# runs the re-encrypted config (`gateway secrets check` passes without it).
"""


class SecretError(Exception):
    """A secret cannot be used. The message is shown to admins as is.

    It never carries a plaintext or key bytes, so it is safe in logs, in
    /status and in a config error.
    """


@dataclass(frozen=True)
class Keyring:
    """Every key this instance may decrypt with, and the one it encrypts with.

    Old keys stay loadable after a rotation so that values made before it keep
    working until the config is rewritten everywhere.
    """

    keys: dict[str, bytes] = field(repr=False)
    primary: str

    def __post_init__(self) -> None:
        if self.primary not in self.keys:
            raise SecretError(f"primary key {self.primary!r} is not among the keys")
        for kid, key in self.keys.items():
            if not _KID.fullmatch(kid):
                raise SecretError(f"bad key id {kid!r} (letters, digits, '-' and '_' only)")
            if len(key) != KEY_BYTES:
                raise SecretError(f"key {kid!r} must be {KEY_BYTES} bytes, not {len(key)}")

    def encrypt(self, plaintext: str, *, tenant: str, field: str) -> str:
        """Seal ``plaintext`` for one tenant's field with the primary key."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(self.keys[self.primary]).encrypt(
            nonce, plaintext.encode("utf-8"), _aad(tenant, field)
        )
        data = base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode("ascii")
        return f"{PREFIX}{self.primary}:{data}"

    def decrypt(self, value: str, *, tenant: str, field: str) -> str:
        """Open a value; fails unless it was made for exactly this tenant and field."""
        kid, data = _split(value)
        key = self.keys.get(kid)
        if key is None:
            raise SecretError(f"unknown key id {kid!r} (keys: {', '.join(sorted(self.keys))})")
        try:
            plain = AESGCM(key).decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], _aad(tenant, field))
            return plain.decode("utf-8")
        except (InvalidTag, UnicodeDecodeError):
            raise SecretError(
                "cannot decrypt: wrong key, or the value was made for another tenant or field"
            ) from None


def is_encrypted(value: str) -> bool:
    """Whether a config value claims to be an enc:v1 secret (it may still fail to decrypt)."""
    return isinstance(value, str) and value.startswith(PREFIX)


def _aad(tenant: str, field: str) -> bytes:
    # NUL cannot occur in a slug or field name, so ("a", "b\0c") never collides.
    return f"{tenant}\0{field}".encode()


def _split(value: str) -> tuple[str, bytes]:
    not_encrypted = SecretError("not an encrypted value (expected enc:v1:<key id>:<data>)")
    if not is_encrypted(value):
        raise not_encrypted
    kid, sep, data = value[len(PREFIX) :].partition(":")
    if not sep or not _KID.fullmatch(kid) or not _DATA.fullmatch(data):
        raise not_encrypted
    try:
        raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    except (binascii.Error, ValueError):
        raise not_encrypted from None
    if len(raw) < NONCE_BYTES + TAG_BYTES:
        raise not_encrypted
    return kid, raw


def load_keyring(
    key_file: Path, env: Mapping[str, str] | None = None, *, create: bool = True
) -> Keyring:
    """The keys from ``GATEWAY_KEYS`` and the key file, made on first use.

    The environment comes first (its first key is primary) so a container can
    carry its keys without a file; a key file, when present, adds older keys.
    The file is made only when nothing else provides keys, so that a demo just
    runs while a misconfigured deployment is not silently given a fresh key.
    """
    env = os.environ if env is None else env
    env_keys = _parse_env(env.get(ENV_VAR, ""))
    key_file = Path(key_file)
    if env_keys:
        keys = dict(_read_key_file(key_file)[1]) if key_file.exists() else {}
        keys.update(env_keys)
        return Keyring(keys=keys, primary=next(iter(env_keys)))
    if not key_file.exists():
        if not create:
            raise SecretError(
                f"{key_file}: no key file (and {ENV_VAR} is not set): "
                "run gateway secrets encrypt to make one"
            )
        kid, key = _new_key_id(set()), os.urandom(KEY_BYTES)
        try:
            _create_key_file(key_file, kid, key)
        except FileExistsError:
            pass  # another process made it first: use theirs
        else:
            return Keyring(keys={kid: key}, primary=kid)
    primary, keys = _read_key_file(key_file)
    if primary is None:
        raise SecretError(f'{key_file}: missing primary = "<key id>"')
    if primary not in keys:
        raise SecretError(f"{key_file}: primary key {primary!r} is not in [keys]")
    return Keyring(keys=keys, primary=primary)


def add_key(key_file: Path) -> str:
    """Add a fresh primary key and keep the old ones, for a rotation.

    Old keys stay so that instances still running the old config can read it;
    the file is rewritten atomically and keeps its comments.
    """
    import tomlkit

    key_file = Path(key_file)
    key = os.urandom(KEY_BYTES)
    if not key_file.exists():
        kid = _new_key_id(set())
        try:
            _create_key_file(key_file, kid, key)
            return kid
        except FileExistsError:
            pass
    _, existing = _read_key_file(key_file)  # checks mode and content first
    kid = _new_key_id(set(existing))
    doc = tomlkit.parse(key_file.read_text(encoding="utf-8"))
    if "keys" not in doc:
        doc["keys"] = tomlkit.table()
    doc["keys"][kid] = _b64(key)  # type: ignore[index]
    doc["primary"] = kid
    _write_private(key_file, doc.as_string())
    return kid


def _parse_env(raw: str) -> dict[str, bytes]:
    keys: dict[str, bytes] = {}
    for n, item in enumerate(raw.replace("\n", ",").split(","), 1):
        item = item.strip()
        if not item:
            continue
        kid, sep, b64 = item.partition(":")
        kid = kid.strip()
        if not sep or not _KID.fullmatch(kid):
            raise SecretError(f"{ENV_VAR}: entry {n}: expected <key id>:<base64 key>")
        if kid in keys:
            raise SecretError(f"{ENV_VAR}: key id {kid!r} appears twice")
        keys[kid] = _decode_key(b64.strip(), f"{ENV_VAR}: key {kid!r}")
    return keys


def _decode_key(b64: str, where: str) -> bytes:
    try:
        key = base64.b64decode(b64.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise SecretError(f"{where}: not valid base64") from None
    if len(key) != KEY_BYTES:
        raise SecretError(f"{where}: must be {KEY_BYTES} bytes of base64, not {len(key)}")
    return key


def _read_key_file(key_file: Path) -> tuple[str | None, dict[str, bytes]]:
    try:
        st = key_file.stat()
        if st.st_mode & 0o077:
            mode = stat.S_IMODE(st.st_mode)
            raise SecretError(
                f"{key_file}: key file is accessible by others (mode {mode:04o}): "
                f"run chmod 600 {key_file}"
            )
        text = key_file.read_text(encoding="utf-8")
    except OSError as exc:
        raise SecretError(f"{key_file}: cannot read key file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SecretError(f"{key_file}: key file is not UTF-8 text") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # The message names line and column, never the text around it.
        raise SecretError(f"{key_file}: invalid TOML: {exc}") from None
    primary = doc.get("primary")
    if primary is not None and not isinstance(primary, str):
        raise SecretError(f"{key_file}: primary must be a key id string")
    table = doc.get("keys", {})
    if not isinstance(table, dict) or not table:
        raise SecretError(f"{key_file}: no [keys] table with at least one key")
    keys: dict[str, bytes] = {}
    for kid, b64 in table.items():
        if not _KID.fullmatch(kid):
            raise SecretError(f"{key_file}: bad key id {kid!r} (letters, digits, '-' and '_')")
        if not isinstance(b64, str):
            raise SecretError(f"{key_file}: key {kid!r} must be a base64 string")
        keys[kid] = _decode_key(b64, f"{key_file}: key {kid!r}")
    return primary, keys


def _new_key_id(taken: set[str]) -> str:
    # A date says at a glance which key is older; the suffix only breaks ties.
    kid = "k" + datetime.now(UTC).strftime("%Y%m%d")
    while kid in taken:
        kid = "k" + datetime.now(UTC).strftime("%Y%m%d") + "-" + os.urandom(3).hex()
    return kid


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def _create_key_file(key_file: Path, kid: str, key: bytes) -> None:
    key_file.parent.mkdir(parents=True, exist_ok=True)
    text = f'{_KEY_FILE_HEADER}\nprimary = "{kid}"\n\n[keys]\n{kid} = "{_b64(key)}"\n'
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_private(path: Path, text: str) -> None:
    """Replace a 0600 file atomically: a crash leaves the old keys or the new, never half."""
    replace_file(path, text, 0o600)


def replace_file(path: Path, text: str, mode: int) -> None:
    """Write a sibling temp file, fsync it, rename it over ``path``: never half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
