"""SMTP intake: aiosmtpd's protocol in the daemon's own event loop.

Unknown recipients are refused at RCPT (never accept-then-bounce: that is
backscatter); the reply to DATA is the pipeline's outcome, so 250 means
committed. ``handle_exception`` cannot raise and answers 451: aiosmtpd's own
default is a permanent 500, which would make the sender bounce the mail.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import ssl
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import structlog
from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session, syntax

from gateway.intake.pipeline import Pipeline
from gateway.intake.replies import defer, enhance, reject, smtp_reply
from gateway.intake.smtp_data import read_data
from gateway.intake.smtp_setup import session_factory
from parsers.types import Envelope as MailEnvelope
from parsers.types import RawMessage
from routing.config import SmtpSettings
from routing.verdicts import Reason

__all__ = ["GatewaySMTP", "IntakeHandler", "drain", "session_options", "start_smtp"]

log = structlog.get_logger("gateway.smtp")
_SHUTTING_DOWN = smtp_reply(defer(Reason.SHUTTING_DOWN))


# A dot-atom local part and a domain of letters, digits, '-' and '.', in angle brackets.
_SIMPLE_PATH = re.compile(
    r"\s*<((?=[^>]{1,320}>)([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)"
    r"@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)>(.*)\Z",
    re.DOTALL,
)


def _grouped(method: Callable[[SMTP, str], Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """One of RFC 2920's commands whose reply may wait for the next one's (3.2: RSET,
    MAIL, RCPT), HELP's syntax text kept (functools.wraps copies aiosmtpd's marks)."""

    @functools.wraps(method)
    async def run(self: GatewaySMTP, arg: str) -> None:
        self._grouping = True
        try:
            await method(self, arg)
        finally:
            self._grouping = False

    return run


class GatewaySMTP(SMTP):
    """aiosmtpd's SMTP with enhanced status codes on every reply it writes, and
    PIPELINING (RFC 2920; LMTP's RFC 2033 requires it): a pipelining client sends
    MAIL, its RCPTs and DATA in one go, and their replies go back in one write."""

    # Lines over 998 octets break RFC 5321 but real mailers send them; Postfix
    # accepts and chops at 2048. We keep them whole: data_size_limit remains
    # the memory bound (aiosmtpd docs' escape hatch).
    line_length_limit = 64 * 1024

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """The common ``<local@domain> PARAMS`` without aiosmtpd's RFC 5322 token parser,
        which cost ~5% of the server's time per MAIL and RCPT; anything else (quoted
        local parts, comments, source routes, ``<>``) still goes through it."""
        m = _SIMPLE_PATH.match(arg)
        if m is None or (self.local_part_limit and len(m.group(2)) > self.local_part_limit):
            return super()._getaddr(arg)
        return m.group(1), m.group(3).lstrip()

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA with the payload read in chunks (gateway/intake/smtp_data.py):
        one copy of the message where aiosmtpd's line list held three at its peak."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        # In flight from the 354 on, not only once the data is in: a shutdown's drain
        # waits for a message still arriving, so its sender gets an answer, not a drop.
        handler = self.event_handler
        with handler.counted() if isinstance(handler, IntakeHandler) else contextlib.nullcontext():
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            data = await read_data(self._reader, self.data_size_limit, self.line_length_limit)
            if isinstance(data, str):  # over a limit: the answer, once the data was read
                await self.push(data)
                self._set_post_data_state()
                return
            # decode_data is off (session_options): content and original are the one object.
            self.envelope.content = self.envelope.original_content = data
            del data
            status = await self._call_handler_hook("DATA")
            self._set_post_data_state()
            await self.push("250 OK" if status is MISSING else status)

    smtp_MAIL = _grouped(SMTP.smtp_MAIL)
    smtp_RCPT = _grouped(SMTP.smtp_RCPT)
    smtp_RSET = _grouped(SMTP.smtp_RSET)

    # Continuation lines of a multi-line reply (``250-...``) waiting for its last line,
    # and a group's positive replies waiting for the reply to its last command.
    _held: list[bytes] | None = None
    _grouping = False  # a reply now is one to RSET, MAIL or RCPT
    _deadline = 0.0  # the idle timeout's moment (loop time); see _reset_timeout

    async def push(self, status: Any) -> None:
        """aiosmtpd's push, cheaper: each distinct reply is enhanced and encoded once per
        process (the replies are a small fixed set, but for the 250's queue id, which is
        enhanced already), and a multi-line reply (EHLO's seven lines) is one write, not
        one per line. Not logged at DEBUG on ``mail.log`` (pinned at WARNING anyway).

        A 2xx to RSET, MAIL or RCPT waits while the client's next command is already
        here (RFC 2920 3.2: such replies may be sent as a unit): it goes out with the next
        reply, so a pipelined MAIL, RCPT, DATA gets one write, not three. A client that
        waits for each reply has sent nothing more, so its reply is never held, nor is a
        refusal, which may be followed by the connection's close."""
        if isinstance(status, str):
            data = self._wire(status)
        else:
            data = status + b"\r\n"
        if data[3:4] == b"-" or (self._grouping and data[:1] == b"2" and self._next_is_here()):
            self._hold(data)
            return
        if self._held:
            self._held.append(data)
            data = b"".join(self._held)
            self._held.clear()
        self._writer.write(data)
        await self._writer.drain()

    def _next_is_here(self) -> bool:
        """A whole command line is waiting in the reader: the command loop reads it next
        without waiting for the network, so a reply held now cannot wait on the client."""
        return b"\n" in self._reader._buffer  # type: ignore[attr-defined]

    def hold(self, status: str) -> None:
        """A whole reply sent with the next one pushed, in its write: LMTP's replies
        per recipient (RFC 2033 4.2) go out together with the last one."""
        self._hold(self._wire(status))

    def _hold(self, data: bytes) -> None:
        if self._held is None:
            self._held = []
        self._held.append(data)

    def _wire(self, status: str) -> bytes:
        if _ENHANCED.match(status):  # ours, with its code already (the 250's queue id)
            return _encode(status, self.enable_SMTPUTF8)
        key = (status, self.hostname, self.enable_SMTPUTF8)
        data = _WIRE.get(key)
        if data is None:
            data = _encode(enhance(status, self.hostname), self.enable_SMTPUTF8)
            if len(_WIRE) < _WIRE_MAX:  # a client's unknown commands must not grow it
                _WIRE[key] = data
        return data

    def _reset_timeout(self, duration: float | None = None) -> None:
        """Moves the idle deadline, and arms a timer only when none is pending for an
        earlier moment: aiosmtpd made, scheduled and cancelled a timer per command. The
        pending timer, when it comes before the deadline, re-arms for the rest."""
        deadline = self.loop.time() + (duration or self._timeout_duration)
        self._deadline = deadline
        handle = self._timeout_handle
        if handle is not None and not handle.cancelled() and handle.when() <= deadline:
            if handle.when() > self.loop.time():
                return  # pending, and fires before the deadline: _timeout_cb re-arms
            handle.cancel()
        elif handle is not None:
            handle.cancel()
        self._timeout_handle = self.loop.call_at(deadline, self._timeout_cb)

    def _timeout_cb(self) -> None:
        if self.loop.time() < self._deadline:  # commands came since: wait for the rest
            self._timeout_handle = self.loop.call_at(self._deadline, self._timeout_cb)
            return
        super()._timeout_cb()

    def eof_received(self) -> bool | None:
        """Answer what was sent before the client's FIN, as Postfix does.

        aiosmtpd cancels the session at EOF, so a client that pipelines
        ``DATA ... . QUIT`` and half-closes (RFC 2920 allows it) would lose
        the reply to a DATA we may already have committed. Instead the reader
        gets EOF; buffered commands run, then ``handle_exception`` closes.
        """
        if self.session is not None and self.session.ssl is not None:
            return super().eof_received()
        return asyncio.StreamReaderProtocol.eof_received(self)  # feeds EOF, skips the cancel

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, asyncio.IncompleteReadError):
            if self.transport is not None:
                self.transport.close()
            return "421 4.4.2 Connection closed by client"
        return await super().handle_exception(error)


