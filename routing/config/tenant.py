"""``[[tenants]]`` and the tables inside it: addresses, agents, queues, accounts, mailboxes.

Part of the pure parse (routing/config/parse.py): passwords are checked to be
encrypted and kept as stored; resolve.py decrypts them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from routing.config.jobs import parse_tenant_reports
from routing.config.model import (
    LANGUAGES,
    Agent,
    ImapMailbox,
    OutboundAccount,
    Queue,
    Retention,
    Tenant,
)
from routing.rules import build_rules
from routing.schema import LOOPBACK_HOSTS, Checker, keys_of
from routing.sla import parse_duration, parse_sla

__all__ = ["parse_tenants"]

_SLUG = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
_PREFIX = re.compile(r"^[A-Z][A-Z0-9]{0,15}$")
_ADDR = re.compile(r"^[^@\s+]+@[^@\s]+\.[^@\s]+$")
_QUEUE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def parse_tenants(c: Checker, raw: Any, base_dir: Path) -> tuple[Tenant, ...]:
    out: list[Tenant] = []
    seen_addr: dict[str, str] = {}
    seen_slug: set[str] = set()
    seen_prefix: set[str] = set()
    for _, base, t in c.tables(raw, "tenants", "tenants"):
        c.unknown(t, keys_of(Tenant), base)
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
        raw_agents = c.take(t, "agents", base, list, [])
        for _, abase, a in c.tables(raw_agents, f"{base}.agents", "tenants.agents"):
            c.unknown(a, keys_of(Agent), abase)
            addr = c.take(a, "address", abase, str, "")
            if not _ADDR.match(addr):
                c.error(f"{abase}.address", "required: a plain address")
            aliases = _aliases(c, a, abase, {addr.lower(), *clean})
            name = c.take(a, "name", abase, str, "")
            agents.append(Agent(address=addr.lower(), name=name, aliases=aliases))
        _distinct_agent_addresses(c, agents, f"{base}.agents")
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
                outbound=_account(c, t.get("outbound"), f"{base}.outbound", slug, base_dir),
                imap=_mailboxes(c, t.get("imap", []), base, slug, clean, base_dir),
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


def _queues(
    c: Checker, t: dict[str, Any], base: str, agents: tuple[str, ...]
) -> tuple[tuple[Queue, ...], str]:
    """Queues named in the file, plus the default one every unrouted ticket lands in."""
    out: list[Queue] = []
    for _, qb, q in c.tables(t.get("queues", []), f"{base}.queues", "tenants.queues"):
        c.unknown(q, keys_of(Queue), qb)
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


def _tenant_settings(c: Checker, t: dict[str, Any], base: str, base_dir: Path) -> dict[str, Any]:
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
    out["pending_on_agent_reply"] = c.take(t, "pending_on_agent_reply", base, bool, False)
    if "auto_close_after" in t:
        raw = t["auto_close_after"]
        seconds = parse_duration(raw) if isinstance(raw, str) else None
        if seconds is None or seconds <= 0:
            c.error(f"{base}.auto_close_after", "expected a duration such as '7d' or '36h'")
        out["auto_close_after"] = seconds
    return out


def _retention(c: Checker, raw: Any, base: str) -> Retention:
    if c.table(raw, base) is None:
        return Retention()
    keys = ("closed_tickets_days", "raw_messages_days", "audit_days")
    c.unknown(raw, keys_of(Retention), base)
    values = c.fields(raw, base, Retention, *keys)
    for k, v in values.items():
        if v < 0:
            c.error(f"{base}.{k}", "must be 0 (keep for ever) or a number of days")
    return Retention(**values)


def _tenant_ops(
    c: Checker, t: dict[str, Any], base: str, queues: tuple[Queue, ...]
) -> dict[str, Any]:
    """``[tenants.sla]`` and ``[tenants.reports]`` (routing/sla.py, routing/config/jobs.py)."""
    from routing.commands import PRIORITIES

    out: dict[str, Any] = {}
    if "sla" in t:
        out["sla"] = parse_sla(
            c, t["sla"], f"{base}.sla", queues=[q.name for q in queues], priorities=PRIORITIES
        )
    if "reports" in t:
        out["reports"] = parse_tenant_reports(c, t["reports"], base)
    return out


def _password(c: Checker, raw: dict[str, Any], base: str, slug: str) -> str:
    """The password as stored; only encrypted ones are accepted (resolve.py decrypts)."""
    stored = c.take(raw, "password", base, str, "")
    if stored:
        from routing.secrets import is_encrypted

        if not is_encrypted(stored):
            key = f"{base}.password"
            c.error(key, f"must be encrypted: run gateway secrets encrypt --tenant {slug}")
            return ""
    return str(stored)


def _account(c: Checker, raw: Any, base: str, slug: str, base_dir: Path) -> OutboundAccount | None:
    if raw is None or c.table(raw, base) is None:
        return None
    c.unknown(raw, keys_of(OutboundAccount), base)
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
    password = _password(c, raw, base, slug)
    if security == "none" and password and host not in LOOPBACK_HOSTS:
        # smtplib would send AUTH PLAIN, the password in base64, over the wire
        c.error(
            f"{base}.security", "a password in clear only to 127.0.0.1; use 'starttls' or 'tls'"
        )
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
    c: Checker, raw: Any, base: str, slug: str, addresses: list[str], base_dir: Path
) -> tuple[ImapMailbox, ...]:
    out: list[ImapMailbox] = []
    for _, mb, m in c.tables(raw, f"{base}.imap", "tenants.imap"):
        c.unknown(m, keys_of(ImapMailbox), mb)
        host = c.take(m, "host", mb, str, "")
        username = c.take(m, "username", mb, str, "")
        for key, value in (("host", host), ("username", username)):
            if not value:
                c.error(f"{mb}.{key}", "required")
        # Implicit TLS is the default, as RFC 8314 recommends; STARTTLS for servers without it.
        security = c.take(m, "security", mb, str, "tls")
        if security not in ("tls", "starttls", "none"):
            c.error(f"{mb}.security", "must be 'tls', 'starttls' or 'none'")
        if security == "none" and host not in LOOPBACK_HOSTS:
            c.error(f"{mb}.security", "plain IMAP only to 127.0.0.1; use 'tls' or 'starttls'")
        password = _password(c, m, mb, slug)
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
            **c.fields(
                m, mb, ImapMailbox, "folder", "processed_folder", "quarantine_folder", "idle",
                "poll_interval", "timeout", "max_failures", "trusted_authserv_id",
            ),
        }  # fmt: skip
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


def _aliases(c: Checker, a: dict[str, Any], base: str, taken: set[str]) -> tuple[str, ...]:
    """An agent's ``aliases``: plain addresses, none its own address or the tenant's."""
    out: list[str] = []
    for j, alias in enumerate(c.take(a, "aliases", base, list, [])):
        if not isinstance(alias, str) or not _ADDR.match(alias):
            c.error(f"{base}.aliases", f"entry {j + 1} is not a plain address (no '+')")
            continue
        alias = alias.lower()
        if alias in taken or alias in out:
            c.error(f"{base}.aliases", f"{alias} is already an address of this tenant or agent")
            continue
        out.append(alias)
    return tuple(out)


def _distinct_agent_addresses(c: Checker, agents: list[Agent], base: str) -> None:
    """One address answers for one agent: a reply token names exactly one of them."""
    owner: dict[str, str] = {}
    for agent in agents:
        for address in (agent.address, *agent.aliases):
            if owner.get(address, agent.address) != agent.address:
                c.error(base, f"{address} belongs to both {owner[address]} and {agent.address}")
            owner.setdefault(address, agent.address)
