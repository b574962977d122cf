"""gateway.toml text -> a checked draft of GatewayConfig, with no side effects.

``parse_config`` only reads: the text, and whether the files and folders it
names exist. What touches the world (decrypting passwords with the key file,
loading the TLS certificate, creating the token secret) is resolve.py's, so a
check of a file never writes one and a test can parse without a key ring.
Every problem is collected, each naming file, line and key.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from routing.config.jobs import parse_backup, parse_reports
from routing.config.model import (
    BLOB_STORES,
    GatewayConfig,
    HttpSettings,
    LimitsConfig,
    LmtpSettings,
    OutboundSettings,
    ScannerSettings,
    SmtpSettings,
)
from routing.config.tenant import parse_tenants
from routing.errors import ConfigError
from routing.schema import LOOPBACK_HOSTS, Checker, keys_of, parse_size

__all__ = ["Parsed", "parse_config"]

_SCANNER_ADDRESS = re.compile(r"(unix:)?/\S+|(\[[0-9A-Fa-f:.]+\]|[\w.-]+):\d{1,5}")
_RESOLVER = re.compile(r"(\[[0-9A-Fa-f:]+\]|[0-9.]+):\d{1,5}")
_TABLES = {
    "gateway", "smtp", "lmtp", "http", "scanner", "limits", "outbound", "tenants", "backup",
    "reports",
}  # fmt: skip
_GATEWAY_KEYS = {
    "hostname", "data_dir", "database_url", "secret_file", "log_format", "key_file",
    "watch_config", "instance", "lease_seconds", "blobs", "dns_resolver", "dns_timeout",
    "loop", "parse_workers",
}  # fmt: skip
_LOOPS = ("auto", "asyncio", "uvloop")
_LISTEN = frozenset({"host", "port"})  # one ``listen = "HOST:PORT"`` key in the file


@dataclass(frozen=True, slots=True)
class Parsed:
    """A config as the file states it: passwords still as stored (``enc:v1:...``), no
    token secret yet, ``instance`` empty unless set; ``checker`` holds its problems."""

    config: GatewayConfig
    secret_file: Path
    checker: Checker


def parse_config(path: Path, text: str) -> Parsed:
    """Check ``text`` (the file at ``path``) as a whole; raise ConfigError only for bad TOML."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\(at line (\d+), column \d+\)", msg)
        line = m.group(1) if m else "0"
        raise ConfigError([f"{path}:{line}: syntax: {msg.split(' (at line')[0]}"]) from None
    c = Checker(path, text)
    base_dir = path.resolve().parent
    c.unknown(doc, _TABLES, "")

    g = c.table(doc.get("gateway", {}), "gateway") or {}
    c.unknown(g, _GATEWAY_KEYS, "gateway")
    hostname = c.take(g, "hostname", "gateway", str, "helpdesk.localhost")
    data_dir = base_dir / c.take(g, "data_dir", "gateway", str, "var")
    default_db = f"sqlite+aiosqlite:///{data_dir / 'gateway.db'}"
    database_url = c.take(g, "database_url", "gateway", str, default_db)
    if database_url.startswith("sqlite+aiosqlite:///") and not database_url.startswith(
        "sqlite+aiosqlite:////"
    ):
        rel = database_url.removeprefix("sqlite+aiosqlite:///")
        database_url = f"sqlite+aiosqlite:///{base_dir / rel}"
    log_format = c.take(g, "log_format", "gateway", str, "json")
    if log_format not in ("json", "console"):
        c.error("gateway.log_format", "must be 'json' or 'console'")
    secret_file = base_dir / c.take(g, "secret_file", "gateway", str, str(data_dir / "secret.key"))
    key_file = base_dir / c.take(g, "key_file", "gateway", str, str(data_dir / "keys.toml"))
    watch_config = c.take(g, "watch_config", "gateway", bool, True)
    instance = c.take(g, "instance", "gateway", str, "")
    if len(instance) > 128:
        c.error("gateway.instance", "at most 128 characters")
    lease_seconds = c.take(g, "lease_seconds", "gateway", float, 30.0)
    if not lease_seconds >= 3:
        c.error("gateway.lease_seconds", "must be 3 or more")
    blobs = c.take(g, "blobs", "gateway", str, "database")
    if blobs not in BLOB_STORES:
        c.error("gateway.blobs", "must be 'files' or 'database'")
    dns_resolver = c.take(g, "dns_resolver", "gateway", str, "system")
    if dns_resolver not in ("system", "none") and not _RESOLVER.fullmatch(dns_resolver):
        c.error("gateway.dns_resolver", "must be 'system', 'none' or IP:PORT")
    dns_timeout = c.take(g, "dns_timeout", "gateway", float, 5.0)
    if not 0 < dns_timeout <= 60:
        c.error("gateway.dns_timeout", "must be more than 0 and at most 60 seconds")
    loop = c.take(g, "loop", "gateway", str, "auto")
    if loop not in _LOOPS:
        c.error("gateway.loop", "must be 'auto', 'asyncio' or 'uvloop'")
    parse_workers = c.take(g, "parse_workers", "gateway", int, _default_parse_workers())
    if not 0 <= parse_workers <= 64:
        c.error("gateway.parse_workers", "must be 0 (parse in the daemon) to 64")

    http = _http(c, c.table(doc.get("http", {}), "http") or {})
    smtp = _smtp(c, c.table(doc.get("smtp", {}), "smtp") or {}, base_dir)
    lmtp = _lmtp(c, c.table(doc.get("lmtp", {}), "lmtp") or {}, base_dir)
    scanner = _scanner(c, c.table(doc.get("scanner", {}), "scanner") or {})
    limits = _limits(c, c.table(doc.get("limits", {}), "limits") or {})
    outbound = _outbound(c, c.table(doc.get("outbound", {}), "outbound") or {}, base_dir)
    tenants = parse_tenants(c, doc.get("tenants", []), base_dir)
    config = GatewayConfig(
        path=path,
        hostname=hostname,
        data_dir=data_dir,
        database_url=database_url,
        secret=b"",
        smtp=smtp,
        scanner=scanner,
        limits=limits,
        tenants=tenants,
        log_format=log_format,
        outbound=outbound,
        key_file=key_file,
        http=http,
        watch_config=watch_config,
        backup=parse_backup(c, doc.get("backup", {}), base_dir, data_dir),
        reports=parse_reports(c, doc.get("reports", {}), base_dir),
        instance=instance,
        lease_seconds=lease_seconds,
        blobs=blobs,
        dns_resolver=dns_resolver,
        dns_timeout=dns_timeout,
        lmtp=lmtp,
        loop=loop,
        parse_workers=parse_workers,
    )
    return Parsed(config, secret_file, c)


