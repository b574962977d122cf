"""gateway.toml -> a frozen, validated GatewayConfig.

The whole file is checked before anything uses it, and every error names the
file, line and key path, so an admin never meets a traceback and a bad reload
can be refused while the running config stays.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from routing.errors import ConfigError
from routing.ops_config import (
    BackupSettings,
    ReportSettings,
    TenantReports,
    parse_backup,
    parse_reports,
    parse_tenant_reports,
)
from routing.rules import Rule, build_rules
from routing.sla import SlaSettings, parse_sla

__all__ = [
    "BLOB_STORES",
    "Agent",
    "GatewayConfig",
    "HttpSettings",
    "ImapMailbox",
    "LimitsConfig",
    "OutboundAccount",
    "OutboundSettings",
    "Queue",
    "Retention",
    "ScannerSettings",
    "SmtpSettings",
    "Tenant",
    "default_config_path",
    "load_config",
]

_SLUG = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
_PREFIX = re.compile(r"^[A-Z][A-Z0-9]{0,15}$")
_ADDR = re.compile(r"^[^@\s+]+@[^@\s]+\.[^@\s]+$")
# The languages the gateway speaks (web pages, sign-in mail); gateway.web.i18n holds the texts.
LANGUAGES = ("en", "de", "tr")
BLOB_STORES = ("files", "database")  # [gateway] blobs
_SCANNER_ADDRESS = re.compile(r"(unix:)?/\S+|(\[[0-9A-Fa-f:.]+\]|[\w.-]+):\d{1,5}")


@dataclass(frozen=True, slots=True)
class Agent:
    address: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class OutboundAccount:
    """The tenant's own SMTP account: every mail for this tenant leaves through it."""

    host: str
    port: int = 587
    security: str = "starttls"  # starttls | tls | none
    username: str = ""
    password: str = field(default="", repr=False)  # decrypted at load; never logged
    from_address: str = ""
    ca_file: Path | None = None  # a private CA to trust for this server's certificate


@dataclass(frozen=True, slots=True)
class ImapMailbox:
    """A support mailbox at the tenant's provider that the gateway drains."""

    host: str
    username: str
    port: int = 993
    security: str = "tls"  # tls | starttls | none (plain only to 127.0.0.1)
    password: str = field(default="", repr=False)
    folder: str = "INBOX"
    processed_folder: str = "Processed"
    quarantine_folder: str = "Quarantine"
    idle: bool = True
    poll_interval: float = 60.0
    address: str = ""  # the tenant address this mailbox receives for
    timeout: float = 30.0  # every IMAP command
    max_failures: int = 5  # deferrals of one message before it is quarantined
    ca_file: Path | None = None

    @property
    def key(self) -> str:
        return f"{self.username}@{self.host}:{self.port}/{self.folder}"


@dataclass(frozen=True, slots=True)
class Queue:
    """A named line of work; when it names agents, only they hear of its tickets."""

    name: str
    agents: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Retention:
    """How long a tenant's data is kept, in days; 0 keeps it for ever (docs/privacy.md)."""

    closed_tickets_days: int = 365  # a closed ticket, its messages and attachments
    raw_messages_days: int = 90  # the raw mail as received, and copies of mail we sent
    audit_days: int = 365


