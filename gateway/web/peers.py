"""Who is asking: the client's address, through the reverse proxies we trust.

Behind a proxy on the same host every request comes from 127.0.0.1, so
``request.remote`` alone would make the world loopback (``/status`` and
``/metrics`` open) and every client one source (one link budget for all).
``[http] trusted_proxies`` names the proxies; only a request from one of them
has its ``X-Forwarded-For`` read, from the right (the hop our proxy added)
leftwards past the other trusted proxies to the first address we do not
trust: anything left of that the client wrote itself.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from aiohttp import web

__all__ = ["Peers"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_FORWARDING = ("X-Forwarded-For", "Forwarded", "X-Real-IP")


class Peers:
    """Resolves the client's address once per request from ``trusted_proxies``."""

    def __init__(self, trusted: Iterable[str]) -> None:
        self.trusted: tuple[Network, ...] = tuple(
            ipaddress.ip_network(t, strict=False) for t in trusted
        )

    def _trusted(self, address: str) -> bool:
        if not self.trusted:  # no proxies (the default): no address to parse per request
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.trusted)

    def client(self, request: web.Request) -> str:
        """The address a budget or an audit row is about: never one a client chose."""
        remote = request.remote or "-"
        if not self._trusted(remote):
            return remote
        hops = [
            h.strip()
            for line in request.headers.getall("X-Forwarded-For", [])
            for h in line.split(",")
        ]
        for hop in reversed(hops):
            if not self._trusted(hop):
                return hop if _valid(hop) else "-"
        return remote  # only our proxies: the request started on one of them

    def is_local(self, request: web.Request) -> bool:
        """Loopback after resolution; a forwarded request from a proxy we were not
        told about is not local, whatever its socket says."""
        if not self._trusted(request.remote or "") and any(
            h in request.headers for h in _FORWARDING
        ):
            return False
        try:
            return ipaddress.ip_address(self.client(request)).is_loopback
        except ValueError:
            return False


def _valid(hop: str) -> bool:
    try:
        ipaddress.ip_address(hop)
    except ValueError:
        return False
    return True