def _default_parse_workers() -> int:
    """One parse worker per core but the one the daemon itself runs on; none on one core."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return cores - 1 if cores >= 2 else 0


def _listen(c: Checker, table: dict[str, Any], base: str, default: str) -> tuple[str, int]:
    listen = c.take(table, "listen", base, str, default)
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        c.error(f"{base}.listen", "expected HOST:PORT")
        host, port = default.rsplit(":", 1)
    return host, int(port)


def _http(c: Checker, h: dict[str, Any]) -> HttpSettings:
    c.unknown(h, keys_of(HttpSettings, "listen", without=_LISTEN), "http")
    host, port = _listen(c, h, "http", "127.0.0.1:8080")
    admin_hash = c.take(h, "admin_password_hash", "http", str, "")
    if admin_hash and not admin_hash.startswith(("$2b$", "$2a$", "$2y$")):
        c.error("http.admin_password_hash", "expected a bcrypt hash ($2b$...)")
    public_url = c.take(h, "public_url", "http", str, "")
    if public_url and not public_url.startswith(("https://", "http://")):
        c.error("http.public_url", "expected an http:// or https:// URL")
    insecure = c.take(h, "insecure_cookies", "http", bool, False)
    if insecure and host not in LOOPBACK_HOSTS:
        c.error("http.insecure_cookies", "only allowed when listening on loopback")
    proxies = c.take(h, "trusted_proxies", "http", list, [])
    for proxy in proxies:
        try:
            if not isinstance(proxy, str):
                raise TypeError(proxy)
            ipaddress.ip_network(proxy, strict=False)
        except (TypeError, ValueError):
            c.error("http.trusted_proxies", f"not an IP address or network: {proxy!r}")
    return HttpSettings(
        host=host,
        port=port,
        enabled=c.take(h, "enabled", "http", bool, True),
        admin_password_hash=admin_hash,
        public_url=public_url,
        insecure_cookies=insecure,
        trusted_proxies=tuple(str(p) for p in proxies),
        link_challenge=c.take(h, "link_challenge", "http", bool, True),
    )


def _smtp(c: Checker, s: dict[str, Any], base_dir: Path) -> SmtpSettings:
    """The listener; STARTTLS's certificate is only named here, resolve.py loads it."""
    c.unknown(s, keys_of(SmtpSettings, "listen", without=_LISTEN), "smtp")
    host, port = _listen(c, s, "smtp", "127.0.0.1:2525")
    values = c.fields(
        s, "smtp", SmtpSettings, "max_message_size", "pipeline_timeout", "max_received",
        "trusted_authserv_id",
    )  # fmt: skip
    cert = c.take(s, "tls_cert", "smtp", str, "")
    key = c.take(s, "tls_key", "smtp", str, "")
    require = c.take(s, "require_tls", "smtp", bool, False)
    if bool(cert) != bool(key):
        c.error("smtp.tls_key" if cert else "smtp.tls_cert", "tls_cert and tls_key go together")
    if require and not cert:
        c.error("smtp.require_tls", "needs smtp.tls_cert and smtp.tls_key")
    if cert and key:
        values.update(tls_cert=base_dir / cert, tls_key=base_dir / key)
    return SmtpSettings(host=host.strip("[]"), port=port, require_tls=require, **values)


