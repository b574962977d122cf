"""LMTP intake (RFC 2033): how a local MTA (Postfix ``lmtp:``) hands mail over.

The same protocol code as SMTP (aiosmtpd's ``LMTP`` under our ``GatewaySMTP``:
enhanced codes, the fast path parser, the FIN handling), the same handler
hooks (unknown recipients refused at RCPT, 421 while draining) and the same
pipeline and answers table (gateway/intake/replies.py). What differs is the
end of DATA: LMTP answers once per accepted recipient, so a message to two
tenants can be taken by one and deferred by the other, and the MTA retries
only the one that was not taken. Recipients are grouped by tenant and each
group goes through the pipeline once (a message to two addresses of one
tenant is one ticket, as over SMTP).

The peer is the MTA, never the sender's host, so the envelope's peer is
``lmtp:<address>``: sender authentication then checks no SPF against the
MTA's loopback address (DKIM still runs; behind an MTA that checks SPF, set
``[smtp] trusted_authserv_id`` to believe its Authentication-Results).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from dataclasses import replace
from pathlib import Path

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway.intake.replies import smtp_reply
from gateway.intake.smtp import GatewaySMTP, IntakeHandler, session_options
from gateway.intake.smtp_setup import session_factory

__all__ = ["GatewayLMTP", "LmtpHandler", "start_lmtp"]


class GatewayLMTP(GatewaySMTP, LMTP):
    """LHLO instead of HELO/EHLO (LMTP's), everything else as our SMTP."""


class LmtpHandler(IntakeHandler):
    """The SMTP handler, with one reply per accepted recipient after DATA."""

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        # In flight (``counted``) already: GatewaySMTP.smtp_DATA counts from the 354 on.
        rcpts = list(envelope.rcpt_tos)
        helo = str(session.host_name or "")
        answers: dict[str, str] = {}
        for group in self._by_tenant(rcpts):
            raw = self.raw_message(session, envelope, group, "lmtp")
            raw = replace(raw, envelope=replace(raw.envelope, peer=f"lmtp:{raw.envelope.peer}"))
            reply = smtp_reply(await self.pipeline.process(raw, helo=helo))
            answers.update(dict.fromkeys(group, reply))
        replies = [answers[r] for r in rcpts]
        # RFC 2033 4.2: one reply per successful RCPT, in their order; aiosmtpd
        # pushes the last one (our return value) itself, in one write with these.
        for line in replies[:-1]:
            if isinstance(server, GatewaySMTP):
                server.hold(line)
            else:
                await server.push(line)
        return replies[-1]

    def _by_tenant(self, rcpts: list[str]) -> list[tuple[str, ...]]:
        groups: dict[str, list[str]] = {}
        for r in rcpts:
            found = self.pipeline.index.lookup(r)
            groups.setdefault(found.tenant.slug if found is not None else "", []).append(r)
        return [tuple(g) for g in groups.values()]


async def start_lmtp(
    handler: LmtpHandler,
    *,
    hostname: str,
    max_size: int,
    host: str = "",
    port: int = 0,
    path: Path | None = None,
) -> asyncio.Server:
    """A TCP listener on ``host:port``, or a unix socket at ``path`` (a stale socket
    file left by a killed run is replaced; any other file there is an error)."""
    loop = asyncio.get_running_loop()

    factory = session_factory(GatewayLMTP, handler, **session_options(hostname, max_size))

    if path is None:
        return await loop.create_server(factory, host=host, port=port)
    _clear_stale(path)
    return await loop.create_unix_server(factory, path=str(path))


def _clear_stale(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            raise FileExistsError(f"{path} exists and is not a socket")
        path.unlink()
