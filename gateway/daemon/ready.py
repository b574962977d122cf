"""The one line ``gateway run`` prints on stdout once it is up (``make run`` shows
only this; the log goes to a file there)."""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path

from routing.config import GatewayConfig

__all__ = ["ready_line"]


def ready_line(config: GatewayConfig, smtp: tuple[str, int], web: str | None) -> str:
    """One line on stdout once everything is up: where to send mail, where to look,
    and, when mail leaves through a plain SMTP port on this machine (the shipped
    demo's sink), how to watch it."""
    parts = [f"gateway ready: SMTP {smtp[0]}:{smtp[1]}"]
    if web is not None:
        pages = " ".join(f"{web}/t/{t.slug}/" for t in config.tenants)
        parts.append(f"web {pages} {web}/status")
    outs = dict.fromkeys(
        (t.outbound.host, t.outbound.port, t.outbound.security)
        for t in config.tenants
        if t.outbound is not None
    )
    for host, port, security in outs:
        line = f"mail out via {host}:{port}"
        if security == "none" and _loopback(host):
            python = os.path.relpath(sys.executable) if _under_cwd(sys.executable) else "python3"
            line += f" (to see it: {python} -m aiosmtpd -n -l {host}:{port})"
        parts.append(line)
    return "; ".join(parts)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _under_cwd(path: str) -> bool:
    return Path(path).absolute().is_relative_to(Path.cwd())
