"""Reply tokens: ``support+<token>@tenant`` names a ticket and, for agents, the agent.

The token carries an HMAC made with the gateway's secret over the tenant, the
ticket number and the agent, so a token is valid only in the tenant that
minted it and cannot be forged or moved to another ticket. Lower-case hex
only: many MTAs lower-case local parts.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from dataclasses import dataclass

__all__ = ["TokenClaim", "agent_code", "make_token", "read_token"]

_MAC_LEN = 16  # hex chars = 64 bits
_TOKEN = re.compile(r"^t(\d{1,12})(?:-a([0-9a-f]{8}))?-([0-9a-f]{16})$")


@dataclass(frozen=True, slots=True)
class TokenClaim:
    ticket_number: int
    agent_code: str | None  # agent_code(address) of the agent it was minted for


@functools.lru_cache(maxsize=1024)
def agent_code(address: str) -> str:
    return hashlib.sha256(address.lower().encode()).hexdigest()[:8]


@functools.lru_cache(maxsize=4)
def _keyed(secret: bytes) -> hmac.HMAC:
    """The HMAC with the secret's key set up, copied for each token (every mail to a client
    or an agent carries one): a copy costs about half of a fresh ``hmac.new``."""
    return hmac.new(secret, digestmod=hashlib.sha256)


def _mac(secret: bytes, tenant: str, number: int, agent: str) -> str:
    h = _keyed(secret).copy()
    h.update(f"reply-token|{tenant}|{number}|{agent}".encode())
    return h.hexdigest()[:_MAC_LEN]


def make_token(secret: bytes, tenant: str, number: int, agent: str | None = None) -> str:
    code = agent_code(agent) if agent else ""
    mac = _mac(secret, tenant, number, code)
    return f"t{number}-a{code}-{mac}" if code else f"t{number}-{mac}"


def read_token(secret: bytes, tenant: str, token: str) -> TokenClaim | None:
    """The claim of a valid token for this tenant, else None (never raises)."""
    m = _TOKEN.match(token.strip().lower())
    if not m:
        return None
    number, code, mac = int(m.group(1)), m.group(2) or "", m.group(3)
    if not hmac.compare_digest(mac, _mac(secret, tenant, number, code)):
        return None
    return TokenClaim(ticket_number=number, agent_code=code or None)