@dataclass(frozen=True, slots=True)
class Tenant:
    slug: str
    name: str
    addresses: tuple[str, ...]
    tag_prefix: str
    agents: tuple[Agent, ...] = ()
    acknowledge: bool = True
    outbound: OutboundAccount | None = None
    imap: tuple[ImapMailbox, ...] = ()
    retention: Retention = Retention()
    log_addresses: bool = False  # False: addresses reach the logs only as keyed hashes
    queues: tuple[Queue, ...] = ()
    default_queue: str = "default"
    rules: tuple[Rule, ...] = ()
    languages: tuple[str, ...] = LANGUAGES  # the first is the default
    templates: Path | None = None  # this tenant's template overrides
    ack_limit: int | None = None  # None: [outbound] ack_limit
    ack_window: float | None = None
    sla: SlaSettings | None = None  # None: no SLA clocks for this tenant
    reports: TenantReports = field(default_factory=TenantReports)

    def queue(self, name: str | None) -> Queue | None:
        for q in self.queues:
            if q.name == name:
                return q
        return None

    @property
    def from_address(self) -> str:
        if self.outbound is not None and self.outbound.from_address:
            return self.outbound.from_address
        return self.addresses[0]

    def agent(self, address: str) -> Agent | None:
        for a in self.agents:
            if a.address == address:
                return a
        return None


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str = "127.0.0.1"
    port: int = 2525
    max_message_size: int = 25 * 1024 * 1024
    pipeline_timeout: float = 120.0
    max_received: int = 50
    tls_cert: Path | None = None  # STARTTLS is offered when a certificate is set
    tls_key: Path | None = None
    require_tls: bool = False  # refuse MAIL FROM before STARTTLS


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """The web side: health, status and metrics (and, later, the clients' pages)."""

    host: str = "127.0.0.1"
    port: int = 8080
    enabled: bool = True
    # bcrypt hash; when set, /status and /metrics need HTTP Basic "admin:<password>"
    # from anywhere; when empty they answer loopback clients only.
    admin_password_hash: str = field(default="", repr=False)
    public_url: str = ""  # how clients reach us, for the links we mail; default http://listen
    # Cookies without Secure, for plain-http development on loopback only.
    insecure_cookies: bool = False

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")


@dataclass(frozen=True, slots=True)
class ScannerSettings:
    """Where clamd listens; mail with attachments is deferred when it does not answer."""

    address: str = "127.0.0.1:3310"
    deadline: float = 60.0
    probe_interval: float = 30.0
    max_stream: int = 0  # clamd's StreamMaxLength; 0 = let clamd say it


@dataclass(frozen=True, slots=True)
class OutboundSettings:
    """Delivery policy shared by every tenant's account."""

    ack_limit: int = 10  # acknowledgements per sender per window (RFC 3834 section 2)
    ack_window: float = 3 * 3600.0
    max_age: float = 4 * 24 * 3600.0  # give up on a mail after this long
    retry_base: float = 30.0  # first retry after about this, doubling, jittered
    retry_max: float = 3600.0
    poll_interval: float = 1.0
    timeout: float = 60.0  # one delivery attempt, connect to final reply
    templates: Path | None = None  # folder with <slug>/<name>.txt.j2 overrides
    # How long a claimed (``sending``) row stays this instance's; after that another
    # instance takes it over. Longer than one attempt can last (2 x timeout).
    claim_lease: float = 180.0


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_header_bytes: int = 256 * 1024
    max_mime_depth: int = 50
    max_parts: int = 1000


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    path: Path
    hostname: str
    data_dir: Path
    database_url: str
    secret: bytes = field(repr=False)
    smtp: SmtpSettings
    scanner: ScannerSettings
    limits: LimitsConfig
    tenants: tuple[Tenant, ...]
    log_format: str = "json"
    outbound: OutboundSettings = field(default_factory=OutboundSettings)
    key_file: Path | None = None
    http: HttpSettings = field(default_factory=HttpSettings)
    watch_config: bool = True  # reload when the file changes, not only on SIGHUP
    backup: BackupSettings = field(default_factory=BackupSettings)
    reports: ReportSettings = field(default_factory=ReportSettings)
    # This instance's name among several on one database (docs/scaling.md): the
    # holder of its leases and outbox claims. Distinct per instance; the host
    # name by default, so a restarted instance gets its own claims back at once.
    instance: str = ""
    lease_seconds: float = 30.0  # IMAP mailbox and periodic-job leases
    # Where raw mail and attachments live: "files" under data_dir/blobs (one
    # machine), or "database" rows (several instances on one PostgreSQL).
    blobs: str = "database"

    def tenant(self, slug: str) -> Tenant | None:
        for t in self.tenants:
            if t.slug == slug:
                return t
        return None


def default_config_path() -> Path:
    """`GATEWAY_CONFIG`, else ./gateway.toml: the order every command follows."""
    return Path(os.environ.get("GATEWAY_CONFIG") or "gateway.toml")


