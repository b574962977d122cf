"""Clients sign in to their own tickets through magic links, without an account.

- A link is a selector (finds the row) and a verifier (only its SHA-256 is
  stored), valid 15 minutes, spent by one atomic UPDATE. Opening it (GET) only
  shows a "Continue" form, because mail scanners fetch links; the POST spends it.
- A session is a random token in an HttpOnly, SameSite=Lax cookie (Secure
  unless explicitly relaxed on loopback), renewed at sign-in, and expires on
  the server after 7 days whatever the cookie says.
- Every POST carries a CSRF token equal to its cookie, and a cross-site
  ``Origin`` or ``Sec-Fetch-Site`` is refused.
- Five failures (bad, used or expired link, bad CSRF) for an address in 15
  minutes lock it for 15 minutes, counted on the server.
- Link requests are limited per source (the client's address behind our
  proxies): a refused request records nothing, so it spends no budget that
  others share. Links sent are limited per address and per tenant, and only
  sent links count there: one source can cause at most
  ``REQUESTS_PER_SOURCE`` of them per window, well under the tenant's budget.
- The answer to a request is the same page whether the address is known,
  unknown, locked or limited, and it is sent before any of that is looked
  up: the lookup and the mail run after the answer, so known and unknown
  addresses do the same work before it.
- With ``[http] link_challenge`` the form also needs a solved proof of work
  (gateway/web/challenge.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from collections.abc import Callable
from datetime import timedelta
from urllib.parse import quote

import structlog
from aiohttp import web
from sqlalchemy.engine import Connection

from gateway.clock import Clock
from gateway.web.challenge import LinkChallenge
from gateway.web.pages import PAGE_CSP, Pages
from outbound.compose import magic_link_mail
from outbound.reactions import queue
from parsers.addresses import parse_address
from routing.config import GatewayConfig, Tenant
from store import access, repos
from store.writer import Writer

__all__ = [
    "LINK_TTL",
    "LOCK_WINDOW",
    "MAX_FAILURES",
    "REQUESTS_PER_ADDRESS",
    "REQUESTS_PER_SOURCE",
    "REQUESTS_PER_TENANT",
    "SESSION_TTL",
    "SignIn",
]

LINK_TTL = timedelta(minutes=15)
SESSION_TTL = timedelta(days=7)
LOCK_WINDOW = timedelta(minutes=15)
MAX_FAILURES = 5
REQUESTS_PER_ADDRESS = 3  # links sent to one address per LOCK_WINDOW
REQUESTS_PER_SOURCE = 20  # requests taken from one source per LOCK_WINDOW
REQUESTS_PER_TENANT = 200  # links sent per hour
PENDING = 256  # link requests answered and not yet looked up; more waits for one

log = structlog.get_logger("web")


class SignIn(Pages):
    """The sign-in form, the link mail, the continue page, login and logout."""

    def __init__(
        self,
        config: GatewayConfig,
        writer: Writer,
        wake: Callable[[], None],
        clock: Clock | None = None,
    ) -> None:
        super().__init__(config, writer, wake, clock)
        self.challenge = LinkChallenge()
        self.pending: set[asyncio.Task[None]] = set()

    async def form(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        if await self._session(request, tenant):
            raise web.HTTPSeeOther(f"/t/{tenant.slug}/tickets")
        if not self.config.http.link_challenge:
            return self._render(request, tenant, "form.html", challenge="")
        challenge = json.dumps(self.challenge.issue())
        response = self._render(request, tenant, "form.html", challenge=challenge)
        response.headers["Content-Security-Policy"] = f"{PAGE_CSP}; script-src 'self'"
        return response

    async def request_link(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        form = await request.post()
        if not await self._csrf_ok(request, form):
            return self._error(request, tenant, "error.csrf", 403)
        if self.config.http.link_challenge and not self.challenge.take(
            str(form.get("altcha", ""))[:2048]
        ):
            return self._error(request, tenant, "error.challenge", 403)
        _, address = parse_address(str(form.get("email", ""))[:320], [])
        address = address.lower()
        if address:
            lang = self._lang(request)  # the link mail speaks the language the form was in
            source = self._source(request)
            await self._after_answer(
                lambda conn: self._maybe_send(conn, tenant, address, source, lang)
            )
        # The same page for known, unknown, locked and rate-limited addresses.
        return self._render(request, tenant, "sent.html", address=address or "-")

    async def _after_answer(self, work: Callable[[Connection], bool]) -> None:
        """Run ``work`` in the writer after this request is answered. Past ``PENDING``
        requests in waiting, one of them (whichever ends first, not this one) is
        waited for, so a flood is slowed for every address alike."""
        if len(self.pending) >= PENDING:
            await asyncio.wait(self.pending, return_when=asyncio.FIRST_COMPLETED)
        task = asyncio.create_task(self._send_link(work))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _send_link(self, work: Callable[[Connection], bool]) -> None:
        try:
            if await self.writer.submit(work):
                self.wake()
        except Exception:  # the client has its answer; the admin gets the fault
            log.exception("web.link_failed")

    async def drain(self, _app: web.Application | None = None) -> None:
        """At shutdown: the answered requests get their lookup and mail."""
        if self.pending:
            await asyncio.wait(self.pending, timeout=10)

    def _maybe_send(
        self, conn: Connection, tenant: Tenant, address: str, source: str, lang: str
    ) -> bool:
        now = self.clock()
        since = now - LOCK_WINDOW
        slug = tenant.slug
        if access.count_events(conn, slug, "request", since, source=source) >= (
            REQUESTS_PER_SOURCE
        ):
            return False  # refused: recorded nowhere, so it spends nobody else's budget
        access.add_event(conn, slug, "request", address, source, now)
        if (
            access.count_events(conn, slug, "link", since, address=address)
            >= REQUESTS_PER_ADDRESS
            or access.count_events(conn, slug, "link", now - timedelta(hours=1))
            >= REQUESTS_PER_TENANT
            or access.count_events(conn, slug, "failure", since, address=address)
            >= MAX_FAILURES
            or not access.is_client(conn, slug, address)
        ):
            return False
        selector, verifier = secrets.token_hex(12), secrets.token_urlsafe(32)
        access.new_link(
            conn,
            slug,
            address,
            selector,
            hashlib.sha256(verifier.encode()).hexdigest(),
            now,
            LINK_TTL,
        )
        link = f"{self.base_url}/t/{slug}/login?s={selector}&v={quote(verifier)}"
        mail = magic_link_mail(
            tenant=tenant,
            hostname=self.config.hostname,
            to_addr=address,
            subject=self.mail_templates.render(
                slug, "signin_subject.txt.j2", lang, tenant_name=tenant.name
            ).strip(),
            text=self.mail_templates.render(
                slug, "signin.txt.j2", lang, link=link, tenant_name=tenant.name
            ),
            now=now,
        )
        queue(conn, slug, "link", None, mail)
        access.add_event(conn, slug, "link", address, source, now)
        repos.add_audit(conn, slug, "web.link_sent", actor=address, detail={"source": source})
        return True

    async def continue_page(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        response = self._render(
            request,
            tenant,
            "continue.html",
            selector=request.query.get("s", "")[:64],
            verifier=request.query.get("v", "")[:128],
        )
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    async def login(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        form = await request.post()
        selector = str(form.get("s", ""))[:64]
        verifier = str(form.get("v", ""))[:128]
        csrf_ok = await self._csrf_ok(request, form)
        source = self._source(request)
        digest = hashlib.sha256(verifier.encode()).hexdigest()
        now = self.clock()
        session = secrets.token_urlsafe(32)

        def work(conn: Connection) -> str | None:
            spent = (
                access.spend_link(conn, tenant.slug, selector, digest, now)
                if csrf_ok
                else access.SpentLink(False, access.link_owner(conn, tenant.slug, selector))
            )
            address = spent.address
            if address is not None:
                since = now - LOCK_WINDOW
                if access.count_events(conn, tenant.slug, "failure", since, address=address) >= (
                    MAX_FAILURES
                ):
                    return None  # locked: even a good link does not open it now
            if not spent.ok or address is None:
                access.add_event(conn, tenant.slug, "failure", address or "", source, now)
                repos.add_audit(
                    conn,
                    tenant.slug,
                    "web.login_failed",
                    actor=address or "?",
                    detail={"source": source},
                )
                return None
            access.new_session(
                conn,
                tenant.slug,
                address,
                hashlib.sha256(session.encode()).hexdigest(),
                now,
                SESSION_TTL,
            )
            repos.add_audit(
                conn, tenant.slug, "web.login", actor=address, detail={"source": source}
            )
            return address

        address = await self.writer.submit(work)
        if address is None:
            key = "error.link" if csrf_ok else "error.csrf"
            return self._error(request, tenant, key, 403)
        response = web.HTTPSeeOther(f"/t/{tenant.slug}/tickets")
        self._cookie(response, tenant, "gw_session", session, days=SESSION_TTL.days)
        self._cookie(response, tenant, "gw_csrf", secrets.token_urlsafe(24))  # renewed at sign-in
        raise response

    async def logout(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        form = await request.post()
        if not await self._csrf_ok(request, form):
            return self._error(request, tenant, "error.csrf", 403)
        token = request.cookies.get("gw_session", "")
        digest = hashlib.sha256(token.encode()).hexdigest()
        await self.writer.submit(lambda conn: access.end_session(conn, tenant.slug, digest))
        response = web.HTTPSeeOther(f"/t/{tenant.slug}/")
        response.del_cookie("gw_session", path=f"/t/{tenant.slug}/")
        raise response
