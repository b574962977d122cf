"""Clients (``/t/``) and agents (``/a/``) sign in through magic links, without an account.

One machinery for both sites (gateway/web/client.py, gateway/web/desk.py): a
subclass says who may have a link (``_may_sign_in``), whom the session is for
(``_account``), where a signed-in user lands (``HOME``) and which mail texts go
out; everything below holds for both.

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
import json
import secrets
from collections.abc import Callable
from datetime import timedelta
from urllib.parse import quote

import structlog
from aiohttp import web
from sqlalchemy.engine import Connection

from gateway.web.challenge import LinkChallenge
from gateway.web.pages import PAGE_CSP, Pages, SiteParts
from outbound.compose import magic_link_mail
from outbound.reactions import queue
from parsers.addresses import parse_address
from routing.config import Tenant
from store import access, repos

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

    HOME = "tickets"  # under _base(tenant): where a signed-in user lands
    # The link mail's templates, per language (outbound/texts.py; a tenant may override).
    MAIL_TEMPLATES = ("signin_subject.txt.j2", "signin.txt.j2")
    FORM_TEMPLATE = "form.html"
    SENT_TEMPLATE = "sent.html"  # the answer to a link request, the same for every address

    def _may_sign_in(self, conn: Connection, tenant: Tenant, address: str) -> bool:
        """Whether ``address`` gets a link: here, a client of one of the tenant's tickets."""
        return access.is_client(conn, tenant.slug, address)

    def _account(self, tenant: Tenant, address: str) -> str | None:
        """Whom a spent link's session is for (None: nobody any more)."""
        return address

    def __init__(self, parts: SiteParts) -> None:
        super().__init__(parts)
        self.challenge = LinkChallenge()
        self.pending: set[asyncio.Task[None]] = set()

    def routes(self, app: web.Application) -> None:
        """Signing in, under this site's prefix; a site adds its own pages after."""
        base = f"/{self.PREFIX}/{{slug}}"
        app.on_shutdown.append(self.drain)
        app.router.add_get(f"{base}/", self.form)
        app.router.add_post(f"{base}/link", self.request_link)
        app.router.add_get(f"{base}/login", self.continue_page)
        app.router.add_post(f"{base}/login", self.login)
        app.router.add_post(f"{base}/logout", self.logout)

    async def form(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        if await self._session(request, tenant):
            raise web.HTTPSeeOther(f"{self._base(tenant)}/{self.HOME}")
        if not self.config.http.link_challenge:
            return self._render(request, tenant, self.FORM_TEMPLATE, challenge="")
        challenge = json.dumps(self.challenge.issue())
        response = self._render(request, tenant, self.FORM_TEMPLATE, challenge=challenge)
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
        return self._render(request, tenant, self.SENT_TEMPLATE, address=address or "-")

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
            access.count_events(conn, slug, "link", since, address=address) >= REQUESTS_PER_ADDRESS
            or access.count_events(conn, slug, "link", now - timedelta(hours=1))
            >= REQUESTS_PER_TENANT
            or access.count_events(conn, slug, "failure", since, address=address) >= MAX_FAILURES
            or not self._may_sign_in(conn, tenant, address)
        ):
            return False
        selector, verifier = secrets.token_hex(12), secrets.token_urlsafe(32)
        access.new_link(
            conn,
            slug,
            address,
            selector,
            self._digest(verifier),
            now,
            LINK_TTL,
        )
        link = f"{self.base_url}{self._base(tenant)}/login?s={selector}&v={quote(verifier)}"
        mail = magic_link_mail(
            tenant=tenant,
            hostname=self.config.hostname,
            to_addr=address,
            subject=self.mail_templates.render(
                slug, self.MAIL_TEMPLATES[0], lang, tenant_name=tenant.name
            ).strip(),
            text=self.mail_templates.render(
                slug, self.MAIL_TEMPLATES[1], lang, link=link, tenant_name=tenant.name
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
        digest = self._digest(verifier)
        now = self.clock()
        session = secrets.token_urlsafe(32)

        def work(conn: Connection) -> str | None:
            spent = (
                access.spend_link(conn, tenant.slug, selector, digest, now)
                if csrf_ok
                else access.SpentLink(False, access.link_owner(conn, tenant.slug, selector))
            )
            address = spent.address
            account = self._account(tenant, address) if address is not None else None
            if address is not None:
                since = now - LOCK_WINDOW
                if access.count_events(conn, tenant.slug, "failure", since, address=address) >= (
                    MAX_FAILURES
                ):
                    return None  # locked: even a good link does not open it now
            if not spent.ok or address is None or account is None:
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
                account,
                self._digest(session),
                now,
                SESSION_TTL,
            )
            repos.add_audit(
                conn,
                tenant.slug,
                "web.login",
                actor=address,
                detail={"source": source, "site": self.PREFIX},
            )
            return account

        address = await self.writer.submit(work)
        if address is None:
            key = "error.link" if csrf_ok else "error.csrf"
            return self._error(request, tenant, key, 403)
        response = web.HTTPSeeOther(f"{self._base(tenant)}/{self.HOME}")
        self._cookie(response, tenant, self.SESSION_COOKIE, session, days=SESSION_TTL.days)
        self._cookie(response, tenant, "gw_csrf", secrets.token_urlsafe(24))  # renewed at sign-in
        raise response

    async def logout(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        form = await request.post()
        if not await self._csrf_ok(request, form):
            return self._error(request, tenant, "error.csrf", 403)
        digest = self._digest(request.cookies.get(self.SESSION_COOKIE, ""))
        await self.writer.submit(lambda conn: access.end_session(conn, tenant.slug, digest))
        response = web.HTTPSeeOther(f"{self._base(tenant)}/")
        response.del_cookie(self.SESSION_COOKIE, path=f"{self._base(tenant)}/")
        raise response