def _line_index(text: str) -> dict[str, int]:
    """Map key paths such as ``tenants[1].addresses`` to 1-based line numbers.

    tomllib reports lines only for syntax errors; a validation error must
    still point at its line, so we walk the table headers and keys ourselves.
    """
    index: dict[str, int] = {}
    counters: dict[str, int] = {}
    prefix = ""
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("[["):
            name = line[2:].split("]]", 1)[0].strip()
            parent, _, leaf = name.rpartition(".")
            base = _resolve(parent, counters) if parent else ""
            key = f"{base}.{leaf}" if base else leaf
            counters[key] = counters.get(key, -1) + 1
            prefix = f"{key}[{counters[key]}]"
            index.setdefault(prefix, n)
            index.setdefault(key, n)  # "expected a table, not [[...]]" points here
        elif line.startswith("["):
            name = line[1:].split("]", 1)[0].strip()
            prefix = _resolve(name, counters)
            index.setdefault(prefix, n)
        elif "=" in line and not line.startswith("#"):
            key = line.split("=", 1)[0].strip().strip('"')
            index.setdefault(f"{prefix}.{key}" if prefix else key, n)
    return index


def _resolve(name: str, counters: dict[str, int]) -> str:
    out = ""
    for part in name.split("."):
        out = f"{out}.{part}" if out else part
        if out in counters:
            out = f"{out}[{counters[out]}]"
    return out


class _Checker:
    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = _line_index(text)
        self.problems: list[str] = []

    def error(self, key: str, message: str) -> None:
        probe = key
        while probe and probe not in self.lines:
            probe = probe.rsplit(".", 1)[0] if "." in probe else ""
        line = self.lines.get(probe, 0)
        self.problems.append(f"{self.path}:{line}: {key}: {message}")

    def take(self, table: dict[str, Any], key: str, base: str, kind: type, default: Any) -> Any:
        value = table.get(key, default)
        if value is default:
            return default
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.error(f"{base}.{key}" if base else key, f"expected {kind.__name__}")
            return default
        return value

    def unknown(self, table: dict[str, Any], allowed: set[str], base: str) -> None:
        for key in table:
            if key not in allowed:
                self.error(f"{base}.{key}" if base else key, "unknown key")


def load_config(path: Path | str | None = None) -> GatewayConfig:
    """Read and validate a config file; raise ConfigError naming every problem."""
    path = Path(path) if path is not None else default_config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}:0: cannot read config: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}:0: config is not UTF-8"]) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\(at line (\d+), column \d+\)", msg)
        line = m.group(1) if m else "0"
        raise ConfigError([f"{path}:{line}: syntax: {msg.split(' (at line')[0]}"]) from None
    return _build(path, text, doc)


_GATEWAY_KEYS = {
    "hostname", "data_dir", "database_url", "secret_file", "log_format", "key_file",
    "watch_config", "instance", "lease_seconds", "blobs",
}  # fmt: skip


