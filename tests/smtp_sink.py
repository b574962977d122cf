"""A tenant's SMTP account for tests: a real aiosmtpd server on 127.0.0.1, port 0.

It speaks STARTTLS with a certificate from a private CA (trustme) and
requires AUTH over TLS, like a submission server, and records every message
it accepts. Faults are scripted per test: a reply to give to the next DATA
commands ("451 ..." or "drop" to close the connection after reading the
data, the message having arrived; "hold" to give no reply until the client
has gone, ``holding`` set meanwhile, the message not kept), and permanent
refusals per recipient.
It runs its own event loop in a thread, stopped by the test.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from email.policy import default
from pathlib import Path
from typing import Any

import trustme
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

__all__ = ["Received", "Sink"]


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def msg(self) -> Message:
        return message_from_bytes(self.data, policy=default)


@dataclass
class _Handler:
    sink: Sink
    data_script: list[str] = field(default_factory=list)

    async def handle_RCPT(
        self, server: SMTP, session: Any, envelope: Any, address: str, _o: Any
    ) -> str:
        refusal = self.sink.refuse.get(address.lower())
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        step = self.sink.data_script.pop(0) if self.sink.data_script else "250"
        if step.startswith("4") or step.startswith("5"):
            return step
        if step == "hold":  # the client waits for the reply; the test kills it meanwhile
            self.sink.holding.set()
            for _ in range(600):  # a minute at most
                if server.transport is None or server.transport.is_closing():
                    break
                await asyncio.sleep(0.1)
            return "451 4.3.0 held, never kept"
        with self.sink.lock:
            self.sink.received.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content))
            )
        if step == "drop":  # it arrived, but the client never hears so
            server.transport.close()
            return "421 4.4.2 closing"
        return "250 2.0.0 queued"


class Sink:
    def __init__(
        self,
        folder: Path,
        *,
        user: str = "acme",
        password: str = "s3cret!",
        require_auth: bool = True,
        smtputf8: bool = False,
    ) -> None:
        """``smtputf8``: offer SMTPUTF8 (RFC 6531), as a tenant's server may or may not."""
        self.user, self.password = user, password
        self.smtputf8 = smtputf8
        self.require_auth = require_auth
        self.received: list[Received] = []
        self.refuse: dict[str, str] = {}
        self.data_script: list[str] = []
        self.holding = threading.Event()  # a DATA is held ("hold")
        self.logins = 0
        self.lock = threading.Lock()
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = folder / "sink-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(self._tls)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._sessions: list[SMTP] = []

    def _auth(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            self.user.encode(),
            self.password.encode(),
        )
        if ok:
            self.logins += 1
        return AuthResult(success=ok)

    def start(self) -> Sink:
        handler = _Handler(self)

        def factory() -> SMTP:
            session = SMTP(
                handler,
                hostname="sink.test",
                tls_context=self._tls,
                require_starttls=True,
                authenticator=self._auth,
                auth_require_tls=True,
                auth_required=self.require_auth,
                enable_SMTPUTF8=self.smtputf8,
            )
            self._sessions.append(session)
            return session

        async def serve() -> None:
            self._server = await self._loop.create_server(factory, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]

        self._thread.start()
        asyncio.run_coroutine_threadsafe(serve(), self._loop).result(10)
        return self

    def kick(self) -> None:
        """Close every client's connection, as a server does with clients idle too long."""

        async def close() -> None:
            for session in self._sessions:
                if session.transport is not None:
                    session.transport.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def account(self, home: Path, tenant: str = "acme") -> str:
        """The ``[tenants.outbound]`` table that sends a daemon at ``home`` through this
        sink, its password encrypted with that home's keyring as an admin's would be."""
        from routing.secrets import load_keyring

        secret = load_keyring(home / "var" / "keys.toml").encrypt(
            self.password, tenant=tenant, field="password"
        )
        return (
            f'\n[tenants.outbound]\nhost = "127.0.0.1"\nport = {self.port}\n'
            f'security = "starttls"\nusername = "{self.user}"\npassword = "{secret}"\n'
            f'ca_file = "{self.ca_file}"\n'
        )

    def wait_for(
        self, pred: Callable[[Received], bool], count: int = 1, timeout: float = 30
    ) -> list[Received]:
        """The received mails matching ``pred`` once there are ``count`` of them (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                found = [r for r in self.received if pred(r)]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)
