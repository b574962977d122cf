"""Sender authentication, as a receiving MX does it: SPF, DKIM and DMARC, over DNS.

Runs in the message path before the commit transaction (like the scan), in a
worker thread: the libraries resolve synchronously, and every lookup has a
timeout, so the event loop and the store's writer never wait on DNS. A lookup
that fails (timeout, SERVFAIL, no resolver) makes that check a ``temperror``,
never a pass. Behind a front MTA that already checks, the block of
``Authentication-Results`` with ``trusted_authserv_id`` it added on top is
believed instead and no DNS is asked (``routing/auth_front.py``).
The libraries: pyspf (RFC 7208), dkimpy (RFC 6376), dnspython (the
resolver), authres (RFC 8601 headers) and publicsuffixlist (the
organizational domain); the DMARC policy lookup (RFC 7489 section 6.6.3) is
here, since it is a few lines on top of them.
"""

from __future__ import annotations

import asyncio
import contextvars
import ipaddress
from email.parser import BytesHeaderParser
from typing import Any

import dkim
import dns.exception
import dns.rdatatype
import dns.resolver
import spf

from parsers.mime import head_of
from parsers.types import RawMessage
from routing.auth import (
    NONE,
    AuthVerdict,
    DkimResult,
    aligned,
    dkim_word,
    header_text,
    org_domain,
    summarise,
)
from routing.auth_front import trusted_verdict
from routing.config import GatewayConfig, Tenant

__all__ = ["Authenticator", "DnsFailure", "trusted_id"]

# Mail whose sender can be checked: what arrived from the outside world, and a saved
# message ``route explain`` is asked about.
CHECKED_SOURCES = frozenset({"smtp", "lmtp", "ingest", "imap", "explain"})


# Signatures verified per message: each may cost a lookup, and a sender chooses how
# many it adds; legitimate mail carries one to three.
_MAX_SIGNATURES = 5


class DnsFailure(Exception):
    """A lookup got no answer (timeout, SERVFAIL, no server): the check is a temperror."""


# The resolver of the check running in this thread; pyspf looks up through the
# module function below, which reads it (asyncio.to_thread copies the context).
_RESOLVER: contextvars.ContextVar[dns.resolver.Resolver] = contextvars.ContextVar("resolver")