def _build(path: Path, text: str, doc: dict[str, Any]) -> GatewayConfig:
    c = _Checker(path, text)
    base_dir = path.resolve().parent
    c.unknown(doc, {"gateway", "smtp", "http", "scanner", "limits", "outbound", "tenants",
                    "backup", "reports"}, "")  # fmt: skip

    g = doc.get("gateway", {})
    c.unknown(
        g,
        _GATEWAY_KEYS,
        "gateway",
    )
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
    instance = c.take(g, "instance", "gateway", str, "") or socket.gethostname()
    if len(instance) > 128:
        c.error("gateway.instance", "at most 128 characters")
    lease_seconds = c.take(g, "lease_seconds", "gateway", float, 30.0)
    if not lease_seconds >= 3:
        c.error("gateway.lease_seconds", "must be 3 or more")
    blobs = c.take(g, "blobs", "gateway", str, "database")
    if blobs not in BLOB_STORES:
        c.error("gateway.blobs", "must be 'files' or 'database'")

    h = doc.get("http", {})
    c.unknown(
        h, {"listen", "enabled", "admin_password_hash", "public_url", "insecure_cookies"}, "http"
    )
    http_listen = c.take(h, "listen", "http", str, "127.0.0.1:8080")
    http_host, _, http_port = http_listen.rpartition(":")
    if not http_host or not http_port.isdigit() or not 0 <= int(http_port) < 65536:
        c.error("http.listen", "expected HOST:PORT")
        http_host, http_port = "127.0.0.1", "8080"
    admin_hash = c.take(h, "admin_password_hash", "http", str, "")
    if admin_hash and not admin_hash.startswith(("$2b$", "$2a$", "$2y$")):
        c.error("http.admin_password_hash", "expected a bcrypt hash ($2b$...)")
    public_url = c.take(h, "public_url", "http", str, "")
    if public_url and not public_url.startswith(("https://", "http://")):
        c.error("http.public_url", "expected an http:// or https:// URL")
    insecure = c.take(h, "insecure_cookies", "http", bool, False)
    if insecure and http_host not in ("127.0.0.1", "::1", "localhost"):
        c.error("http.insecure_cookies", "only allowed when listening on loopback")
    http = HttpSettings(
        host=http_host,
        port=int(http_port),
        enabled=c.take(h, "enabled", "http", bool, True),
        admin_password_hash=admin_hash,
        public_url=public_url,
        insecure_cookies=insecure,
    )

    s = doc.get("smtp", {})
    c.unknown(
        s, {"listen", "max_message_size", "pipeline_timeout", "max_received", *_TLS_KEYS}, "smtp"
    )
    listen = c.take(s, "listen", "smtp", str, "127.0.0.1:2525")
    host, _, port_s = listen.rpartition(":")
    if not host or not port_s.isdigit() or not 0 <= int(port_s) < 65536:
        c.error("smtp.listen", "expected HOST:PORT")
        host, port_s = "127.0.0.1", "2525"
    smtp = SmtpSettings(
        host=host.strip("[]"),
        port=int(port_s),
        max_message_size=c.take(s, "max_message_size", "smtp", int, 25 * 1024 * 1024),
        pipeline_timeout=c.take(s, "pipeline_timeout", "smtp", float, 120.0),
        max_received=c.take(s, "max_received", "smtp", int, 50),
        **_smtp_tls(c, s, base_dir),
    )

    sc = doc.get("scanner", {})
    c.unknown(sc, {"address", "deadline", "probe_interval", "max_stream"}, "scanner")
    scanner = ScannerSettings(
        address=c.take(sc, "address", "scanner", str, "127.0.0.1:3310"),
        deadline=c.take(sc, "deadline", "scanner", float, 60.0),
        probe_interval=c.take(sc, "probe_interval", "scanner", float, 30.0),
        max_stream=c.take(sc, "max_stream", "scanner", int, 0),
    )
    if not _SCANNER_ADDRESS.fullmatch(scanner.address):
        c.error("scanner.address", "expected host:port, unix:/path or an absolute socket path")
    for key in ("deadline", "probe_interval"):
        if not getattr(scanner, key) > 0:
            c.error(f"scanner.{key}", "must be greater than 0")
    if scanner.max_stream < 0:
        c.error("scanner.max_stream", "must be 0 (ask clamd) or a size in bytes")

    li = doc.get("limits", {})
    c.unknown(li, {"max_header_bytes", "max_mime_depth", "max_parts"}, "limits")
    limits = LimitsConfig(
        max_header_bytes=c.take(li, "max_header_bytes", "limits", int, 256 * 1024),
        max_mime_depth=c.take(li, "max_mime_depth", "limits", int, 50),
        max_parts=c.take(li, "max_parts", "limits", int, 1000),
    )

    outbound = _outbound(c, doc.get("outbound", {}), base_dir)
    tenants = _tenants(c, doc.get("tenants", []), key_file, base_dir)
    backup = parse_backup(c, doc.get("backup", {}), base_dir, data_dir)
    reports = parse_reports(c, doc.get("reports", {}), base_dir)
    if c.problems:
        raise ConfigError(c.problems)
    return GatewayConfig(
        path=path,
        hostname=hostname,
        data_dir=data_dir,
        database_url=database_url,
        secret=_secret(secret_file),
        smtp=smtp,
        scanner=scanner,
        limits=limits,
        tenants=tenants,
        log_format=log_format,
        outbound=outbound,
        key_file=key_file,
        http=http,
        watch_config=watch_config,
        backup=backup,
        reports=reports,
        instance=instance,
        lease_seconds=lease_seconds,
        blobs=blobs,
    )


