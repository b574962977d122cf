"""Clients read their own tickets through magic links (docs/security.md, "Clients on the web").

- A link is a selector (finds the row) and a verifier (only its SHA-256 is
  stored), valid 15 minutes, spent by one atomic UPDATE. Opening it (GET) only
  shows a "Continue" form, because mail scanners fetch links; the POST spends it.
- A session is a random token in an HttpOnly, SameSite=Lax cookie (Secure
  unless explicitly relaxed on loopback), renewed at sign-in, and expires on
  the server after 7 days whatever the cookie says.
- Every POST carries a CSRF token equal to its cookie, and a cross-site
  ``Origin`` or ``Sec-Fetch-Site`` is refused.
- Five failures (bad, used or expired link, bad CSRF) for an address in 15
  minutes lock it for 15 minutes, counted on the server. Link requests are
  limited per address, per source and per tenant. The answer to a request is
  the same page whether the address is known, unknown or locked.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from aiohttp import web
from sqlalchemy.engine import Connection

from gateway.clock import Clock, system_clock
from gateway.intake.pipeline import Pipeline
from gateway.web.i18n import LANGUAGES, pick_language, translate
from outbound.compose import magic_link_mail
from outbound.reactions import queue
from parsers.addresses import parse_address
from parsers.types import Envelope, RawMessage
from routing.config import GatewayConfig, Tenant
from routing.tokens import make_token
from routing.verdicts import Accepted
from store import access, repos
from store.blobs import BlobStore
from store.writer import Writer

__all__ = ["ClientSite"]

LINK_TTL = timedelta(minutes=15)
SESSION_TTL = timedelta(days=7)
LOCK_WINDOW = timedelta(minutes=15)
MAX_FAILURES = 5
REQUESTS_PER_ADDRESS = 3  # per LOCK_WINDOW
REQUESTS_PER_SOURCE = 20
REQUESTS_PER_TENANT = 200

_HERE = Path(__file__).parent


class ClientSite:
    def __init__(
        self,
        config: GatewayConfig,
        writer: Writer,
        pipeline: Pipeline,
        blobs: BlobStore,
        wake: Callable[[], None],
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.writer = writer
        self.pipeline = pipeline
        self.blobs = blobs
        self.wake = wake
        self.clock = clock or system_clock()
        # Set by the daemon once the listener is bound (port 0 picks one).
        self.base_url = config.http.base_url
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(_HERE / "templates")),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )

    def configure(self, config: GatewayConfig) -> None:
        self.config = config

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/static/gateway.css", self.css)
        app.router.add_get("/t/{slug}/", self.form)
        app.router.add_post("/t/{slug}/link", self.request_link)
        app.router.add_get("/t/{slug}/login", self.continue_page)
        app.router.add_post("/t/{slug}/login", self.login)
        app.router.add_post("/t/{slug}/logout", self.logout)
        app.router.add_get("/t/{slug}/tickets", self.tickets)
        app.router.add_get("/t/{slug}/tickets/{ref}", self.ticket)
        app.router.add_post("/t/{slug}/tickets/{ref}/reply", self.reply)
        app.router.add_get("/t/{slug}/tickets/{ref}/files/{sha}", self.download)

    # -- helpers -------------------------------------------------------------------------

    def _tenant(self, request: web.Request) -> Tenant:
        tenant = self.config.tenant(request.match_info["slug"])
        if tenant is None:
            raise web.HTTPNotFound(text="not found\n")
        return tenant

    def _lang(self, request: web.Request) -> str:
        tenant = self.config.tenant(request.match_info.get("slug", ""))
        return pick_language(
            request.query.get("lang") or request.cookies.get("gw_lang"),
            request.headers.get("Accept-Language"),
            tenant.languages if tenant is not None else LANGUAGES,
        )

    def _render(
        self, request: web.Request, tenant: Tenant, name: str, status: int = 200, **ctx: Any
    ) -> web.Response:
        lang = self._lang(request)
        csrf = request.cookies.get("gw_csrf") or secrets.token_urlsafe(24)
        html = self.env.get_template(name).render(
            t=lambda key, **kw: translate(lang, key, **kw),
            lang=lang,
            languages=tenant.languages,
            tenant_name=tenant.name,
            tenant_slug=tenant.slug,
            csrf=csrf,
            css_href="/static/gateway.css",
            **ctx,
        )
        response = web.Response(text=html, status=status, content_type="text/html")
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'"
        )
        self._cookie(response, tenant, "gw_csrf", csrf, http_only=True)
        if request.query.get("lang") in tenant.languages:
            self._cookie(response, tenant, "gw_lang", lang, http_only=False, days=365)
        return response

    def _cookie(
        self,
        response: web.StreamResponse,
        tenant: Tenant,
        name: str,
        value: str,
        *,
        http_only: bool = True,
        days: float | None = None,
    ) -> None:
        response.set_cookie(
            name,
            value,
            path=f"/t/{tenant.slug}/",
            httponly=http_only,
            secure=not self.config.http.insecure_cookies,
            samesite="Lax",
            max_age=int(days * 86400) if days else None,
        )

    def _source(self, request: web.Request) -> str:
        return request.remote or "-"

    async def _csrf_ok(self, request: web.Request, form: Any) -> bool:
        if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            return False
        origin = request.headers.get("Origin")
        if origin and origin not in ("null",) and origin.rstrip("/") != self._origin(request):
            return False
        cookie = request.cookies.get("gw_csrf", "")
        sent = str(form.get("csrf", ""))
        return bool(cookie) and secrets.compare_digest(cookie, sent)

    def _origin(self, request: web.Request) -> str:
        if self.config.http.public_url:
            from urllib.parse import urlsplit

            u = urlsplit(self.config.http.public_url)
            return f"{u.scheme}://{u.netloc}"
        return f"{request.scheme}://{request.host}"

    def _error(self, request: web.Request, tenant: Tenant, key: str, status: int) -> web.Response:
        return self._render(request, tenant, "error.html", status=status, message_key=key)

    async def _session(self, request: web.Request, tenant: Tenant) -> str | None:
        token = request.cookies.get("gw_session")
        if not token:
            return None
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = self.clock()
        return await self.writer.submit(
            lambda conn: access.session_address(conn, tenant.slug, digest, now)
        )

    # -- pages ---------------------------------------------------------------------------

    async def css(self, _request: web.Request) -> web.StreamResponse:
        return web.FileResponse(_HERE / "static" / "gateway.css")

    async def form(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        if await self._session(request, tenant):
            raise web.HTTPSeeOther(f"/t/{tenant.slug}/tickets")
        return self._render(request, tenant, "form.html")

    async def request_link(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        form = await request.post()
        if not await self._csrf_ok(request, form):
            return self._error(request, tenant, "error.csrf", 403)
        _, address = parse_address(str(form.get("email", ""))[:320], [])
        address = address.lower()
        if address:
            lang = self._lang(request)  # the link mail speaks the language the form was in
            await self.writer.submit(
                lambda conn: self._maybe_send(conn, tenant, address, self._source(request), lang)
            )
            self.wake()
        # The same page for known, unknown, locked and rate-limited addresses.
        return self._render(request, tenant, "sent.html", address=address or "-")

    def _maybe_send(
        self, conn: Connection, tenant: Tenant, address: str, source: str, lang: str
    ) -> None:
        now = self.clock()
        since = now - LOCK_WINDOW
        slug = tenant.slug
        limited = (
            access.count_events(conn, slug, "request", since, address=address)
            >= REQUESTS_PER_ADDRESS
            or access.count_events(conn, slug, "request", since, source=source)
            >= REQUESTS_PER_SOURCE
            or access.count_events(conn, slug, "request", now - timedelta(hours=1))
            >= REQUESTS_PER_TENANT
        )
        access.add_event(conn, slug, "request", address, source, now)
        locked = access.count_events(conn, slug, "failure", since, address=address) >= MAX_FAILURES
        if limited or locked or not access.is_client(conn, slug, address):
            return
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
            subject=translate(lang, "mail.subject", tenant=tenant.name),
            text=translate(lang, "mail.body", link=link),
            now=now,
        )
        queue(conn, slug, "link", None, mail)
        repos.add_audit(conn, slug, "web.link_sent", actor=address, detail={"source": source})

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

    async def tickets(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        address = await self._session(request, tenant)
        if address is None:
            raise web.HTTPSeeOther(f"/t/{tenant.slug}/")
        rows = await self.writer.submit(
            lambda conn: access.client_tickets(conn, tenant.slug, address)
        )
        return self._render(request, tenant, "tickets.html", tickets=rows)

    async def ticket(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        address = await self._session(request, tenant)
        if address is None:
            raise web.HTTPSeeOther(f"/t/{tenant.slug}/")
        ref = request.match_info["ref"]

        def work(conn: Connection) -> Any:
            found = access.client_ticket(conn, tenant.slug, address, ref)
            if found is not None:
                repos.add_audit(
                    conn,
                    tenant.slug,
                    "web.ticket_viewed",
                    actor=address,
                    ticket_id=found[0]["id"],
                    detail={"source": self._source(request)},
                )
            return found

        found = await self.writer.submit(work)
        if found is None:
            return self._error(request, tenant, "error.notfound", 404)
        ticket, msgs = found
        shown = [
            {
                "author": (
                    translate(self._lang(request), "ticket.support")
                    if m["sender_role"] == "agent"
                    else (m["from_name"] or m["from_addr"])
                ),
                "is_support": m["sender_role"] == "agent",
                "date": str(m["date"] or m["created_at"])[:16].replace("T", " "),
                "text": _agent_text(m) if m["sender_role"] == "agent" else m["text"],
                "attachments": [
                    {
                        "name": a["filename"],
                        "size": a["size"],
                        "url": f"/t/{tenant.slug}/tickets/{ticket['ref']}/files/{a['sha256']}",
                    }
                    for a in m["attachments"]
                ],
            }
            for m in msgs
        ]
        return self._render(request, tenant, "ticket.html", ticket=ticket, messages=shown)

    async def reply(self, request: web.Request) -> web.Response:
        """The client's answer enters exactly as an email would: through the pipeline."""
        tenant = self._tenant(request)
        address = await self._session(request, tenant)
        if address is None:
            raise web.HTTPSeeOther(f"/t/{tenant.slug}/")
        form = await request.post()
        if not await self._csrf_ok(request, form):
            return self._error(request, tenant, "error.csrf", 403)
        ref = request.match_info["ref"]
        text = str(form.get("text", "")).strip()
        found = await self.writer.submit(
            lambda conn: access.client_ticket(conn, tenant.slug, address, ref)
        )
        if found is None:
            return self._error(request, tenant, "error.notfound", 404)
        if text:
            ticket, _ = found
            token = make_token(self.config.secret, tenant.slug, int(ticket["number"]))
            local, _, domain = tenant.addresses[0].partition("@")
            raw = _web_mail(address, f"{local}+{token}@{domain}", ref, ticket["subject"], text)
            envelope = Envelope(mail_from=address, rcpt_tos=(f"{local}+{token}@{domain}",))
            outcome = await self.pipeline.process(RawMessage(envelope, raw, "web"))
            if not isinstance(outcome, Accepted):
                return self._error(request, tenant, "error.link", 503)
        raise web.HTTPSeeOther(f"/t/{tenant.slug}/tickets/{ref}")

    async def download(self, request: web.Request) -> web.StreamResponse:
        tenant = self._tenant(request)
        address = await self._session(request, tenant)
        if address is None:
            raise web.HTTPSeeOther(f"/t/{tenant.slug}/")
        ref, sha = request.match_info["ref"], request.match_info["sha"]

        def work(conn: Connection) -> dict[str, Any] | None:
            att = access.client_attachment(conn, tenant.slug, address, ref, sha)
            if att is not None:
                repos.add_audit(
                    conn,
                    tenant.slug,
                    "web.attachment_downloaded",
                    actor=address,
                    ticket_id=repos.ticket_by_ref(conn, tenant.slug, ref),
                    detail={
                        "sha256": sha,
                        "filename": att["filename"],
                        "source": self._source(request),
                    },
                )
            return att

        att = await self.writer.submit(work)
        if att is None:
            return self._error(request, tenant, "error.notfound", 404)
        # Only now, with a row of this client's tenant naming it, is the blob read.
        response: web.StreamResponse
        path = self.blobs.file(sha)
        if path is not None:
            response = web.FileResponse(path)  # sendfile, straight from the blob
        else:
            data = await asyncio.to_thread(self.blobs.get, sha)  # the database store
            if data is None:
                return self._error(request, tenant, "error.notfound", 404)
            response = web.Response(body=data)
        name = str(att["filename"])
        ascii_name = name.encode("ascii", "replace").decode().replace('"', "_") or "file"
        response.headers["Content-Type"] = "application/octet-stream"
        response.headers["Content-Disposition"] = (
            f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"
        )
        return response


def _agent_text(message: dict[str, Any]) -> str:
    from routing.commands import split_commands

    return split_commands(message["reply_text"] or message["text"])[1]


def _web_mail(sender: str, to: str, ref: str, subject: str, text: str) -> bytes:
    from email.message import EmailMessage
    from email.policy import SMTP
    from email.utils import formatdate, make_msgid

    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = f"Re: [{ref}] {subject}"
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(domain="web.invalid")
    msg.set_content(text)
    return msg.as_bytes(policy=SMTP)
