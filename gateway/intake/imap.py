"""IMAP intake: drain a tenant's mailbox through the same pipeline as SMTP, pushed by IDLE.

The mailbox is the queue. A message leaves its folder (MOVE, or COPY +
\\Deleted + UID EXPUNGE) only after the pipeline committed it, so a crash at
any point leaves it where it was and the next session offers it again; the
dedupe keys make that second pass harmless. A temporary verdict leaves it in
place; a permanent refusal, or ``max_failures`` deferrals of the same
message, moves it to the quarantine folder with an audit event, so one bad
message never blocks the rest. Every IMAP command has a timeout (a server
that vanishes during IDLE would otherwise hang us), and a lost session
reconnects with jittered exponential backoff. The drain itself (bodies fetched in
batches ahead of the pipeline, committed batches moved in one command) is
``gateway/intake/imap_drain.py``.

TLS fails closed (``gateway/intake/imap_tls.py``): with ``tls`` or ``starttls`` nothing is
logged in or fetched until the server's certificate is verified, and a refusal shows
as the mailbox's ``last_error`` on /status and as an ``imap.tls_refused`` error log.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import aioimaplib
import structlog
from sqlalchemy.engine import Connection

from gateway.intake.imap_drain import Drain
from gateway.intake.imap_tls import describe_failure, starttls, tls_context
from gateway.intake.imap_wire import (
    SessionLost,
    consume,
    ok,
    uidvalidity_of,
)
from gateway.intake.pipeline import Pipeline
from routing.config import GatewayConfig, ImapMailbox, Tenant
from store import imap_state, repos
from store.writer import Writer

__all__ = ["MailboxState", "MailboxWorker"]

log = structlog.get_logger("gateway.imap")

_IDLE_RENEW = 25 * 60  # RFC 2177: re-issue before the server's 30-minute cut
# Leave IDLE this often and look at the folder anyway: a server may announce a
# new message only once, inside the answer to some earlier command, and then
# never again during IDLE; a missed push then costs at most this long.
_IDLE_CHECK = 30.0


@dataclass
class MailboxState:
    """What ``gateway status`` shows for a mailbox."""

    tenant: str
    mailbox: str
    connected: bool = False
    idling: bool = False
    last_success: float | None = None
    backlog: int = 0
    last_error: str | None = None
    committed: int = 0
    quarantined: int = 0
    failures: dict[int, int] = field(default_factory=dict)
    commands: dict[str, int] = field(default_factory=dict)  # IMAP commands sent, by kind

    def as_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "mailbox": self.mailbox,
            "connected": self.connected,
            "idling": self.idling,
            "last_success": self.last_success,
            "backlog": self.backlog,
            "last_error": self.last_error,
            "committed": self.committed,
            "quarantined": self.quarantined,
            "commands": dict(self.commands),
        }


class MailboxWorker:
    """One task per configured mailbox: connect, drain, IDLE, repeat; never raises."""

    def __init__(
        self,
        config: GatewayConfig,
        tenant: Tenant,
        box: ImapMailbox,
        pipeline: Pipeline,
        writer: Writer,
    ) -> None:
        self.config = config
        self.tenant = tenant
        self.box = box
        self.pipeline = pipeline
        self.writer = writer
        self.state = MailboxState(tenant.slug, box.key)
        self.max_size = config.smtp.max_message_size
        self._lost = asyncio.Event()
        self._arrived = False

    async def run(self) -> None:
        delay = 1.0
        while True:
            before = self.state.committed + self.state.quarantined
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every fault ends the session; we come back
                tls = describe_failure(exc)
                self.state.last_error = (tls or f"{type(exc).__name__}: {exc}")[:300]
                # A TLS refusal will not cure itself: an error, not the warning of a blip.
                (log.error if tls else log.warning)(
                    "imap.tls_refused" if tls else "imap.session_lost",
                    tenant=self.tenant.slug,
                    mailbox=self.box.key,
                    error=self.state.last_error,
                )
            self.state.connected = self.state.idling = False
            if self.state.committed + self.state.quarantined > before:
                delay = 1.0  # the session got work done: come back fast
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 300.0)

    # -- one session ---------------------------------------------------------------------

    async def _session(self) -> None:
        box = self.box
        lost = self._lost = asyncio.Event()
        imap = self._client(lambda _exc: lost.set())
        try:
            await self.call(imap.wait_hello_from_server(), "greeting", check=False)
            if box.security == "starttls":
                await self.call(starttls(imap, tls_context(box), box.host), "STARTTLS", check=False)
            await self.call(imap.login(box.username, box.password), "LOGIN")
            self.state.connected = True
            for folder in (box.processed_folder, box.quarantine_folder):
                await self.call(imap.create(folder), "CREATE", check=False)  # may exist
            selected = await self.call(imap.select(box.folder), "SELECT")
            uidvalidity = uidvalidity_of(selected)
            await self._check_uidvalidity(uidvalidity)
            self.state.last_error = None
            while True:
                if lost.is_set():
                    raise SessionLost("connection lost")
                self._arrived = False
                deferred = await Drain(self, imap, uidvalidity).run()
                self.state.last_success = time.time()
                if self._arrived:  # IDLE would not announce it again: drain now
                    continue
                if deferred:  # something must be retried: do not spin on it
                    await asyncio.sleep(min(box.poll_interval, 5.0))
                    continue
                if box.idle and imap.has_capability("IDLE"):
                    await self._idle(imap, lost)
                else:
                    await asyncio.sleep(box.poll_interval)
                    await self.call(imap.noop(), "NOOP")
        finally:
            self.state.connected = self.state.idling = False
            if not lost.is_set():  # a polite LOGOUT, but never a wait on a dead session
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(2):
                        await imap.logout()
            transport = getattr(imap.protocol, "transport", None)
            if transport is not None:
                transport.close()

    async def call(self, aw: Awaitable[Any], what: str, *, check: bool = True) -> Any:
        """One IMAP command under our own deadline, abandoned at once if the session dies.

        ``what`` names the command in errors and counts it in ``state.commands``.

        aioimaplib drops its timeout for UID MOVE/COPY/STORE/EXPUNGE, and a
        command in flight when the server goes away never completes.
        """
        self.state.commands[what] = self.state.commands.get(what, 0) + 1
        cmd = asyncio.ensure_future(aw)
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            done, _ = await asyncio.wait(
                {cmd, lost}, timeout=self.box.timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            lost.cancel()
        if cmd in done:
            resp = cmd.result()
            if any(x.endswith(b"EXISTS") for x in getattr(resp, "lines", [])[:-1]):
                self._arrived = True  # new mail announced inside another command's answer
            return ok(resp, what) if check else resp
        # Not awaited: aioimaplib may sit out its own timeout before it notices.
        cmd.add_done_callback(consume)
        cmd.cancel()
        if self._lost.is_set():
            raise SessionLost(f"{what}: connection lost")
        raise SessionLost(f"{what}: no answer in {self.box.timeout:g}s")

    def _client(self, on_lost: Any) -> aioimaplib.IMAP4:
        box = self.box
        if box.security == "tls":
            client = aioimaplib.IMAP4_SSL(
                box.host, box.port, timeout=box.timeout, ssl_context=tls_context(box)
            )
            client.protocol.conn_lost_cb = on_lost
            return client
        # "starttls" starts here too, in plaintext; _session upgrades it before LOGIN.
        return aioimaplib.IMAP4(box.host, box.port, timeout=box.timeout, conn_lost_cb=on_lost)

    async def _check_uidvalidity(self, uidvalidity: int) -> None:
        slug, key = self.tenant.slug, self.box.key

        def work(conn: Connection) -> None:
            known = imap_state.imap_position(conn, slug, key)
            if known is not None and known[0] != uidvalidity:
                repos.add_audit(
                    conn,
                    slug,
                    "imap.uidvalidity_changed",
                    actor=key,
                    detail={"old": known[0], "new": uidvalidity},
                )
                imap_state.save_imap_position(conn, slug, key, uidvalidity, 0)
            elif known is None:
                imap_state.save_imap_position(conn, slug, key, uidvalidity, 0)

        await self.writer.submit(work)

    async def _idle(self, imap: aioimaplib.IMAP4, lost: asyncio.Event) -> None:
        """Wait for the server to say something changed, for at most _IDLE_RENEW."""
        started = time.monotonic()
        async with asyncio.timeout(self.box.timeout):
            idle = await imap.idle_start(timeout=_IDLE_RENEW)
        self.state.idling = True
        try:
            while time.monotonic() - started < _IDLE_RENEW:
                if lost.is_set():
                    raise SessionLost("connection lost while idling")
                wait = min(self.box.poll_interval, _IDLE_CHECK)
                waiter = asyncio.ensure_future(imap.wait_server_push(timeout=wait))
                gone = asyncio.ensure_future(lost.wait())
                await asyncio.wait({waiter, gone}, return_when=asyncio.FIRST_COMPLETED)
                gone.cancel()
                if not waiter.done():
                    waiter.cancel()
                    raise SessionLost("connection lost while idling")
                try:
                    push = waiter.result()
                except TimeoutError:
                    break  # quiet for a while: re-read the folder, then IDLE again
                if push == aioimaplib.STOP_WAIT_SERVER_PUSH:
                    break
                lines = [bytes(x) for x in push] if isinstance(push, list) else []
                if any(line.startswith(b"BYE") or b" BYE " in line for line in lines):
                    raise SessionLost("server said BYE")
                if any(line.endswith(b"EXISTS") or b"RECENT" in line for line in lines):
                    break
        finally:
            self.state.idling = False
            if imap.has_pending_idle():
                imap.idle_done()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.box.timeout):
                        await idle
