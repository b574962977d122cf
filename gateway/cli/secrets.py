"""``gateway secrets``: make, check and rotate the enc:v1 passwords in the config.

These commands read gateway.toml themselves instead of going through
routing.config: the loader decrypts as it loads and stops at the first file it
cannot use, while ``check`` must list every broken secret with its line and
``rotate`` must rewrite the file without touching its comments and layout.

Plaintext passwords exist here only in memory: never printed, never in an
error, never written anywhere but as ciphertext.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import os
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.cli.common import add_config_option, config_path
from gateway.cli.errors import CommandError
from routing.schema import Checker
from routing.secrets import (
    ENV_VAR,
    Keyring,
    SecretError,
    add_key,
    is_encrypted,
    load_keyring,
    replace_file,
)

__all__ = ["add_parsers"]

_FIELD = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class _Entry:
    """One tenants[i].outbound.password in the config."""

    index: int
    slug: str
    value: Any

    @property
    def key(self) -> str:
        return f"tenants[{self.index}].outbound.password"


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """``secrets`` and its actions; every level accepts --config."""
    ps = sub.add_parser(
        "secrets", parents=[common], help="encrypt, check or rotate config passwords"
    )
    ssub = ps.add_subparsers(dest="secrets_command", required=True, metavar="ACTION")
    pe = ssub.add_parser("encrypt", help="encrypt a password (from stdin, or prompted)")
    pe.add_argument("--tenant", required=True, metavar="SLUG")
    pe.add_argument("--field", default="password", help="config field (default: password)")
    pr = ssub.add_parser("rotate", help="add a new key and re-encrypt every password")
    pc = ssub.add_parser("check", help="check that every password decrypts")
    for p, func in ((pe, _encrypt), (pr, _rotate), (pc, _check)):
        add_config_option(p)
        p.set_defaults(func=func)


# -- reading the config ------------------------------------------------------


def _read_config(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise CommandError(f"{path}: no such config file", os.EX_NOINPUT) from None
    except OSError as exc:
        raise CommandError(f"{path}: cannot read: {exc.strerror or exc}", os.EX_NOINPUT) from None
    except UnicodeDecodeError:
        raise CommandError(f"{path}: config is not UTF-8 text", os.EX_CONFIG) from None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CommandError(f"config error: {path}: invalid TOML: {exc}", os.EX_CONFIG) from None


def _key_file(path: Path, doc: dict[str, Any]) -> Path:
    """Where the loader looks for keys: the same defaults, relative to the config's folder."""
    g = doc.get("gateway", {})
    g = g if isinstance(g, dict) else {}
    base_dir = path.resolve().parent
    data_dir = g.get("data_dir", "var")
    key_file = g.get("key_file")
    if key_file is None:
        key_file = str(Path(data_dir if isinstance(data_dir, str) else "var") / "keys.toml")
    if not isinstance(key_file, str):
        raise CommandError(f"config error: {path}: gateway.key_file must be a string", os.EX_CONFIG)
    return base_dir / key_file


def _tenants(doc: dict[str, Any]) -> list[Any]:
    tenants = doc.get("tenants", [])
    return tenants if isinstance(tenants, list) else []


def _entries(doc: dict[str, Any]) -> list[_Entry]:
    """Every non-empty outbound password (an empty one means 'no login', as in the loader)."""
    out = []
    for i, t in enumerate(_tenants(doc)):
        if not isinstance(t, dict):
            continue
        ob = t.get("outbound")
        if not isinstance(ob, dict) or ob.get("password", "") == "":
            continue
        slug = t.get("slug")
        out.append(_Entry(i, slug if isinstance(slug, str) else "", ob["password"]))
    return out


def _problems(
    path: Path, text: str, doc: dict[str, Any], entries: list[_Entry]
) -> tuple[list[str], Keyring | None]:
    """Every reason a password cannot be used, each as ``PATH:LINE: key: message``."""
    c = Checker(path, text)
    ring: Keyring | None = None
    if any(isinstance(e.value, str) and is_encrypted(e.value) for e in entries):
        try:
            ring = load_keyring(_key_file(path, doc), create=False)
        except SecretError as exc:
            c.error("gateway.key_file", str(exc))
    for e in entries:
        if not isinstance(e.value, str):
            c.error(e.key, "must be a string")
        elif not e.slug:
            c.error(f"tenants[{e.index}].slug", "required to check its outbound password")
        elif not is_encrypted(e.value):
            c.error(e.key, f"must be encrypted: run gateway secrets encrypt --tenant {e.slug}")
        elif ring is not None:
            try:
                ring.decrypt(e.value, tenant=e.slug, field="password")
            except SecretError as exc:
                c.error(e.key, str(exc))
    return c.problems, ring


