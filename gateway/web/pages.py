"""What every page of the clients' site (``/t/``) and the agents' desk (``/a/``)
shares: the tenant from the URL, the language, rendering with the security
headers, cookies, the CSRF check and the session lookup.

The two sites are two subclasses with their own ``PREFIX``, session cookie and
``REALM``: cookies are scoped to ``/<prefix>/<tenant>/``, so a browser never
sends one site's cookies to the other, and every token (session, link verifier)
is hashed with the realm in front, so a client's token presented to the desk
(or the other way round) matches no row at all.

The rules these helpers keep are listed in ``gateway/web/signin.py``.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import re
import secrets
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from http.cookies import Morsel
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from aiohttp import hdrs, web

from gateway.clock import Clock, system_clock
from gateway.web.i18n import LANGUAGES, pick_language, translator
from gateway.web.peers import Peers
from gateway.web.view_log import ViewLog
from outbound.templates import Templates
from routing.config import GatewayConfig, Tenant
from store import access
from store.blobs import BlobStore
from store.reader import Reader
from store.writer import Writer

__all__ = ["PAGE_CACHE", "PAGE_CSP", "PAGE_TTL", "Pages", "SiteParts"]

_HERE = Path(__file__).parent
PAGE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
PAGE_CACHE = 256  # rendered pages kept (_render_cached): a few MB at most
PAGE_TTL = 300.0  # seconds a rendered page is kept, however often it is shown


_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,128}")  # what token_urlsafe makes: safe in HTML and cookies


@functools.lru_cache(maxsize=256)
def _cookie_attributes(path: str, http_only: bool, secure: bool, max_age: int | None) -> str:
    """``; HttpOnly; Path=...`` as aiohttp's ``set_cookie`` writes them (the standard
    library's Morsel), built once: per response it cost ~30 µs, a tenth of a page."""
    morsel: Morsel[str] = Morsel()
    morsel.set("n", "v", "v")
    morsel.update({"path": path, "httponly": http_only, "secure": secure, "samesite": "Lax"})
    if max_age is not None:
        morsel["max-age"] = str(max_age)
    return morsel.OutputString()[len("n=v") :]


@dataclass(frozen=True, slots=True)
class SiteParts:
    """What every page class works through, made once by the daemon for both sites:
    each site's constructor takes these as one and adds only its own parts."""

    config: GatewayConfig
    writer: Writer
    reader: Reader
    views: ViewLog
    blobs: BlobStore  # the files the ticket pages serve
    wake: Callable[[], None]
    clock: Clock | None = None


