"""The HTTP side, in the daemon's own event loop (aiohttp): health, status, metrics.

``/healthz`` answers anyone: it only says the loop is alive, so a frozen clamd
or a hung IMAP server cannot make it lie (each has its own deadline).
``/status`` and ``/metrics`` tell more than an outsider should know: without
an admin password they answer loopback clients only (behind a proxy: the
client ``[http] trusted_proxies`` resolves, gateway/web/peers.py); with one (a
bcrypt hash in gateway.toml, checked in a pool of its own, a few tries per
source) they need HTTP Basic ``admin:<password>`` from anywhere. Every
response, errors and redirects too, carries the security headers.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import bcrypt
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily

from gateway.metrics import REGISTRY
from gateway.web.peers import Peers
from routing.config import HttpSettings

__all__ = ["StatusSource", "make_app", "start_http"]

StatusSource = Callable[[], Awaitable[dict[str, Any]]]

_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
}
ADMIN_TRIES = 5  # unsuccessful (failed or still running) per source per window
ADMIN_WINDOW = 15 * 60.0
ADMIN_QUEUE = 8  # checks waiting for the admin pool, all sources together


async def _security_headers(_request: web.Request, response: web.StreamResponse) -> None:
    """On every response as it is prepared: a middleware misses the ones raised as
    exceptions (every redirect, the router's 404), a signal does not."""
    for key, value in _HEADERS.items():
        response.headers.setdefault(key, value)


class _Admin:
    """Without a password: loopback clients only (after ``trusted_proxies``). With
    one: HTTP Basic against the bcrypt hash, from anywhere.

    bcrypt at cost 12 takes ~0.25 s of CPU: it runs in a pool of its own, so
    guesses cannot queue in front of the mail pipeline's work on the default
    executor, and each source has ``ADMIN_TRIES`` tries per ``ADMIN_WINDOW``
    (counted when they start, so parallel guesses count too)."""

    def __init__(self, settings: HttpSettings, peers: Peers) -> None:
        self.hash = settings.admin_password_hash.encode()
        self.peers = peers
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="admin-bcrypt")
        self.tries: dict[str, deque[float]] = {}
        self.waiting = 0

    async def allowed(self, request: web.Request) -> bool:
        if not self.hash:
            return self.peers.is_local(request)
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        if user != "admin":
            return False
        source = self.peers.client(request)
        now = time.monotonic()
        tries = self.tries.setdefault(source, deque())
        while tries and tries[0] <= now - ADMIN_WINDOW:
            tries.popleft()
        if len(tries) >= ADMIN_TRIES or self.waiting >= ADMIN_QUEUE:
            raise web.HTTPTooManyRequests(
                text="too many tries\n", headers={"Retry-After": str(int(ADMIN_WINDOW))}
            )
        tries.append(now)
        self.waiting += 1
        try:
            loop = asyncio.get_running_loop()
            ok = await loop.run_in_executor(
                self.pool, bcrypt.checkpw, password.encode(), self.hash
            )
        finally:
            self.waiting -= 1
        if ok:
            tries.remove(now)
        if not tries:
            self.tries.pop(source, None)
        return bool(ok)

    def refuse(self) -> web.Response:
        if self.hash:
            return web.Response(
                status=401,
                text="authentication required\n",
                headers={"WWW-Authenticate": 'Basic realm="gateway", charset="UTF-8"'},
            )
        return web.Response(status=403, text="forbidden: loopback only\n")

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class _OutboxCollector:
    """Delivery counts kept by the outbox worker (the outbound layer cannot import us)."""

    def __init__(self, counts: Callable[[], dict[tuple[str, str], int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "gateway_outbox_attempts",
            "Delivery attempts by kind and result",
            labels=["kind", "result"],
        )
        for (kind, result), n in sorted(self.counts().items()):
            family.add_metric([kind, result], n)
        yield family


def make_app(
    settings: HttpSettings,
    status: StatusSource,
    refresh_gauges: Callable[[], Awaitable[None]],
    outbox_counts: Callable[[], dict[tuple[str, str], int]],
    more_routes: Callable[[web.Application], None] | None = None,
) -> web.Application:
    admin = _Admin(settings, Peers(settings.trusted_proxies))
    collector = _OutboxCollector(outbox_counts)
    REGISTRY.register(collector)  # type: ignore[arg-type]

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def status_view(request: web.Request) -> web.Response:
        if not await admin.allowed(request):
            return admin.refuse()
        return web.Response(
            text=json.dumps(await status(), indent=1, default=str),
            content_type="application/json",
        )

    async def metrics_view(request: web.Request) -> web.Response:
        if not await admin.allowed(request):
            return admin.refuse()
        await refresh_gauges()
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def unregister(_app: web.Application) -> None:
        REGISTRY.unregister(collector)  # type: ignore[arg-type]
        admin.close()

    app = web.Application(client_max_size=64 * 1024)
    app.on_response_prepare.append(_security_headers)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/status", status_view)
    app.router.add_get("/metrics", metrics_view)
    if more_routes is not None:
        more_routes(app)
    app.on_cleanup.append(unregister)
    return app


async def start_http(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve on host:port (0 picks a free port); return the runner and the port bound."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, int(runner.addresses[0][1])
