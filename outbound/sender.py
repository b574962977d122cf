"""One SMTP connection to a tenant's account, reused for several mails (aiosmtplib).

Opening a connection (TCP, EHLO, STARTTLS, AUTH) cost the outbox worker more
than the mail itself when every mail had its own; now a lane of the worker
(outbound/delivery.py) keeps one open for the rows it was given. Every
outcome of one mail is an ``Attempt``; nothing raises but cancellation. After
a transport fault the connection is dropped and the next mail opens a new
one; a refusal leaves it open (aiosmtplib sends RSET itself). A connection
that the server closed while idle is opened again once, transparently.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import aiosmtplib
import structlog

from outbound.mime import as_7bit, downgrade, needs_8bitmime, needs_smtputf8
from routing.config import OutboundAccount

__all__ = ["AccountConnection", "Attempt", "Link"]

log = structlog.get_logger("outbound.sender")


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one delivery attempt came to: sent, retry later, or give up. ``detail`` is
    what went wrong (the status's last error), never the server's 250 text."""

    result: str  # sent | retry | failed
    detail: str = ""
    code: int | None = None
    # Sent to the others, but these could not be answered (they need SMTPUTF8).
    unanswerable: tuple[str, ...] = ()


class Link(Protocol):
    """What a lane sends over: this connection, or its stand-in in the daemon for one
    held by the send worker (gateway/sending/pool.py)."""

    opened: int

    def deliver(
        self, rows: list[dict[str, Any]], start_by: float
    ) -> AsyncIterator[tuple[int, Attempt]]: ...

    async def close(self) -> None: ...