def _outbound(c: _Checker, o: dict[str, Any], base_dir: Path) -> OutboundSettings:
    d = OutboundSettings()
    floats = ("ack_window", "max_age", "retry_base", "retry_max", "poll_interval", "timeout")
    c.unknown(o, {"ack_limit", "templates", "claim_lease", *floats}, "outbound")
    values: dict[str, Any] = {"ack_limit": c.take(o, "ack_limit", "outbound", int, d.ack_limit)}
    if values["ack_limit"] < 0:
        c.error("outbound.ack_limit", "must be 0 or more")
    for key in floats:
        values[key] = c.take(o, key, "outbound", float, getattr(OutboundSettings(), key))
        if not values[key] > 0:
            c.error(f"outbound.{key}", "must be greater than 0")
    templates = c.take(o, "templates", "outbound", str, "")
    if templates:
        folder = base_dir / templates
        if not folder.is_dir():
            c.error("outbound.templates", f"no such folder: {folder}")
        values["templates"] = folder
    # Default: one attempt's longest time (2 x timeout) and a minute to spare.
    values["claim_lease"] = c.take(
        o, "claim_lease", "outbound", float, 2 * values["timeout"] + 60
    )
    if not values["claim_lease"] > 2 * values["timeout"]:
        c.error("outbound.claim_lease", "must be longer than 2 x outbound.timeout")
    return OutboundSettings(**values)


def _account(
    c: _Checker, raw: Any, base: str, slug: str, key_file: Path, base_dir: Path
) -> OutboundAccount | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        c.error(base, "expected a table")
        return None
    c.unknown(
        raw, {"host", "port", "security", "username", "password", "from_address", "ca_file"}, base
    )
    host = c.take(raw, "host", base, str, "")
    if not host:
        c.error(f"{base}.host", "required")
    security = c.take(raw, "security", base, str, "starttls")
    if security not in ("starttls", "tls", "none"):
        c.error(f"{base}.security", "must be 'starttls', 'tls' or 'none'")
    default_port = {"tls": 465, "none": 25}.get(security, 587)
    port = c.take(raw, "port", base, int, default_port)
    if not 0 < port < 65536:
        c.error(f"{base}.port", "must be 1-65535")
    from_address = c.take(raw, "from_address", base, str, "").lower()
    if from_address and not _ADDR.match(from_address):
        c.error(f"{base}.from_address", "must be a plain address")
    password = ""
    stored = c.take(raw, "password", base, str, "")
    if stored:
        password = _decrypt(c, stored, f"{base}.password", slug, key_file)
    ca_file = c.take(raw, "ca_file", base, str, "")
    if ca_file and not (base_dir / ca_file).is_file():
        c.error(f"{base}.ca_file", f"no such file: {base_dir / ca_file}")
    return OutboundAccount(
        ca_file=base_dir / ca_file if ca_file else None,
        host=host,
        port=port,
        security=security,
        username=c.take(raw, "username", base, str, ""),
        password=password,
        from_address=from_address,
    )