class IntakeHandler:
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.in_flight = 0
        self.draining = False
        self.idle = asyncio.Event()
        self.idle.set()

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.draining:
            return _SHUTTING_DOWN
        if any(c in address for c in "\r\n\x00"):
            return smtp_reply(reject(Reason.BAD_SENDER))
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if self.draining:
            return _SHUTTING_DOWN
        if len(envelope.rcpt_tos) >= 100:
            return smtp_reply(defer(Reason.TOO_MANY_RECIPIENTS))
        if self.pipeline.index.lookup(address) is None:
            return smtp_reply(reject(Reason.NO_SUCH_RECIPIENT))
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """In flight (``counted``) already: GatewaySMTP.smtp_DATA counts from the 354 on."""
        raw = self.raw_message(session, envelope, tuple(envelope.rcpt_tos), "smtp")
        helo = str(session.host_name or "")
        return smtp_reply(await self.pipeline.process(raw, helo=helo))

    @contextlib.contextmanager
    def counted(self) -> Iterator[None]:
        """One message in flight: a drain at shutdown waits for it to be answered."""
        self.in_flight += 1
        self.idle.clear()
        try:
            yield
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self.idle.set()

    def raw_message(
        self, session: Session, envelope: Envelope, rcpts: tuple[str, ...], source: str
    ) -> RawMessage:
        """The pipeline's input: the envelope as the client gave it, and the bytes."""
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        return RawMessage(
            envelope=MailEnvelope(
                mail_from=_reverse_path(envelope.mail_from),
                rcpt_tos=rcpts,
                peer=str(peer),
            ),
            data=bytes(envelope.original_content or b""),
            source=source,
        )

    async def handle_exception(self, error: Exception) -> str:
        try:
            log.warning("smtp_session_error", error=type(error).__name__)
        except Exception:
            pass
        return smtp_reply(defer(Reason.FAULT))

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", "250-ENHANCEDSTATUSCODES", responses[-1]]


