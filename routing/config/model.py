"""The frozen shape of gateway.toml: what the rest of the code reads.

routing/config/parse.py builds these from the file and resolve.py finishes
them (decrypted passwords, the token secret); nothing else constructs them
except tests.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from routing.config.jobs import BackupSettings, ReportSettings, TenantReports
from routing.rules import Rule
from routing.sla import SlaSettings

__all__ = [
    "BLOB_STORES",
    "LANGUAGES",
    "Agent",
    "GatewayConfig",
    "HttpSettings",
    "ImapMailbox",
    "LimitsConfig",
    "LmtpSettings",
    "OutboundAccount",
    "OutboundSettings",
    "Queue",
    "Retention",
    "ScannerSettings",
    "SmtpSettings",
    "Tenant",
    "default_config_path",
]

# The languages the gateway speaks (web pages, sign-in mail); gateway.web.i18n holds the texts.
LANGUAGES = ("en", "de", "tr")
BLOB_STORES = ("files", "database")  # [gateway] blobs


@dataclass(frozen=True, slots=True)
class Agent:
    address: str
    name: str = ""
    # Other addresses the agent answers from (docs/config.md): a reply with the agent's
    # token is relayed from any of them, and none of them is ever a client.
    aliases: tuple[str, ...] = ()

    def answers_from(self, address: str) -> bool:
        return address == self.address or address in self.aliases


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
    # The provider's Authentication-Results id to believe (the block of headers with it
    # the provider added on top, routing/auth_front.py); empty: none is believed.
    trusted_authserv_id: str = ""

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
    # Ticket life: an agent's relayed answer sets the ticket pending (waiting on the
    # client), and a ticket pending this many seconds closes itself (None: never).
    pending_on_agent_reply: bool = False
    auto_close_after: float | None = None
    sla: SlaSettings | None = None  # None: no SLA clocks for this tenant
    reports: TenantReports = field(default_factory=TenantReports)
    # Worked out once from the two above, not per message (routing/language.py reads
    # them on every message's way in): whether the tenant answers each client in the
    # client's language (it offers several), and whether its mail may need its
    # language told at all (that, or a rule tests ``language``). Not config keys.
    chooses_language: bool = field(init=False, repr=False, compare=False)
    tells_language: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        chooses = len(self.languages) > 1
        tests = any(c.key == "language" for r in self.rules for c in (*r.when, *r.unless))
        object.__setattr__(self, "chooses_language", chooses)
        object.__setattr__(self, "tells_language", chooses or tests)

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
    # A front MTA that checks SPF/DKIM/DMARC: the Authentication-Results with this id it
    # added on top are believed, merged, and no DNS is asked; empty: it checks itself.
    trusted_authserv_id: str = ""


@dataclass(frozen=True, slots=True)
class LmtpSettings:
    """The LMTP listener (RFC 2033) a local MTA hands mail to; off unless ``listen`` is
    set. Size limit and pipeline timeout are [smtp]'s: it is the same intake."""

    host: str = ""
    port: int = 0
    path: Path | None = None  # a unix socket instead of TCP

    @property
    def enabled(self) -> bool:
        return self.path is not None or bool(self.host)


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
    # Reverse proxies (IPs or CIDRs) whose X-Forwarded-For names the client.
    trusted_proxies: tuple[str, ...] = ()
    # A proof-of-work (altcha) the browser solves before the link form is taken.
    link_challenge: bool = True

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    def agent_ticket_url(self, tenant: str, ref: str) -> str:
        """The agents' page of a ticket (the agents' web desk serves it), for the
        mails that point an agent there; "" when there is no web side to point at."""
        if not self.enabled:
            return ""
        return f"{self.base_url}/a/{tenant}/t/{ref}"


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
    # The client's files an agent's notice carries, in bytes as stored; the rest are
    # listed in it with a link to the ticket's page. Written as a size ("10 MiB").
    notice_attachments_max: int = 10 * 1024 * 1024
    # The daemon's SMTP conversations in a worker process (gateway/sending/), off the
    # GIL its event loop and writer share; 0 = in the daemon (as one-shot commands do).
    send_workers: int = 0


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
    # Sender authentication's DNS: "system" (/etc/resolv.conf), "none" (no checks:
    # messages are auth=none), or "HOST:PORT" of a resolver; each lookup's timeout.
    dns_resolver: str = "system"
    dns_timeout: float = 5.0
    lmtp: LmtpSettings = field(default_factory=LmtpSettings)
    # The event loop: "asyncio", "uvloop" (the optional ``fast`` extra), or "auto":
    # uvloop when it is installed.
    loop: str = "auto"
    # Processes that parse mail off the daemon's GIL (gateway/intake/parse_pool.py):
    # by default one per core but one, none on one core; 0 parses in the daemon.
    parse_workers: int = 0

    def tenant(self, slug: str) -> Tenant | None:
        for t in self.tenants:
            if t.slug == slug:
                return t
        return None


def default_config_path() -> Path:
    """`GATEWAY_CONFIG`, else ./gateway.toml: the order every command follows."""
    return Path(os.environ.get("GATEWAY_CONFIG") or "gateway.toml")