def _lmtp(c: Checker, s: dict[str, Any], base_dir: Path) -> LmtpSettings:
    """``listen = "HOST:PORT"``, or a unix socket: ``"/path"`` or ``"unix:path"``
    (relative to the config file's folder). Absent: no LMTP listener."""
    c.unknown(s, {"listen"}, "lmtp")
    listen = c.take(s, "listen", "lmtp", str, "")
    if not listen:
        return LmtpSettings()
    if listen.startswith(("/", "unix:")):
        path = listen.removeprefix("unix:")
        if not path:
            c.error("lmtp.listen", "unix: needs a socket path")
            return LmtpSettings()
        sock = base_dir / path
        if not sock.parent.is_dir():
            c.error("lmtp.listen", f"no such folder: {sock.parent}")
        elif (sock.exists() or sock.is_symlink()) and not sock.is_socket():
            c.error("lmtp.listen", f"{sock} exists and is not a socket")
        return LmtpSettings(path=sock)
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        c.error("lmtp.listen", "expected HOST:PORT, /path/to/socket or unix:path")
        return LmtpSettings()
    return LmtpSettings(host=host.strip("[]"), port=int(port))


def _scanner(c: Checker, sc: dict[str, Any]) -> ScannerSettings:
    keys = ("address", "deadline", "probe_interval", "max_stream")
    c.unknown(sc, keys_of(ScannerSettings), "scanner")
    scanner = ScannerSettings(**c.fields(sc, "scanner", ScannerSettings, *keys))
    if not _SCANNER_ADDRESS.fullmatch(scanner.address):
        c.error("scanner.address", "expected host:port, unix:/path or an absolute socket path")
    for key in ("deadline", "probe_interval"):
        if not getattr(scanner, key) > 0:
            c.error(f"scanner.{key}", "must be greater than 0")
    if scanner.max_stream < 0:
        c.error("scanner.max_stream", "must be 0 (ask clamd) or a size in bytes")
    return scanner


def _limits(c: Checker, li: dict[str, Any]) -> LimitsConfig:
    keys = ("max_header_bytes", "max_mime_depth", "max_parts")
    c.unknown(li, keys_of(LimitsConfig), "limits")
    return LimitsConfig(**c.fields(li, "limits", LimitsConfig, *keys))


def _outbound(c: Checker, o: dict[str, Any], base_dir: Path) -> OutboundSettings:
    floats = ("ack_window", "max_age", "retry_base", "retry_max", "poll_interval", "timeout")
    c.unknown(o, keys_of(OutboundSettings), "outbound")
    values = c.fields(o, "outbound", OutboundSettings, "ack_limit", *floats)
    if values["ack_limit"] < 0:
        c.error("outbound.ack_limit", "must be 0 or more")
    for key in floats:
        if not values[key] > 0:
            c.error(f"outbound.{key}", "must be greater than 0")
    templates = c.take(o, "templates", "outbound", str, "")
    if templates:
        folder = base_dir / templates
        if not folder.is_dir():
            c.error("outbound.templates", f"no such folder: {folder}")
        values["templates"] = folder
    # Default: one attempt's longest time (2 x timeout) and a minute to spare.
    values["claim_lease"] = c.take(o, "claim_lease", "outbound", float, 2 * values["timeout"] + 60)
    if not values["claim_lease"] > 2 * values["timeout"]:
        c.error("outbound.claim_lease", "must be longer than 2 x outbound.timeout")
    size = parse_size(o.get("notice_attachments_max", "10 MiB"))
    if size is None:
        c.error(
            "outbound.notice_attachments_max",
            'expected a size such as "10 MiB", "500 KB" or a number of bytes',
        )
    else:
        values["notice_attachments_max"] = size
    default_send = 1 if _default_parse_workers() >= 1 else 0  # a core to spare
    values["send_workers"] = c.take(o, "send_workers", "outbound", int, default_send)
    if values["send_workers"] not in (0, 1):
        # One worker's event loop holds every lane's connection; a second buys nothing.
        c.error("outbound.send_workers", "must be 0 (send in the daemon) or 1")
    return OutboundSettings(**values)
