"""The HTTP side, in the daemon's own event loop (aiohttp): health, status, metrics.

``/healthz`` answers anyone: it only says the loop is alive, so a frozen clamd
or a hung IMAP server cannot make it lie (each has its own deadline).
``/status`` and ``/metrics`` tell more than an outsider should know: without
an admin password they answer loopback clients only; with one (a bcrypt hash
in gateway.toml, checked off the event loop) they need HTTP Basic
``admin:<password>`` from anywhere.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import bcrypt
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily

from gateway.metrics import REGISTRY
from routing.config import HttpSettings

__all__ = ["StatusSource", "make_app", "start_http"]

StatusSource = Callable[[], Awaitable[dict[str, Any]]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
}


@web.middleware
async def _security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    for key, value in _HEADERS.items():
        response.headers.setdefault(key, value)
    return response


class _Admin:
    """Loopback-only without a password; HTTP Basic against a bcrypt hash with one."""

    def __init__(self, settings: HttpSettings) -> None:
        self.hash = settings.admin_password_hash.encode()

    async def allowed(self, request: web.Request) -> bool:
        if not self.hash:
            try:
                return ipaddress.ip_address(request.remote or "").is_loopback
            except ValueError:
                return False
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        if user != "admin":
            return False
        # bcrypt at cost 12 takes ~0.25 s: never on the event loop
        return await asyncio.to_thread(bcrypt.checkpw, password.encode(), self.hash)

    def refuse(self) -> web.Response:
        if self.hash:
            return web.Response(
                status=401,
                text="authentication required\n",
                headers={"WWW-Authenticate": 'Basic realm="gateway", charset="UTF-8"'},
            )
        return web.Response(status=403, text="forbidden: loopback only\n")


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
    admin = _Admin(settings)
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

    app = web.Application(middlewares=[_security_headers], client_max_size=64 * 1024)
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
