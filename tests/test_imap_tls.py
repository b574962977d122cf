"""IMAP over TLS against the real Dovecot with the harness's private CA: implicit TLS on the
imaps port and STARTTLS on the plain port drain a mailbox end to end (IDLE included after
the upgrade), and every way TLS can be missing fails closed: an untrusted certificate, or a
server that does not offer STARTTLS, leaves the mail in the mailbox, logs an error and
shows it on /status, and Dovecot's own log proves no LOGIN was ever sent.
"""

from __future__ import annotations

import asyncio
import imaplib
import json
import ssl
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aioimaplib
import pytest

from gateway.intake.imap_tls import TLSRefused, starttls
from routing.secrets import load_keyring
from tests.daemon import Daemon
from tests.dovecot_harness import Dovecot
from tests.mail import make_mail
from tests.test_imap import PASSWORD, USER, _messages, _wait


def _daemon(tmp_path: Path, port: int, security: str, **box: Any) -> Daemon:
    home = tmp_path / "gw"
    secret = load_keyring(home / "var" / "keys.toml").encrypt(
        PASSWORD, tenant="acme", field="password"
    )
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in box.items())
    block = f"""
[[tenants.imap]]
host = "127.0.0.1"
port = {port}
security = "{security}"
username = "{USER}"
password = "{secret}"
timeout = 5
{extra}"""
    return Daemon(home, acme_extra=block, scan_deadline=5)


def _mailbox_status(d: Daemon) -> dict[str, Any]:
    """The mailbox as /status shows it (loopback clients need no password)."""
    url = f"http://127.0.0.1:{d.http_port}/status"
    with urllib.request.urlopen(url, timeout=10) as r:
        (box,) = json.loads(r.read())["mailboxes"]
    return box


def _logins(server: Dovecot) -> list[str]:
    """Dovecot's own record of every LOGIN that succeeded; each names how it was protected."""
    text = server.log_path.read_text(errors="replace") if server.log_path.exists() else ""
    return [line for line in text.splitlines() if "imap-login: Info: Login: user=<" in line]


def _append(server: Dovecot, data: bytes) -> None:
    """APPEND over implicit TLS with the stdlib client, verifying the harness's certificate."""
    context = ssl.create_default_context(cafile=str(server.ca_file))
    with imaplib.IMAP4_SSL(server.host, server.imaps_port, ssl_context=context) as conn:
        conn.login(USER, PASSWORD)
        typ, _ = conn.append("INBOX", None, None, data)
        assert typ == "OK"


def _refused(d: Daemon, words: str) -> Callable[[], bool]:
    def check() -> bool:
        error = _mailbox_status(d)["last_error"] or ""
        return words in error

    return check


def test_implicit_tls_mailbox_is_drained(tmp_path: Path, dovecot_factory: Any) -> None:
    server: Dovecot = dovecot_factory({USER: PASSWORD})
    d = _daemon(tmp_path, server.imaps_port, "tls", ca_file=str(server.ca_file), poll_interval=1)
    try:
        _append(server, make_mail(sender="tls@client.test", subject="over implicit TLS"))
        d.start()
        assert _wait(lambda: _messages(d) == 1 and server.count(USER) == 0), d.log_text()
        assert [t["subject"] for t in d.dump()] == ["over implicit TLS"]
        assert server.count(USER, "Processed") == 1
        box = _mailbox_status(d)
        assert box["connected"] and box["last_error"] is None
        logins = _logins(server)
        assert len(logins) >= 2 and all(", TLS," in line for line in logins), logins
    finally:
        d.kill()


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_untrusted_certificate_is_refused_and_nothing_is_fetched(
    tmp_path: Path, dovecot_factory: Any, security: str
) -> None:
    server: Dovecot = dovecot_factory({USER: PASSWORD})
    server.save(USER, make_mail(sender="mitm@client.test"))
    port = server.imaps_port if security == "tls" else server.port
    d = _daemon(tmp_path, port, security)  # no ca_file: the system store, which lacks our CA
    try:
        d.start()
        assert _wait(_refused(d, "certificate not trusted"), timeout=15), d.log_text()
        box = _mailbox_status(d)
        assert "set ca_file" in box["last_error"] and not box["connected"]
        lines = d.log_path.read_text().splitlines()
        events = [json.loads(line) for line in lines if line.startswith("{")]
        refusal = next(e for e in events if e.get("event") == "imap.tls_refused")
        assert refusal["level"] == "error" and "certificate not trusted" in refusal["error"]
        assert server.count(USER) == 1 and _messages(d) == 0
        assert _logins(server) == []  # the password never left the gateway
    finally:
        d.kill()