def _report(problems: list[str]) -> None:
    for p in problems:
        print(f"gateway: config error: {p}", file=sys.stderr)


# -- actions -------------------------------------------------------------------


def _encrypt(args: argparse.Namespace) -> int:
    path, slug, field = config_path(args), args.tenant, args.field
    if not _FIELD.fullmatch(field):
        raise CommandError(f"bad --field {field!r}: lower-case letters, digits and '_'")
    _, doc = _read_config(path)
    slugs = [t.get("slug") for t in _tenants(doc) if isinstance(t, dict)]
    if slug not in slugs:
        known = ", ".join(s for s in slugs if isinstance(s, str)) or "none"
        raise CommandError(f"unknown tenant {slug!r} in {path} (tenants: {known})")
    plaintext = _read_password()
    ring = load_keyring(_key_file(path, doc))
    print(ring.encrypt(plaintext, tenant=slug, field=field))
    return 0


def _read_password() -> str:
    """Piped input is taken as is (one trailing newline dropped); a terminal is asked twice."""
    if sys.stdin is None:
        raise CommandError("no stdin to read the password from")
    if sys.stdin.isatty():
        try:
            first = getpass.getpass("Password: ")
            again = getpass.getpass("Again: ")
        except EOFError:
            raise CommandError("no password given") from None
        if first != again:
            raise CommandError("the passwords do not match")
        plaintext = first
    else:
        try:
            # Never echo a decode error: its message quotes bytes of the password.
            plaintext = sys.stdin.buffer.read().decode("utf-8")
        except UnicodeDecodeError:
            raise CommandError("the password on stdin is not UTF-8") from None
        if plaintext.endswith("\r\n"):
            plaintext = plaintext[:-2]
        elif plaintext.endswith("\n"):
            plaintext = plaintext[:-1]
    if not plaintext:
        raise CommandError("refusing an empty password")
    return plaintext


def _check(args: argparse.Namespace) -> int:
    path = config_path(args)
    text, doc = _read_config(path)
    entries = _entries(doc)
    problems, _ = _problems(path, text, doc, entries)
    if problems:
        _report(problems)
        return os.EX_CONFIG
    print(f"ok: {len(entries)} secrets decrypt")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    """Re-encrypt under a fresh key, but only once every current value is known good.

    The old keys stay in the key file: instances still running the old config
    need them until they get the new one.
    """
    import tomlkit

    path = config_path(args)
    text, doc = _read_config(path)
    entries = _entries(doc)
    problems, ring = _problems(path, text, doc, entries)
    if problems:
        _report(problems)
        print("gateway: rotate: nothing changed; fix the above first", file=sys.stderr)
        return os.EX_CONFIG
    plain: dict[int, str] = {}
    if ring is not None:
        plain = {e.index: ring.decrypt(e.value, tenant=e.slug, field="password") for e in entries}
    key_file = _key_file(path, doc)
    kid = add_key(key_file)
    new_ring = dataclasses.replace(load_keyring(key_file, create=False), primary=kid)

    edited = tomlkit.parse(text)
    for e in entries:
        value = new_ring.encrypt(plain[e.index], tenant=e.slug, field="password")
        edited["tenants"][e.index]["outbound"]["password"] = value  # type: ignore[index]
    new_text = edited.as_string()
    _verify(path, new_text, new_ring, plain)
    _replace_file(path, new_text)

    print(f"rotated {len(entries)} secrets to key {kid}")
    from gateway.ops.gdpr import record_admin_event

    problem = record_admin_event(
        path, "secrets.rotated", sorted({e.slug for e in entries}), {"key_id": kid}
    )
    if problem:
        print(f"note: the rotation is not in the audit log: {problem}", file=sys.stderr)
    print(
        f"old keys are still in {key_file}: remove them once every instance runs this config",
        file=sys.stderr,
    )
    if os.environ.get(ENV_VAR, "").strip():
        print(
            f"note: {ENV_VAR} is set: add key {kid} from {key_file} to it on every instance",
            file=sys.stderr,
        )
    return 0


def _verify(path: Path, new_text: str, ring: Keyring, plain: dict[int, str]) -> None:
    """Read back what would be written, so a rewrite can never lose a password."""
    doc = tomllib.loads(new_text)
    got = {e.index: ring.decrypt(e.value, tenant=e.slug, field="password") for e in _entries(doc)}
    if got != plain:
        raise CommandError(
            f"rotate: the rewritten config did not read back; {path} is unchanged", os.EX_SOFTWARE
        )


def _replace_file(path: Path, text: str) -> None:
    """Swap the config in one step, keeping its mode, so a crash never leaves half a file."""
    path = path.resolve()  # a symlinked config stays a symlink
    replace_file(path, text, path.stat().st_mode & 0o7777)