def _mailboxes(
    c: _Checker,
    raw: Any,
    base: str,
    slug: str,
    addresses: list[str],
    key_file: Path,
    base_dir: Path,
) -> tuple[ImapMailbox, ...]:
    if not isinstance(raw, list):
        c.error(f"{base}.imap", "expected [[tenants.imap]] tables")
        return ()
    out: list[ImapMailbox] = []
    keys = {
        "host", "port", "security", "username", "password", "folder", "processed_folder",
        "quarantine_folder", "idle", "poll_interval", "address", "timeout", "max_failures",
        "ca_file",
    }  # fmt: skip
    for i, m in enumerate(raw):
        mb = f"{base}.imap[{i}]"
        if not isinstance(m, dict):
            c.error(mb, "expected a table")
            continue
        c.unknown(m, keys, mb)
        d = ImapMailbox(host="", username="")
        host = c.take(m, "host", mb, str, "")
        username = c.take(m, "username", mb, str, "")
        for key, value in (("host", host), ("username", username)):
            if not value:
                c.error(f"{mb}.{key}", "required")
        # Implicit TLS is the default, as RFC 8314 recommends; STARTTLS for servers without it.
        security = c.take(m, "security", mb, str, "tls")
        if security not in ("tls", "starttls", "none"):
            c.error(f"{mb}.security", "must be 'tls', 'starttls' or 'none'")
        if security == "none" and host not in ("127.0.0.1", "::1", "localhost"):
            c.error(f"{mb}.security", "plain IMAP only to 127.0.0.1; use 'tls' or 'starttls'")
        stored = c.take(m, "password", mb, str, "")
        password = _decrypt(c, stored, f"{mb}.password", slug, key_file) if stored else ""
        address = c.take(m, "address", mb, str, addresses[0] if addresses else "").lower()
        if addresses and address not in addresses:
            c.error(f"{mb}.address", f"must be one of the tenant's addresses {addresses}")
        ca_file = c.take(m, "ca_file", mb, str, "")
        if ca_file and security == "none":
            c.error(f"{mb}.ca_file", "only used with security 'tls' or 'starttls'")
        elif ca_file and not (base_dir / ca_file).is_file():
            c.error(f"{mb}.ca_file", f"no such file: {base_dir / ca_file}")
        values: dict[str, Any] = {
            "port": c.take(m, "port", mb, int, 993 if security == "tls" else 143),
            "folder": c.take(m, "folder", mb, str, d.folder),
            "processed_folder": c.take(m, "processed_folder", mb, str, d.processed_folder),
            "quarantine_folder": c.take(m, "quarantine_folder", mb, str, d.quarantine_folder),
            "idle": c.take(m, "idle", mb, bool, True),
            "poll_interval": c.take(m, "poll_interval", mb, float, d.poll_interval),
            "timeout": c.take(m, "timeout", mb, float, d.timeout),
            "max_failures": c.take(m, "max_failures", mb, int, d.max_failures),
        }
        for key in ("poll_interval", "timeout", "max_failures"):
            if not values[key] > 0:
                c.error(f"{mb}.{key}", "must be greater than 0")
        out.append(
            ImapMailbox(
                host=host,
                username=username,
                security=security,
                password=password,
                address=address,
                ca_file=base_dir / ca_file if ca_file else None,
                **values,
            )
        )
    return tuple(out)


def _decrypt(c: _Checker, stored: str, key: str, slug: str, key_file: Path) -> str:
    """Only encrypted passwords are accepted; the error names the key and line, never the value."""
    from routing.secrets import SecretError, is_encrypted, load_keyring

    if not is_encrypted(stored):
        c.error(key, f"must be encrypted: run gateway secrets encrypt --tenant {slug}")
        return ""
    try:
        return load_keyring(key_file, create=False).decrypt(stored, tenant=slug, field="password")
    except SecretError as exc:
        c.error(key, str(exc))
        return ""