class AccountConnection:
    """The lane's connection to ``account``; ``close()`` when the lane is done.
    ``hostname``: ours, said in EHLO; ``timeout``: ``[outbound] timeout``."""

    def __init__(self, account: OutboundAccount | None, hostname: str, timeout: float) -> None:
        self.account = account
        self.hostname = hostname
        self.timeout = timeout
        self._client: aiosmtplib.SMTP | None = None
        self.opened = 0  # connections made, for the tests and the bench

    async def deliver(
        self, rows: list[dict[str, Any]], start_by: float
    ) -> AsyncIterator[tuple[int, Attempt]]:
        """Each row's index and ``Attempt``, one mail after the other; none started
        after ``start_by`` (``time.monotonic()``, CLOCK_MONOTONIC: one clock for the
        daemon and its send worker), the rest left to the caller."""
        for i, row in enumerate(rows):
            if time.monotonic() > start_by:
                return
            try:
                attempt = await self.send(row)
            except Exception as exc:  # a bug must not leave the row claimed
                log.exception("outbox.send_crashed", id=row.get("id"))
                attempt = Attempt("retry", f"internal error: {type(exc).__name__}")
            yield i, attempt

    async def send(self, row: dict[str, Any]) -> Attempt:
        """One mail over the open connection (opened first if need be)."""
        account = self.account
        if account is None:
            return Attempt("retry", "no outbound account configured for this tenant")
        rcpts = list(row["rcpt_tos"])
        # An internationalised address (RFC 6531) goes only with SMTPUTF8; a server
        # without it can never take the mail, so that is permanent and said plainly.
        # Its ASCII co-recipients still get the mail, with ASCII headers (split).
        utf8 = needs_smtputf8(row["mail_from"], rcpts, row["body"])
        reused = self._client is not None
        try:
            async with asyncio.timeout(self.timeout * 2):
                try:
                    return await self._sendmail(row["mail_from"], rcpts, row["body"], utf8)
                except aiosmtplib.SMTPServerDisconnected:
                    if not reused:
                        raise
                    await self._drop()  # closed while we kept it idle: once more, anew
                    return await self._sendmail(row["mail_from"], rcpts, row["body"], utf8)
        except aiosmtplib.SMTPNotSupported as exc:
            await self._drop()
            if not utf8:
                return Attempt("retry", f"{type(exc).__name__}: {exc}"[:1000])
            return Attempt("failed", _needs_smtputf8(account))
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [e.code for e in exc.recipients]
            permanent = all(c >= 500 for c in codes)
            detail = "; ".join(f"{e.recipient}: {e.code} {e.message}" for e in exc.recipients)
            return Attempt(
                "failed" if permanent else "retry", detail[:1000], min(codes, default=None)
            )
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code in (421, 554) or not self._usable():
                await self._drop()
            word = "failed" if 500 <= exc.code < 600 else "retry"
            return Attempt(word, f"{exc.code} {exc.message}", exc.code)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            await self._drop()
            return Attempt("retry", f"{type(exc).__name__}: {exc}"[:1000])

    async def _sendmail(self, sender: str, rcpts: list[str], body: bytes, utf8: bool) -> Attempt:
        client = await self._connected()
        options = ["SMTPUTF8"] if utf8 else []
        # UTF-8 text goes as it is (8bit), said so to the server; to one that does
        # not know the word, quoted-printable (the same mail, other bytes).
        if needs_8bitmime(body):
            if client.supports_extension("8bitmime"):
                options.append("BODY=8BITMIME")
            else:
                body = as_7bit(body)
        try:
            errors, _response = await client.sendmail(sender, rcpts, body, mail_options=options)
        except aiosmtplib.SMTPNotSupported:
            plain, down = _without_smtputf8(sender, rcpts, body)
            if not (utf8 and plain and down):
                raise
            unanswerable = tuple(r for r in rcpts if r not in plain)
            options.remove("SMTPUTF8")
            errors, _response = await client.sendmail(sender, plain, down, mail_options=options)
            assert self.account is not None
            reason = _needs_smtputf8(self.account)
            return Attempt(
                "sent", f"partly: {', '.join(unanswerable)} {reason}"[:1000],
                unanswerable=unanswerable,
            )  # fmt: skip
        if errors:  # some recipients refused, the others accepted: done, refusals noted
            refused = "; ".join(f"{r}: {e.code} {e.message}" for r, e in errors.items())
            return Attempt("sent", f"partly refused: {refused}"[:1000])
        return Attempt("sent")

    async def _connected(self) -> aiosmtplib.SMTP:
        if self._client is not None and self._usable():
            return self._client
        await self._drop()
        account = self.account
        assert account is not None
        # The SMTP client, not aiosmtplib.send(): send() refuses the null sender
        # that acknowledgements must use (RFC 3834 section 3).
        client = aiosmtplib.SMTP(
            hostname=account.host,
            port=account.port,
            username=account.username or None,
            password=account.password or None,
            use_tls=account.security == "tls",
            start_tls=account.security == "starttls",
            tls_context=_tls_context(account),
            local_hostname=self.hostname,
            timeout=self.timeout,
        )
        self._client = client
        await client.connect()
        self.opened += 1
        return client

    def _usable(self) -> bool:
        return self._client is not None and self._client.is_connected

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def close(self) -> None:
        """QUIT if the connection is still good; never raises."""
        client, self._client = self._client, None
        if client is None:
            return
        with contextlib.suppress(Exception):
            if client.is_connected:
                async with asyncio.timeout(5):
                    await client.quit()
        client.close()


def _needs_smtputf8(account: OutboundAccount) -> str:
    return (
        f"cannot be answered: the address needs SMTPUTF8 (RFC 6531), which the "
        f"tenant's server {account.host} does not offer"
    )


def _without_smtputf8(
    mail_from: str, rcpts: list[str], body: bytes
) -> tuple[list[str], bytes | None]:
    """The recipients an ASCII mail can reach, and that mail (headers downgraded)."""
    if not mail_from.isascii():
        return [], None
    plain = [r for r in rcpts if r.isascii()]
    return plain, downgrade(body) if plain else None


def _tls_context(account: OutboundAccount) -> ssl.SSLContext | None:
    if account.ca_file is None:
        return None
    return ssl.create_default_context(cafile=str(account.ca_file))