class Pages:
    """The base of both sites: each page class adds its handlers, these stay one."""

    PREFIX = "t"  # the URL's first segment: /t/<tenant>/ for clients
    SESSION_COOKIE = "gw_session"
    REALM = ""  # hashed in front of every token; the clients' stays "" (rows already stored)

    def __init__(self, parts: SiteParts) -> None:
        config = self.config = parts.config
        self.writer = parts.writer  # what a page changes (sign-in, downloads' audit, replies)
        self.reader = parts.reader  # what a page shows: never queued behind the writer's commits
        self.views = parts.views  # the audit rows of views, written in batches
        self.blobs = parts.blobs
        self.wake = parts.wake  # the outbox: a mail was queued
        self.clock = parts.clock or system_clock()
        self.peers = Peers(config.http.trusted_proxies)
        # Set by the daemon once the listener is bound (port 0 picks one).
        self.base_url = config.http.base_url
        self.mail_templates = Templates.of(config)  # the sign-in mail, per language
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(_HERE / "templates")),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            auto_reload=False,  # templates ship with the code: no stat() per page
        )
        # Where a page's CSRF token goes: rendered as this mark, which no stored text can
        # hold (random per process), and replaced per request (_respond).
        self._csrf_mark = f"csrf-{secrets.token_hex(16)}"
        self._pages: dict[tuple[Any, ...], tuple[float, list[bytes]]] = {}  # (rendered, page)

    def configure(self, config: GatewayConfig) -> None:
        self.config = config
        self.mail_templates = Templates.of(config)
        self.peers = Peers(config.http.trusted_proxies)
        self._pages.clear()  # a tenant's name or languages may have changed

    def _tenant(self, request: web.Request) -> Tenant:
        tenant = self.config.tenant(request.match_info["slug"])
        if tenant is None:
            raise web.HTTPNotFound(text="not found\n")
        return tenant

    def _base(self, tenant: Tenant) -> str:
        """``/<prefix>/<tenant>``: where this site's pages of this tenant live."""
        return f"/{self.PREFIX}/{tenant.slug}"

    def _digest(self, token: str) -> str:
        """What is stored of a token: its SHA-256, with this site's realm in front."""
        return hashlib.sha256((self.REALM + token).encode()).hexdigest()

    def _session_digest(self, request: web.Request) -> str | None:
        """What the store holds of the request's session token; None without a cookie."""
        token = request.cookies.get(self.SESSION_COOKIE)
        return self._digest(token) if token else None

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
        return self._respond(request, tenant, lang, self._page(tenant, name, lang, ctx), status)

    def _render_cached(
        self,
        request: web.Request,
        tenant: Tenant,
        name: str,
        key: Hashable,
        ctx: Callable[[str], dict[str, Any]],
    ) -> web.Response:
        """``_render`` for a page that is the same for everyone who may see it, but for
        the CSRF token: rendered once per ``key`` and language. ``key`` must hold
        everything the page shows (the rows read, not a version number), so no change
        in the store needs to reach this cache: changed data is another key. An entry
        lives ``PAGE_TTL`` at most, so an erased text leaves the memory soon too."""
        lang = self._lang(request)
        full = (name, tenant.slug, lang, key)
        pages, now = self._pages, time.monotonic()
        while pages:  # in the order rendered: the oldest first
            oldest = next(iter(pages))
            if len(pages) < PAGE_CACHE and pages[oldest][0] > now - PAGE_TTL:
                break
            del pages[oldest]
        found = pages.get(full)
        if found is None:
            found = pages[full] = (now, self._page(tenant, name, lang, ctx(lang)))
        return self._respond(request, tenant, lang, found[1], 200)

    def _page(self, tenant: Tenant, name: str, lang: str, ctx: dict[str, Any]) -> list[bytes]:
        """The rendered page as UTF-8, split where the CSRF token goes."""
        html = self.env.get_template(name).render(
            t=translator(lang),
            lang=lang,
            languages=tenant.languages,
            tenant_name=tenant.name,
            tenant_slug=tenant.slug,
            base_path=self._base(tenant),
            csrf=self._csrf_mark,
            css_href="/static/gateway.css",
            **ctx,
        )
        return html.encode().split(self._csrf_mark.encode())

    def _respond(
        self, request: web.Request, tenant: Tenant, lang: str, parts: list[bytes], status: int
    ) -> web.Response:
        csrf = request.cookies.get("gw_csrf", "")
        if not _TOKEN.fullmatch(csrf):  # none, or not one of ours: the page holds it as is
            csrf = secrets.token_urlsafe(24)
        body = csrf.encode().join(parts)
        response = web.Response(body=body, status=status, content_type="text/html", charset="utf-8")
        response.headers["Content-Security-Policy"] = PAGE_CSP
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
        """``value`` is one of our tokens or a language code: nothing to quote."""
        attributes = _cookie_attributes(
            f"{self._base(tenant)}/",
            http_only,
            not self.config.http.insecure_cookies,
            int(days * 86400) if days else None,
        )
        response.headers.add(hdrs.SET_COOKIE, f"{name}={value}{attributes}")

    def _source(self, request: web.Request) -> str:
        """The client's address behind our proxies (gateway/web/peers.py)."""
        return self.peers.client(request)

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
        """The live session's address, checked in the store on every request (a logout,
        an expiry or an erasure counts at once); one row, read inline (store/reader.py)."""
        digest = self._session_digest(request)
        if digest is None:
            return None
        now = self.clock()
        return await self.reader.read(
            lambda conn: access.session_address(conn, tenant.slug, digest, now), inline=True
        )

    async def _send_file(
        self, request: web.Request, tenant: Tenant, sha: str, name: str
    ) -> web.StreamResponse:
        """A stored file as a download. Call it only after a row of this tenant that the
        user may see has named ``sha``: the blob store itself knows no tenants."""
        response: web.StreamResponse
        path = self.blobs.file(sha)
        if path is not None:
            response = web.FileResponse(path)  # sendfile, straight from the blob
        else:
            data = await asyncio.to_thread(self.blobs.get, sha)  # the database store
            if data is None:
                return self._error(request, tenant, "error.notfound", 404)
            response = web.Response(body=data)
        ascii_name = name.encode("ascii", "replace").decode().replace('"', "_") or "file"
        response.headers["Content-Type"] = "application/octet-stream"
        response.headers["Content-Disposition"] = (
            f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"
        )
        return response

    async def css(self, _request: web.Request) -> web.StreamResponse:
        return web.FileResponse(_HERE / "static" / "gateway.css")

    async def script(self, _request: web.Request) -> web.StreamResponse:
        return web.FileResponse(_HERE / "static" / "challenge.js")