def _tenants(c: _Checker, raw: Any, key_file: Path, base_dir: Path) -> tuple[Tenant, ...]:
    if not isinstance(raw, list):
        c.error("tenants", "expected [[tenants]] tables")
        return ()
    out: list[Tenant] = []
    seen_addr: dict[str, str] = {}
    seen_slug: set[str] = set()
    seen_prefix: set[str] = set()
    for i, t in enumerate(raw):
        base = f"tenants[{i}]"
        c.unknown(t, _TENANT_KEYS, base)
        slug = c.take(t, "slug", base, str, "")
        if not _SLUG.match(slug):
            c.error(f"{base}.slug", "required: lower-case letters, digits and '-'")
        elif slug in seen_slug:
            c.error(f"{base}.slug", f"duplicate tenant {slug!r}")
        seen_slug.add(slug)
        prefix = c.take(t, "tag_prefix", base, str, slug.upper().replace("-", ""))
        if not _PREFIX.match(prefix) and (_SLUG.match(slug) or "tag_prefix" in t):
            c.error(f"{base}.tag_prefix", "upper-case letters and digits, starting with a letter")
        elif prefix in seen_prefix:
            c.error(f"{base}.tag_prefix", f"duplicate tag prefix {prefix!r}")
        seen_prefix.add(prefix)
        addresses = c.take(t, "addresses", base, list, [])
        clean: list[str] = []
        for j, a in enumerate(addresses):
            if not isinstance(a, str) or not _ADDR.match(a):
                c.error(f"{base}.addresses", f"entry {j + 1} is not a plain address (no '+')")
                continue
            a = a.lower()
            if a in seen_addr:
                c.error(f"{base}.addresses", f"{a} is already an address of {seen_addr[a]!r}")
            seen_addr[a] = slug
            clean.append(a)
        if not clean:
            c.error(f"{base}.addresses", "at least one address is required")
        agents: list[Agent] = []
        for j, a in enumerate(c.take(t, "agents", base, list, [])):
            abase = f"{base}.agents[{j}]"
            if not isinstance(a, dict):
                c.error(abase, "expected a table")
                continue
            c.unknown(a, {"address", "name"}, abase)
            addr = c.take(a, "address", abase, str, "")
            if not _ADDR.match(addr):
                c.error(f"{abase}.address", "required: a plain address")
            agents.append(Agent(address=addr.lower(), name=c.take(a, "name", abase, str, "")))
        agent_addrs = tuple(a.address for a in agents)
        queues, default_queue = _queues(c, t, base, agent_addrs)
        out.append(
            Tenant(
                slug=slug,
                name=c.take(t, "name", base, str, slug),
                addresses=tuple(clean),
                tag_prefix=prefix,
                agents=tuple(agents),
                acknowledge=c.take(t, "acknowledge", base, bool, True),
                outbound=_account(
                    c, t.get("outbound"), f"{base}.outbound", slug, key_file, base_dir
                ),
                imap=_mailboxes(c, t.get("imap", []), base, slug, clean, key_file, base_dir),
                queues=queues,
                default_queue=default_queue,
                rules=build_rules(
                    c,
                    t.get("rules", []),
                    base,
                    addresses=tuple(clean),
                    queues=tuple(q.name for q in queues),
                    agents=agent_addrs,
                ),
                **_tenant_settings(c, t, base, base_dir),
                retention=_retention(c, t.get("retention", {}), f"{base}.retention"),
                log_addresses=c.take(t, "log_addresses", base, bool, False),
                **_tenant_ops(c, t, base, queues),
            )
        )
    return tuple(out)


_TENANT_KEYS = {
    "slug", "name", "addresses", "tag_prefix", "agents", "acknowledge", "outbound", "imap",
    "queues", "default_queue", "rules", "languages", "templates", "ack_limit", "ack_window",
    "retention", "log_addresses", "sla", "reports",
}  # fmt: skip
_QUEUE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def _queues(
    c: _Checker, t: dict[str, Any], base: str, agents: tuple[str, ...]
) -> tuple[tuple[Queue, ...], str]:
    """Queues named in the file, plus the default one every unrouted ticket lands in."""
    raw = t.get("queues", [])
    out: list[Queue] = []
    if not isinstance(raw, list):
        c.error(f"{base}.queues", "expected [[tenants.queues]] tables")
        raw = []
    for i, q in enumerate(raw):
        qb = f"{base}.queues[{i}]"
        if not isinstance(q, dict):
            c.error(qb, "expected a table")
            continue
        c.unknown(q, {"name", "agents"}, qb)
        name = c.take(q, "name", qb, str, "")
        if not _QUEUE_NAME.match(name):
            c.error(f"{qb}.name", "required: lower-case letters, digits, '-' and '_'")
            continue
        if any(x.name == name for x in out):
            c.error(f"{qb}.name", f"duplicate queue {name!r}")
        members: list[str] = []
        for a in c.take(q, "agents", qb, list, []):
            addr = a.lower() if isinstance(a, str) else ""
            if addr not in agents:
                c.error(f"{qb}.agents", f"{a!r} is not an agent of this tenant")
            members.append(addr)
        out.append(Queue(name=name, agents=tuple(members)))
    default = c.take(t, "default_queue", base, str, out[0].name if out else "default")
    if not any(q.name == default for q in out):
        if "default_queue" in t and out:
            c.error(f"{base}.default_queue", f"unknown queue {default!r}")
        out.insert(0, Queue(name=default))
    return tuple(out), default


