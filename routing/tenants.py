"""Envelope recipient -> tenant, with the plus-address token split off.

Routing trusts only the envelope (RCPT TO), never a header, and compares the
lower-cased, IDNA-encoded ASCII form, so a display name or a look-alike
Unicode domain cannot steer mail into a tenant.
"""

from __future__ import annotations

from dataclasses import dataclass

from routing.config import GatewayConfig, Tenant

__all__ = ["AddressIndex", "Recipient", "normalise_address"]


@dataclass(frozen=True, slots=True)
class Recipient:
    tenant: Tenant
    address: str  # the tenant address, without the token
    token: str | None


def normalise_address(address: str) -> str | None:
    """Lower-cased ``local@ascii-domain``, or None for anything unusable."""
    address = address.strip().strip("<>").strip()
    if not address or any(c in address for c in '\r\n\x00 <>,;"') or address.count("@") != 1:
        return None
    local, domain = address.rsplit("@", 1)
    if not local or not domain or len(local) > 64 or len(domain) > 255:
        return None
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    return f"{local.lower()}@{domain.lower()}"


_SEEN_MAX = 4096


class AddressIndex:
    def __init__(self, config: GatewayConfig) -> None:
        self._by_address: dict[str, Tenant] = {a: t for t in config.tenants for a in t.addresses}
        # Answers by the recipient as given: each message's is looked up at RCPT and
        # again for its jobs (and LMTP's grouping), ~3 µs each (IDNA is pure Python).
        self._seen: dict[str, Recipient | None] = {}

    def lookup(self, rcpt: str) -> Recipient | None:
        try:
            return self._seen[rcpt]
        except KeyError:
            pass
        found = self._lookup(rcpt)
        if len(self._seen) >= _SEEN_MAX:  # a flood of made-up recipients must not grow it
            self._seen.clear()
        self._seen[rcpt] = found
        return found

    def _lookup(self, rcpt: str) -> Recipient | None:
        addr = normalise_address(rcpt)
        if addr is None:
            return None
        local, domain = addr.split("@")
        base, plus, token = local.partition("+")
        tenant = self._by_address.get(f"{base}@{domain}")
        if tenant is None:
            return None
        return Recipient(tenant=tenant, address=f"{base}@{domain}", token=token if plus else None)

    def is_tenant_address(self, address: str) -> bool:
        return self.lookup(address) is not None
