"""A parsed config made usable: the steps that touch the world, then ``load_config``.

resolve() decrypts the stored passwords with the key file, loads the SMTP
certificate now (not at the first EHLO) and reads, or on first start creates,
the token secret. Its problems join the parse's, so an admin still sees every
one at once, each naming file, line and key.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import socket
from pathlib import Path

from routing.config.model import GatewayConfig, Tenant, default_config_path
from routing.config.parse import Parsed, parse_config
from routing.errors import ConfigError
from routing.schema import Checker

__all__ = ["load_config", "resolve"]


def load_config(path: Path | str | None = None) -> GatewayConfig:
    """Read and validate a config file; raise ConfigError naming every problem."""
    path = Path(path) if path is not None else default_config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}:0: cannot read config: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}:0: config is not UTF-8"]) from None
    return resolve(parse_config(path, text))


def resolve(parsed: Parsed) -> GatewayConfig:
    """The config ready to run, or ConfigError with the parse's problems and these."""
    c, config = parsed.checker, parsed.config
    tenants = tuple(_decrypted(c, i, t, config.key_file) for i, t in enumerate(config.tenants))
    _check_tls(c, config)
    if c.problems:
        raise ConfigError(c.problems)
    return dataclasses.replace(
        config,
        tenants=tenants,
        secret=_secret(parsed.secret_file),
        instance=config.instance or socket.gethostname(),
    )


def _decrypted(c: Checker, i: int, tenant: Tenant, key_file: Path | None) -> Tenant:
    """``tenant`` with its stored passwords decrypted; the error names the key, never the value."""
    from routing.secrets import SecretError, load_keyring

    def plain(stored: str, key: str) -> str:
        if not stored or key_file is None:
            return stored
        try:
            ring = load_keyring(key_file, create=False)
            return ring.decrypt(stored, tenant=tenant.slug, field="password")
        except SecretError as exc:
            c.error(key, str(exc))
            return ""

    base = f"tenants[{i}]"
    account = tenant.outbound
    if account is not None:
        account = dataclasses.replace(
            account, password=plain(account.password, f"{base}.outbound.password")
        )
    boxes = tuple(
        dataclasses.replace(m, password=plain(m.password, f"{base}.imap[{j}].password"))
        for j, m in enumerate(tenant.imap)
    )
    return dataclasses.replace(tenant, outbound=account, imap=boxes)


def _check_tls(c: Checker, config: GatewayConfig) -> None:
    """STARTTLS on the listener: a certificate and key that load now, not at the first EHLO."""
    smtp = config.smtp
    if smtp.tls_cert is None or smtp.tls_key is None:
        return
    import ssl

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            smtp.tls_cert, smtp.tls_key
        )
    except (OSError, ssl.SSLError) as exc:
        c.error("smtp.tls_cert", f"cannot load the certificate and key: {exc}")


def _secret(path: Path) -> bytes:
    """The HMAC key for reply tokens, made on first start so a demo just runs.

    It lives in its own 0600 file, apart from the config, so sharing or
    versioning gateway.toml never leaks it.
    """
    try:
        data = path.read_bytes().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = secrets.token_hex(32).encode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise ConfigError([f"{path}:0: gateway.secret_file: cannot read: {exc.strerror}"]) from None
    if len(data) < 32:
        raise ConfigError([f"{path}:0: gateway.secret_file: secret must be at least 32 bytes"])
    return data