def test_starttls_mailbox_is_drained_and_idles_after_the_upgrade(
    tmp_path: Path, dovecot_factory: Any
) -> None:
    server: Dovecot = dovecot_factory({USER: PASSWORD})
    # poll_interval 60: within the test only an IDLE push can bring the mail in quickly.
    d = _daemon(tmp_path, server.port, "starttls", ca_file=str(server.ca_file), poll_interval=60)
    try:
        d.start()
        assert _wait(lambda: _mailbox_status(d)["idling"]), d.log_text()
        _append(server, make_mail(sender="starttls@client.test", subject="after STARTTLS"))
        t0 = time.monotonic()
        assert _wait(lambda: _messages(d) == 1, timeout=5), d.log_text()
        assert time.monotonic() - t0 < 5  # pushed by IDLE, not found by a poll
        assert [t["subject"] for t in d.dump()] == ["after STARTTLS"]
        assert _wait(lambda: server.count(USER) == 0 and server.count(USER, "Processed") == 1)
        assert _mailbox_status(d)["last_error"] is None
        # Dovecot saw the gateway's LOGIN (and _append's, on imaps) over TLS.
        logins = _logins(server)
        assert len(logins) >= 2 and all(", TLS," in line for line in logins), logins
    finally:
        d.kill()


def test_starttls_not_offered_is_refused_without_falling_back(
    tmp_path: Path, dovecot_factory: Any
) -> None:
    server: Dovecot = dovecot_factory({USER: PASSWORD}, tls=False)  # ssl = no: no STARTTLS
    server.save(USER, make_mail(sender="plain@client.test"))
    d = _daemon(tmp_path, server.port, "starttls")
    try:
        d.start()
        assert _wait(_refused(d, "does not offer STARTTLS"), timeout=15), d.log_text()
        assert "imap.tls_refused" in d.log_text()
        assert server.count(USER) == 1 and _messages(d) == 0
        assert _logins(server) == []  # no plaintext LOGIN, not even a failed one
        assert "auth failed" not in server.log_text()
    finally:
        d.kill()


async def _closed(imap: aioimaplib.IMAP4) -> None:
    """Drop the client's connection and let the loop finish closing it before asyncio.run
    returns: a TLS transport's close() only starts the close_notify exchange, and a socket
    still open when the loop goes is reported (ResourceWarning) against a later test."""
    imap.protocol.transport.abort()  # closes the socket in a callback of the loop's
    await asyncio.sleep(0.05)  # next turns, which these give it


def test_capabilities_are_asked_again_over_tls(dovecot: Dovecot) -> None:
    """What the server listed in plaintext is forgotten; the list read over TLS is used."""

    async def session(context: ssl.SSLContext) -> tuple[set[str], set[str], str]:
        imap = aioimaplib.IMAP4(dovecot.host, dovecot.port, timeout=5)
        await imap.wait_hello_from_server()
        before = set(imap.protocol.capabilities)
        try:
            await starttls(imap, context, dovecot.host)
            after = set(imap.protocol.capabilities)
            version = imap.protocol.transport.get_extra_info("ssl_object").version()
            assert (await imap.login(USER, PASSWORD)).result == "OK"
            assert (await imap.select()).result == "OK"
            await imap.logout()
        finally:
            await _closed(imap)
        return before, after, version

    trusted = ssl.create_default_context(cafile=str(dovecot.ca_file))
    before, after, version = asyncio.run(session(trusted))
    assert "STARTTLS" in before and "STARTTLS" not in after  # Dovecot drops it once in TLS
    assert "IMAP4rev1" in after and version in ("TLSv1.2", "TLSv1.3")

    try:
        asyncio.run(session(ssl.create_default_context()))
    except ssl.SSLCertVerificationError as exc:
        assert exc.verify_code == 20  # unable to get local issuer certificate
    else:
        raise AssertionError("an untrusted certificate was accepted")


@pytest.mark.parametrize(
    "injected",
    [b"* CAPABILITY IMAP4rev1 AUTH=PLAIN", b"* 1 FETCH (BODY[] {64}\r\nFrom: someone"],
    ids=["half-line", "literal"],
)
def test_plaintext_after_the_starttls_reply_is_refused(injected: bytes) -> None:
    """Someone on the path appends plaintext to the server's STARTTLS OK, to be read as if it
    had come over TLS. Dovecot cannot be made to do this, so a real socket server plays the
    attacker; the session must end before any handshake."""

    writers: list[asyncio.StreamWriter] = []

    async def attacker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        writer.write(b"* OK ready\r\n")
        while line := await reader.readline():
            tag, _, command = line.strip().partition(b" ")
            if command == b"CAPABILITY":
                writer.write(b"* CAPABILITY IMAP4rev1 STARTTLS\r\n" + tag + b" OK done\r\n")
            elif command == b"STARTTLS":
                writer.write(tag + b" OK Begin TLS negotiation now\r\n" + injected)
            await writer.drain()

    async def run() -> str:
        server = await asyncio.start_server(attacker, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        imap = aioimaplib.IMAP4("127.0.0.1", port, timeout=5)
        try:
            await imap.wait_hello_from_server()
            with pytest.raises(TLSRefused) as info:
                async with asyncio.timeout(5):
                    await starttls(imap, ssl.create_default_context(), "127.0.0.1")
            return str(info.value)
        finally:
            server.close()
            for writer in writers:
                writer.close()
                await writer.wait_closed()
            await server.wait_closed()
            await _closed(imap)

    assert "plaintext data followed the STARTTLS reply" in asyncio.run(run())