async def drain(handler: IntakeHandler, server: asyncio.Server, within: float) -> None:
    """Stop accepting and let the messages in flight be answered (at most ``within`` seconds),
    so their senders get a real answer, not a dropped connection."""
    handler.draining = True
    server.close()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            await handler.idle.wait()


def tls_context(settings: SmtpSettings | None) -> ssl.SSLContext | None:
    """The listener's certificate for STARTTLS (TLS 1.2 or newer), or None without one."""
    if settings is None or settings.tls_cert is None or settings.tls_key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
    return ctx


async def start_smtp(
    handler: IntakeHandler,
    host: str,
    port: int,
    *,
    hostname: str,
    max_size: int,
    tls: SmtpSettings | None = None,
) -> asyncio.Server:
    """``tls``: offer STARTTLS with its certificate, and with ``require_tls`` refuse
    mail (530) until the client has started TLS."""
    loop = asyncio.get_running_loop()
    context = tls_context(tls)
    require = bool(context is not None and tls is not None and tls.require_tls)

    factory = session_factory(
        GatewaySMTP,
        handler,
        **session_options(hostname, max_size),
        tls_context=context,
        require_starttls=require,
    )
    return await loop.create_server(factory, host=host, port=port)


def session_options(hostname: str, max_size: int) -> dict[str, Any]:
    """aiosmtpd's settings for every session of ours, SMTP's and LMTP's alike."""
    return {
        "data_size_limit": max_size,
        "hostname": hostname,
        "ident": "helpdesk-gateway",
        "timeout": 300,
        "decode_data": False,
        "enable_SMTPUTF8": True,
    }


# A reply ``enhance`` leaves as it is: three digits, and an enhanced code.
_ENHANCED = re.compile(r"\d{3} \d+\.\d+\.\d+(?: |\Z)")
_WIRE: dict[tuple[str, str, bool], bytes] = {}  # a reply as sent, by (reply, hostname, utf8)
_WIRE_MAX = 1024


def _encode(status: str, utf8: bool) -> bytes:
    """aiosmtpd's encoding of a reply line: UTF-8 with SMTPUTF8 on, else strict ASCII."""
    return status.encode("utf-8" if utf8 else "ascii") + b"\r\n"


def _reverse_path(address: str | None) -> str:
    """aiosmtpd keeps the null reverse-path (bounces) as "<>"; we store it as ""."""
    return "" if address is None or address.strip() in ("", "<>") else address
