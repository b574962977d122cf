"""Who sent it, as far as DNS can tell: the sender-authentication verdict as a value.

The checks themselves need DNS, so they run in ``gateway/intake/auth.py``;
this module holds what both that check and a front MTA's report come down to:
an ``AuthVerdict`` (SPF, DKIM, DMARC and one summary), written as an RFC 8601
``Authentication-Results`` header with our own authserv-id. Reading a trusted
front MTA's headers (which of them to believe, and merging them) is in
``routing/auth_front.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import authres
from authres.dmarc import DMARCAuthenticationResult
from publicsuffixlist import PublicSuffixList

from routing.config import GatewayConfig

__all__ = [
    "NONE",
    "AuthVerdict",
    "DkimResult",
    "aligned",
    "dkim_word",
    "header_text",
    "org_domain",
    "summarise",
    "unauthenticated",
]

# The summary: pass (the From's domain vouches for it), fail (it does not: DMARC
# fails, or without a policy neither SPF nor DKIM is aligned), temperror (DNS did
# not answer: never a pass), none (no check was possible: no DNS, no trusted header).
SUMMARIES = ("pass", "fail", "temperror", "none")


@dataclass(frozen=True, slots=True)
class DkimResult:
    result: str  # pass | fail | neutral | temperror | permerror
    domain: str  # the signature's d=


@dataclass(frozen=True, slots=True)
class AuthVerdict:
    """What one message's sender authentication found; ``header`` is the RFC 8601 text."""

    summary: str
    spf: str = "none"
    dkim: str = "none"
    dmarc: str = "none"
    header: str = ""  # the Authentication-Results field, without its name

    @property
    def short(self) -> str:
        """The one word the operator sees next to a message: ``auth=pass``."""
        return f"auth={self.summary}"


NONE = AuthVerdict("none")


@lru_cache(maxsize=1)
def _psl() -> PublicSuffixList:
    return PublicSuffixList()  # the list the package ships: no download


def org_domain(domain: str) -> str:
    """The organizational domain (RFC 7489 section 3.2) by the Public Suffix List."""
    domain = domain.lower().rstrip(".")
    return _psl().privatesuffix(domain) or domain


def aligned(a: str, b: str, *, strict: bool = False) -> bool:
    """DMARC identifier alignment of two domains (relaxed unless ``strict``)."""
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    if not a or not b:
        return False
    return a == b if strict else org_domain(a) == org_domain(b)


def summarise(
    from_domain: str,
    spf: str,
    spf_domain: str,
    dkim: tuple[DkimResult, ...],
    dmarc: str,
) -> str:
    """One word from the parts. With a DMARC result it decides; without a policy
    (``dmarc`` none) the From passes when SPF or DKIM passes aligned with it, fails when
    neither does, and a DNS failure on the way is a temperror, never a pass."""
    if dmarc in ("pass", "fail", "temperror"):
        return dmarc
    if not from_domain:
        return "fail"
    if spf == "pass" and aligned(spf_domain, from_domain):
        return "pass"
    if any(d.result == "pass" and aligned(d.domain, from_domain) for d in dkim):
        return "pass"
    if spf == "temperror" or any(d.result == "temperror" for d in dkim):
        return "temperror"
    return "fail"


def header_text(
    authserv_id: str,
    *,
    spf: str,
    mailfrom: str,
    helo: str,
    helo_spf: str,
    dkim: tuple[DkimResult, ...],
    dmarc: str,
    from_domain: str,
) -> str:
    """The ``Authentication-Results`` value (RFC 8601) for our own checks."""
    results: list[authres.AuthenticationResult] = []
    if mailfrom:
        results.append(authres.SPFAuthenticationResult(result=spf, smtp_mailfrom=mailfrom))
    if helo:
        results.append(authres.SPFAuthenticationResult(result=helo_spf, smtp_helo=helo))
    if not dkim:
        results.append(authres.DKIMAuthenticationResult(result="none"))
    for d in dkim:
        results.append(authres.DKIMAuthenticationResult(result=d.result, header_d=d.domain))
    results.append(DMARCAuthenticationResult(result=dmarc, header_from=from_domain or None))
    text = str(authres.AuthenticationResultsHeader(authserv_id=authserv_id, results=results))
    return text.removeprefix("Authentication-Results: ")


def dkim_word(dkim: tuple[DkimResult, ...]) -> str:
    """One word for several signatures: any pass passes, else the first result."""
    if not dkim:
        return "none"
    if any(d.result == "pass" for d in dkim):
        return "pass"
    return dkim[0].result


def unauthenticated(config: GatewayConfig) -> list[str]:
    """What ``config check`` warns of: ways in whose mail no one authenticates (no DNS
    checks and no trusted front MTA), so its tenants take every From at its word."""
    if config.dns_resolver != "none":
        return []
    out: list[str] = []
    if not config.smtp.trusted_authserv_id and config.tenants:
        slugs = ", ".join(t.slug for t in config.tenants)
        out.append(
            f"tenants run unauthenticated over SMTP ({slugs}): gateway.dns_resolver is "
            "'none' and smtp.trusted_authserv_id is not set; messages are auth=none"
        )
    for t in config.tenants:
        for box in t.imap:
            if not box.trusted_authserv_id:
                out.append(
                    f"tenant {t.slug} runs unauthenticated over IMAP ({box.key}): no DNS "
                    "checks and no trusted_authserv_id; messages are auth=none"
                )
    return out
