"""TLS for the IMAP intake: the verifying context, STARTTLS on an aioimaplib session, and
the words an operator reads when TLS is refused.

Fail closed: a mailbox configured for ``tls`` or ``starttls`` never logs in or fetches
over a connection whose certificate was not verified, and ``starttls`` never falls back
to plaintext when the server does not offer it (RFC 8314 section 4.1 / RFC 3501 6.2.1).

aioimaplib 2.0 has no STARTTLS of its own (the command is only in its table of states),
so ``starttls`` below upgrades the connection in place. aioimaplib's
``IMAP4ClientProtocol`` holds its transport in ``protocol.transport`` and writes every
command through it (``send``, ``_continuation``); ``loop.start_tls`` wraps the same TCP
transport, hands the protocol's reads over to TLS without calling ``connection_made``
again (which would reset aioimaplib to "waiting for a greeting"), and returns the TLS
transport, which we put into ``protocol.transport``. That one assignment is the whole
hack; the STARTTLS command itself goes through aioimaplib's own ``execute``, so tags,
states and timeouts stay aioimaplib's.
"""

from __future__ import annotations

import asyncio
import ssl

import aioimaplib

from routing.config import ImapMailbox

__all__ = ["TLSRefused", "describe_failure", "starttls", "tls_context"]


class TLSRefused(Exception):
    """We will not go on without TLS: the server cannot give it or misbehaved around it."""


def tls_context(box: ImapMailbox) -> ssl.SSLContext:
    """The client context for ``tls`` and ``starttls``: chain and host name are verified,
    against ``ca_file`` when the server's CA is private, else against the system store."""
    return ssl.create_default_context(cafile=str(box.ca_file) if box.ca_file else None)


async def starttls(imap: aioimaplib.IMAP4, context: ssl.SSLContext, host: str) -> None:
    """Upgrade a greeted, not yet logged-in plaintext session to verified TLS.

    Called after ``wait_hello_from_server``, when aioimaplib has read the greeting and the
    server's first CAPABILITY. Raises TLSRefused (or ``ssl.SSLError`` from the handshake)
    rather than ever leaving the session in plaintext. The caller bounds it in time; a
    cancelled handshake closes the connection.
    """
    protocol = imap.protocol
    if protocol.state != aioimaplib.NONAUTH:
        # PREAUTH on a plaintext connection: STARTTLS is no longer allowed (RFC 3501 7.1.4).
        raise TLSRefused("server pre-authenticated the plaintext connection; STARTTLS impossible")
    if "STARTTLS" not in {c.upper() for c in protocol.capabilities}:
        raise TLSRefused(
            "server does not offer STARTTLS; not logging in without TLS (security = "
            '"starttls"; use "tls" on port 993 if the server has implicit TLS)'
        )
    command = aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
    resp = await protocol.execute(command)
    if resp.result != "OK":
        detail = bytes(resp.lines[-1]).decode("utf-8", "replace")[:200] if resp.lines else ""
        raise TLSRefused(f"server refused STARTTLS: {resp.result} {detail}".rstrip())
    # A half-read line or literal would be glued to the first bytes read over TLS: plaintext
    # that someone on the path sent after the OK would then pass as protected. Whole lines
    # are harmless: with no command pending, aioimaplib ignores untagged ones and aborts on
    # tagged ones. Nothing is awaited between this check and start_tls pausing the reads.
    if protocol.incomplete_line or protocol.current_command is not None:
        raise TLSRefused("plaintext data followed the STARTTLS reply; refusing the session")
    loop = asyncio.get_running_loop()
    try:
        protocol.transport = await loop.start_tls(
            protocol.transport, protocol, context, server_hostname=host
        )
    except BaseException as exc:
        # start_tls closed the connection, but a failed handshake tells the protocol nothing:
        # tell aioimaplib (and through it our conn_lost_cb), so nobody writes LOGOUT to it.
        protocol.connection_lost(exc if isinstance(exc, Exception) else None)
        raise
    # What the server said before TLS may have been rewritten on the way (RFC 3501 6.2.1).
    protocol.capabilities = set()
    await protocol.capability()


def describe_failure(exc: BaseException) -> str | None:
    """An operator's sentence for a TLS refusal, None if ``exc`` is not about TLS."""
    if isinstance(exc, TLSRefused):
        return f"TLS refused: {exc}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS refused: server certificate not trusted ({exc.verify_message}); "
            "set ca_file to the CA that signed it, or fix the server's certificate"
        )
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    return None
