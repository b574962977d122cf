"""Reading a trusted front MTA's ``Authentication-Results``: which headers, and what they say.

A front that checks senders seldom writes one header. Postfix with OpenDKIM,
OpenDMARC, OpenARC and policyd-spf gets one header per filter, all with the same
authserv-id (one ``dkim=``, one ``dmarc=``, one ``spf=``), above the ``Received``
line Postfix wrote when the mail arrived. Reading only the topmost of them made a
``dmarc=none`` header (a domain without a policy) the whole verdict, and every such
sender came out ``fail``.

Which headers to believe (RFC 8601 section 5: only those the trusted host added,
everything below them is the sender's): the **block** that starts at the topmost
header with the trusted id and runs down over further headers with that id and the
headers such filters write next to them (``ARC-*``, ``Received-SPF``,
``DKIM-Filter``, ``X-Spam-*``, ...), up to the first header of any other kind (the
front's own ``Received`` from the outside, or the sender's first header). A header
with the trusted id below that point is the sender's: a forgery, ignored. Headers
above the block (added after the check: delivery, a content filter's re-injection)
say nothing about the sender.

What the block says: the results of all its headers merged. SPF and DMARC take the
least favourable result any header gives (two reports of one check that disagree
are not a pass); DKIM keeps every signature's result (any aligned pass counts); a
method no header reports is ``none`` for it, never a fail.
"""

from __future__ import annotations

import re
from email.message import Message

import authres

from routing.auth import AuthVerdict, DkimResult, dkim_word, summarise

__all__ = ["NO_ID", "front_block", "matches_id", "trusted_verdict"]

# Exchange Online (Microsoft 365) writes its header without an authserv-id
# ("Authentication-Results: spf=pass (sender IP is ...) ..."); such a header is read as
# written by this name, the receiver its own Received-SPF names.
NO_ID = "protection.outlook.com"

# Headers a checking front writes in the same block as its results (OpenARC's seal,
# policyd-spf's Received-SPF, the milters' software headers, spam and virus stamps).
_COMPANION_NAMES = frozenset({"received-spf", "dkim-filter", "dmarc-filter", "openarc-filter"})
_COMPANION_PREFIXES = ("arc-", "x-spam", "x-virus", "x-rspamd", "x-ms-exchange-", "x-me-")

# The first word of the value: an authserv-id, or (no id) already ``method=result``.
_FIRST = re.compile(r"\s*([^;\s]+)")

# Least favourable first: the merged result of one method is the first one any header gives.
_RANK = ("fail", "softfail", "permerror", "temperror", "neutral", "policy", "none", "pass")


def matches_id(value: str, authserv_id: str) -> bool:
    """Whether an ``Authentication-Results`` value carries ``authserv_id``: the same name
    (case-insensitive, RFC 8601 section 2.5), ``*.domain`` for a provider whose MX each
    write their own name (Fastmail: ``mx1.messagingengine.com``, ...), and a header
    without an id for ``NO_ID``."""
    found = _FIRST.match(value)
    if found is None:
        return False
    first = found.group(1).lower()
    want = authserv_id.lower()
    if "=" in first:  # no authserv-id at all: Exchange Online's way
        return want == NO_ID
    first = first.split("/", 1)[0]  # OpenDMARC's AuthservIDWithJobID: "host/JOBID"
    if want.startswith("*."):
        return first.endswith(want[1:]) and len(first) > len(want) - 1
    return first == want


def _companion(name: str) -> bool:
    name = name.lower()
    return name in _COMPANION_NAMES or name.startswith(_COMPANION_PREFIXES)


def front_block(head: Message, authserv_id: str) -> list[str]:
    """The values of the trusted headers the front added, top first (see the module doc);
    empty when no header carries the id."""
    block: list[str] = []
    for name, value in head.items():
        text = " ".join(str(value).split())
        ours = name.lower() == "authentication-results" and matches_id(text, authserv_id)
        if ours:
            block.append(text)
        elif block and not _companion(name):
            break  # the first header the front did not add: the rest is the sender's
    return block


def _parse(text: str) -> authres.AuthenticationResultsHeader | None:
    found = _FIRST.match(text)
    if found is not None and "=" in found.group(1):
        text = f"{NO_ID}; {text}"  # give an id-less header one, so authres reads it
    try:
        return authres.AuthenticationResultsHeader.parse_value(text)
    except Exception:  # authres raises its own SyntaxError and a few others
        return None


def _worse(a: str, b: str) -> str:
    rank = {r: i for i, r in enumerate(_RANK)}
    return a if rank.get(a, 0) <= rank.get(b, 0) else b


def trusted_verdict(head: Message, authserv_id: str, from_domain: str) -> AuthVerdict | None:
    """The front's verdict from its block of headers; None when it added none. A header of
    the block that does not parse counts for nothing (it may be one filter's malformed
    output); the others still do."""
    texts = front_block(head, authserv_id)
    if not texts:
        return None
    if len(_methods(texts[0])) > 1:
        # A front that writes one combined header (rspamd, Gmail, Microsoft, Fastmail)
        # said everything in it; a header below it may be the sender's own first one,
        # which joins the block where the front writes just above the sender's.
        texts = texts[:1]
    spf, spf_domain, dmarc = "", "", ""
    dkim: list[DkimResult] = []
    dkim_from: int | None = None  # the one header whose DKIM results count
    for index, text in enumerate(texts):
        parsed = _parse(text)
        for r in parsed.results if parsed is not None else ():
            method, result = str(r.method).lower(), str(r.result).lower()
            props = {f"{p.type}.{p.name}".lower(): str(p.value) for p in r.properties}
            if method == "spf" and "smtp.mailfrom" in props:
                domain = props["smtp.mailfrom"].rpartition("@")[2]
                if not spf or _worse(result, spf) == result != spf:
                    spf, spf_domain = result, domain
            elif method == "dkim":
                # Only the topmost header that reports DKIM at all: a lower one may be
                # the sender's own first header, which joins the block where the front
                # writes its one header just above the sender's (Gmail, Fastmail). SPF
                # and DMARC need no such care: the worse report wins there.
                if dkim_from is None:
                    dkim_from = index
                if index != dkim_from:
                    continue
                domain = props.get("header.d") or props.get("header.i", "").rpartition("@")[2]
                dkim.append(DkimResult(result, domain.lower()))
            elif method == "dmarc":
                word = result if result in ("pass", "fail", "temperror", "none") else "none"
                dmarc = _worse(word, dmarc) if dmarc else word
    spf, dmarc = spf or "none", dmarc or "none"
    summary = summarise(from_domain, spf, spf_domain, tuple(dkim), dmarc)
    return AuthVerdict(summary, spf, dkim_word(tuple(dkim)), dmarc, "\n".join(texts))


def _methods(text: str) -> set[str]:
    """The checks among SPF, DKIM and DMARC that one header reports."""
    parsed = _parse(text)
    found = {str(r.method).lower() for r in (parsed.results if parsed is not None else ())}
    return found & {"spf", "dkim", "dmarc"}