def _tenant_settings(
    c: _Checker, t: dict[str, Any], base: str, base_dir: Path
) -> dict[str, Any]:
    """The per-tenant overrides of gateway-wide settings."""
    out: dict[str, Any] = {}
    langs = c.take(t, "languages", base, list, list(LANGUAGES))
    if not langs or not all(isinstance(x, str) and x in LANGUAGES for x in langs):
        c.error(f"{base}.languages", f"expected a non-empty list from {list(LANGUAGES)}")
    else:
        out["languages"] = tuple(dict.fromkeys(langs))
    templates = c.take(t, "templates", base, str, "")
    if templates:
        folder = base_dir / templates
        if not folder.is_dir():
            c.error(f"{base}.templates", f"no such folder: {folder}")
        out["templates"] = folder
    if "ack_limit" in t:
        out["ack_limit"] = c.take(t, "ack_limit", base, int, None)
        if out["ack_limit"] is not None and out["ack_limit"] < 0:
            c.error(f"{base}.ack_limit", "must be 0 or more")
    if "ack_window" in t:
        out["ack_window"] = c.take(t, "ack_window", base, float, None)
        if out["ack_window"] is not None and not out["ack_window"] > 0:
            c.error(f"{base}.ack_window", "must be greater than 0")
    return out


def _retention(c: _Checker, raw: Any, base: str) -> Retention:
    if not isinstance(raw, dict):
        c.error(base, "expected a table")
        return Retention()
    d = Retention()
    keys = ("closed_tickets_days", "raw_messages_days", "audit_days")
    c.unknown(raw, set(keys), base)
    values = {k: c.take(raw, k, base, int, getattr(d, k)) for k in keys}
    for k, v in values.items():
        if v < 0:
            c.error(f"{base}.{k}", "must be 0 (keep for ever) or a number of days")
    return Retention(**values)


_TLS_KEYS = {"tls_cert", "tls_key", "require_tls"}


def _smtp_tls(c: _Checker, s: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """STARTTLS on the listener: a certificate and key that load now, not at the first EHLO."""
    cert = c.take(s, "tls_cert", "smtp", str, "")
    key = c.take(s, "tls_key", "smtp", str, "")
    require = c.take(s, "require_tls", "smtp", bool, False)
    if bool(cert) != bool(key):
        c.error("smtp.tls_key" if cert else "smtp.tls_cert", "tls_cert and tls_key go together")
    if require and not cert:
        c.error("smtp.require_tls", "needs smtp.tls_cert and smtp.tls_key")
    out: dict[str, Any] = {"require_tls": require}
    if cert and key:
        import ssl

        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                base_dir / cert, base_dir / key
            )
        except (OSError, ssl.SSLError) as exc:
            c.error("smtp.tls_cert", f"cannot load the certificate and key: {exc}")
        out.update(tls_cert=base_dir / cert, tls_key=base_dir / key)
    return out


def _tenant_ops(
    c: _Checker, t: dict[str, Any], base: str, queues: tuple[Queue, ...]
) -> dict[str, Any]:
    """``[tenants.sla]`` and ``[tenants.reports]`` (routing/sla.py, routing/ops_config.py)."""
    from routing.commands import PRIORITIES

    out: dict[str, Any] = {}
    if "sla" in t:
        out["sla"] = parse_sla(
            c, t["sla"], f"{base}.sla", queues=[q.name for q in queues], priorities=PRIORITIES
        )
    if "reports" in t:
        out["reports"] = parse_tenant_reports(c, t["reports"], base)
    return out


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