def _lookup(resolver: dns.resolver.Resolver, name: str, qtype: str) -> list[Any]:
    try:
        answer = resolver.resolve(name, qtype, raise_on_no_answer=False, search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
        raise DnsFailure(f"{qtype} {name}: {type(exc).__name__}") from None
    except dns.exception.DNSException as exc:
        raise DnsFailure(f"{qtype} {name}: {type(exc).__name__}") from None
    return list(answer.rrset or [])


def _spf_dns(name: str, qtype: str, strict: bool = True, timeout: float = 20) -> list[Any]:
    """pyspf's lookup (its ``DNSLookup`` hook), through this check's resolver."""
    out: list[Any] = []
    try:
        rdatas = _lookup(_RESOLVER.get(), name, qtype)
    except DnsFailure as exc:
        raise spf.TempError(str(exc)) from None
    for r in rdatas:
        if qtype in ("A", "AAAA"):
            out.append(((name, qtype), r.address))
        elif qtype == "MX":
            out.append(((name, qtype), (r.preference, r.exchange)))
        elif qtype == "PTR":
            out.append(((name, qtype), r.target.to_text(True)))
        elif qtype in ("TXT", "SPF"):
            out.append(((name, qtype), r.strings))
        elif qtype == "CNAME":
            out.append(((name, qtype), r.target.to_text(True)))
    return out


spf.DNSLookup = _spf_dns  # pyspf has no per-call resolver; this one reads the context


def make_resolver(address: str, timeout: float) -> dns.resolver.Resolver | None:
    """``system`` (/etc/resolv.conf), ``none`` (no DNS: None), or ``HOST:PORT``."""
    if address == "none":
        return None
    if address == "system":
        try:
            resolver = dns.resolver.Resolver()
        except dns.resolver.NoResolverConfiguration:
            return None
    else:
        host, _, port = address.rpartition(":")
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [host.strip("[]")]
        resolver.port = int(port)
    resolver.timeout = timeout
    resolver.lifetime = timeout
    return resolver


def trusted_id(config: GatewayConfig, raw: RawMessage, tenants: list[Tenant]) -> str:
    """The front MTA's authserv-id to believe for this message's way in, or ""."""
    if raw.source == "imap":
        host = raw.envelope.peer.removeprefix("imap:")
        rcpt = raw.envelope.rcpt_tos[0].lower() if raw.envelope.rcpt_tos else ""
        local, _, domain = rcpt.partition("@")
        address = f"{local.split('+', 1)[0]}@{domain}"
        for tenant in tenants:
            for box in tenant.imap:
                if box.host == host and box.address == address:
                    return box.trusted_authserv_id
        return ""
    return config.smtp.trusted_authserv_id


class Authenticator:
    """One config's way of checking senders; rebuilt on reload with the pipeline's config."""

    def __init__(self, config: GatewayConfig) -> None:
        self.authserv_id = config.hostname
        self.timeout = config.dns_timeout
        self.resolver = make_resolver(config.dns_resolver, config.dns_timeout)

    async def verdict(
        self, raw: RawMessage, from_addr: str, trusted: str, helo: str = ""
    ) -> AuthVerdict:
        """The message's verdict; ``NONE`` when no check is possible (no DNS, no trusted
        header) or the mail did not come from outside (import, the web, explain)."""
        if raw.source not in CHECKED_SOURCES:
            return NONE
        from_domain = from_addr.rpartition("@")[2].lower() if "@" in from_addr else ""
        if trusted:
            head = BytesHeaderParser().parsebytes(head_of(raw.data, 262144))
            found = trusted_verdict(head, trusted, from_domain)
            return found if found is not None else NONE
        if self.resolver is None:
            return NONE
        return await asyncio.to_thread(self._check, raw, from_domain, helo)

    def _check(self, raw: RawMessage, from_domain: str, helo: str) -> AuthVerdict:
        _RESOLVER.set(self.resolver)  # this thread's context only
        ip = _ip(raw.envelope.peer)
        mail_from = raw.envelope.mail_from
        spf_result = helo_result = "none"
        spf_from = mail_from or (f"postmaster@{helo}" if helo else "")
        if ip is not None and spf_from:
            spf_result = self._spf(ip, spf_from, helo or spf_from.rpartition("@")[2])
        if ip is not None and helo:
            helo_result = self._spf(ip, f"postmaster@{helo}", helo)
        sigs = self._dkim(raw.data)
        dmarc = self._dmarc(from_domain, spf_result, spf_from, sigs)
        spf_domain = spf_from.rpartition("@")[2]
        summary = summarise(from_domain, spf_result, spf_domain, sigs, dmarc)
        header = header_text(
            self.authserv_id,
            spf=spf_result,
            mailfrom=spf_from if ip is not None else "",
            helo=helo if ip is not None else "",
            helo_spf=helo_result,
            dkim=sigs,
            dmarc=dmarc,
            from_domain=from_domain,
        )
        return AuthVerdict(summary, spf_result, dkim_word(sigs), dmarc, header)

    def _spf(self, ip: str, sender: str, helo: str) -> str:
        try:
            result, _code, _why = spf.query(
                ip, sender, helo, timeout=self.timeout, querytime=self.timeout
            ).check()
        except Exception:  # pyspf's own TempError is caught inside; anything else is ours
            return "temperror"
        return str(result)

    def _dkim(self, data: bytes) -> tuple[DkimResult, ...]:
        """Every DKIM-Signature, verified; a key that DNS did not give is a temperror."""
        try:
            d = dkim.DKIM(data, timeout=int(self.timeout) or 1)
        except Exception:
            return ()
        count = sum(1 for name, _ in d.headers if name.lower() == b"dkim-signature")
        count = min(count, _MAX_SIGNATURES)
        out: list[DkimResult] = []
        for idx in range(count):
            failed: list[str] = []

            def txt(name: bytes | str, timeout: float = 5, failed: list[str] = failed) -> Any:
                qname = name.decode() if isinstance(name, bytes) else name
                try:
                    rdatas = _lookup(self.resolver_or_fail(), qname, "TXT")
                except DnsFailure as exc:
                    failed.append(str(exc))
                    raise dkim.DnsTimeoutError(str(exc)) from None
                return b"".join(rdatas[0].strings) if rdatas else None

            try:
                ok = d.verify(idx=idx, dnsfunc=txt)
            except Exception:
                ok = False
            domain = d.domain.decode() if isinstance(d.domain, bytes) else str(d.domain or "")
            result = "pass" if ok else ("temperror" if failed else "fail")
            out.append(DkimResult(result, domain.lower()))
        return tuple(out)

    def resolver_or_fail(self) -> dns.resolver.Resolver:
        if self.resolver is None:
            raise DnsFailure("no resolver")
        return self.resolver

    def _dmarc(
        self, from_domain: str, spf_result: str, spf_from: str, sigs: tuple[DkimResult, ...]
    ) -> str:
        """RFC 7489: the From domain's record, else its organizational domain's."""
        if not from_domain:
            return "permerror"
        try:
            tags = self._dmarc_record(from_domain)
        except DnsFailure:
            return "temperror"
        if tags is None:
            return "none"
        strict_spf, strict_dkim = tags.get("aspf") == "s", tags.get("adkim") == "s"
        spf_domain = spf_from.rpartition("@")[2]
        if spf_result == "pass" and aligned(spf_domain, from_domain, strict=strict_spf):
            return "pass"
        if any(
            d.result == "pass" and aligned(d.domain, from_domain, strict=strict_dkim) for d in sigs
        ):
            return "pass"
        return "fail"

    def _dmarc_record(self, domain: str) -> dict[str, str] | None:
        for name in dict.fromkeys((domain, org_domain(domain))):
            records = [
                b"".join(r.strings).decode("utf-8", "replace")
                for r in _lookup(self.resolver_or_fail(), f"_dmarc.{name}", "TXT")
            ]
            records = [r for r in records if r.replace(" ", "").lower().startswith("v=dmarc1")]
            if len(records) == 1:
                tags = {}
                for part in records[0].split(";"):
                    key, _, value = part.strip().partition("=")
                    tags[key.strip().lower()] = value.strip().lower()
                if tags.get("p") in ("none", "quarantine", "reject"):
                    return tags
            # none, several or a record without a valid p=: no policy (section 6.6.3)
        return None


def _ip(peer: str) -> str | None:
    try:
        return str(ipaddress.ip_address(peer))
    except ValueError:
        return None
