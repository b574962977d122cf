"""The listeners the daemon opens: SMTP always, LMTP and HTTP when configured.

Each is an async context manager that yields its address and, on the way out,
stops accepting and lets the messages in flight finish, so their senders get a
real answer rather than a dropped connection.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from gateway.intake.lmtp import LmtpHandler, start_lmtp
from gateway.intake.pipeline import Pipeline
from gateway.intake.smtp import IntakeHandler, drain, start_smtp
from gateway.web.app import start_http
from routing.config import GatewayConfig, HttpSettings

__all__ = ["http_listener", "lmtp_listener", "smtp_listener", "web_base"]

log = structlog.get_logger("gateway.daemon")


@contextlib.asynccontextmanager
async def smtp_listener(
    config: GatewayConfig, pipeline: Pipeline
) -> AsyncIterator[tuple[str, int]]:
    """The SMTP listener; yields (host, port)."""
    handler = IntakeHandler(pipeline)
    server = await start_smtp(
        handler,
        config.smtp.host,
        config.smtp.port,
        hostname=config.hostname,
        max_size=config.smtp.max_message_size,
        tls=config.smtp,
    )
    host, port = server.sockets[0].getsockname()[:2]
    log.info("smtp.listening", host=host, port=port, tenants=len(config.tenants))
    try:
        yield (host, port)
    finally:
        log.info("shutdown.draining", in_flight=handler.in_flight)
        await drain(handler, server, config.smtp.pipeline_timeout + 5)


@contextlib.asynccontextmanager
async def lmtp_listener(config: GatewayConfig, pipeline: Pipeline) -> AsyncIterator[str]:
    """The LMTP listener (TCP or a unix socket); yields HOST:PORT or the socket's path.
    A unix socket is removed on the way out."""
    handler = LmtpHandler(pipeline)
    lmtp = config.lmtp
    server = await start_lmtp(
        handler,
        hostname=config.hostname,
        max_size=config.smtp.max_message_size,
        host=lmtp.host,
        port=lmtp.port,
        path=lmtp.path,
    )
    if lmtp.path is not None:
        address = str(lmtp.path)
        log.info("lmtp.listening", path=address)
    else:
        host, port = server.sockets[0].getsockname()[:2]
        address = f"{host}:{port}"
        log.info("lmtp.listening", host=host, port=port)
    try:
        yield address
    finally:
        await drain(handler, server, config.smtp.pipeline_timeout + 5)
        if lmtp.path is not None:
            with contextlib.suppress(OSError):
                lmtp.path.unlink()


@contextlib.asynccontextmanager
async def http_listener(app: web.Application, http: HttpSettings) -> AsyncIterator[int]:
    """The HTTP side (status, metrics, the clients' pages, the agents' desk); yields
    the port bound. On the way out the requests in flight are answered first."""
    runner, port = await start_http(app, http.host, http.port)
    try:
        log.info("http.listening", host=http.host, port=port)
        yield port
    finally:
        await runner.cleanup()


def web_base(http: HttpSettings, port: int | None) -> str | None:
    """The pages' base URL in links: ``public_url``, else where the listener is."""
    if port is None:
        return None
    return http.public_url.rstrip("/") or f"http://{http.host}:{port}"
