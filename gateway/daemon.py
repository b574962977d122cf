"""The daemon: builds the services from the config and owns their lifetimes.

SIGTERM/SIGINT stop accepting, let messages in flight finish (their senders
get a real answer, not a dropped connection) and exit 0. SIGHUP re-reads the
config; an invalid file is refused and the running config stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from gateway import metrics
from gateway.clock import system_clock
from gateway.intake.imap import MailboxWorker
from gateway.intake.smtp import IntakeHandler, start_smtp
from gateway.logs import set_log_privacy
from gateway.ops.gdpr import retention_daily
from gateway.ops.instance import claim_instance, hold
from gateway.ops.jobs import OpsState, run_ops
from gateway.services import open_services
from gateway.web.app import make_app, start_http
from gateway.web.client import ClientSite
from routing.config import GatewayConfig, ImapMailbox, load_config
from routing.errors import ConfigError
from store.queries import store_status

__all__ = ["run_daemon"]

log = structlog.get_logger("gateway.daemon")
__version__ = "0.1.0"


def _loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    """Unretrieved task errors as one structured line, not a traceback on stderr.

    aioimaplib leaves a timed-out command's task behind when a session dies;
    that is expected and already handled (the session reconnects).
    """
    exc = context.get("exception")
    name = type(exc).__name__ if exc is not None else "-"
    level = log.debug if name in ("CommandTimeout", "Abort") else log.warning
    level("loop.exception", error=name, message=str(context.get("message", ""))[:200])


async def write_status(path: Path, snapshot: Callable[[], dict[str, object]]) -> None:
    """The daemon's state for ``gateway status`` (another process): a file, renamed in whole."""
    tmp = path.with_suffix(".tmp")
    while True:
        try:
            tmp.write_text(json.dumps(snapshot(), indent=1), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("status.write_failed", error=str(exc))
        await asyncio.sleep(1.0)


def _digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""


async def watch_file(path: Path, on_change: Callable[[], None], debounce_ms: int = 500) -> None:
    """Call ``on_change`` when the file changes, debounced: an editor's save is often
    several writes and a rename, and one reload should follow it, not three.

    The folder is watched, not the file, because a save by rename replaces the
    inode a file watch would hold. Where inotify is unavailable we poll.
    """
    from watchfiles import awatch

    name = path.name

    def only_ours(_change: object, changed: str) -> bool:
        return Path(changed).name == name

    for force_polling in (False, True):
        try:
            on_change()  # a change made while the watch was being set up
            # Every 2 s without an event we yield anyway and on_change compares the
            # file's digest: a safety net for events the kernel did not deliver.
            async for _ in awatch(
                path.parent,
                watch_filter=only_ours,
                debounce=debounce_ms,
                recursive=False,
                force_polling=force_polling,
                poll_delay_ms=500,
                rust_timeout=2000,
                yield_on_timeout=True,
            ):
                on_change()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # no inotify here: fall back to polling, once
            log.warning("config.watch_failed", error=f"{type(exc).__name__}: {exc}")


async def run_daemon(config_path: Path) -> int:
    config = load_config(config_path)
    set_log_privacy(config)
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_loop_exception)
    stop = asyncio.Event()
    generation = 1
    async with open_services(config) as services:
        # Before anything acts under this instance's name (the outbox releases the
        # name's claims at start): refuse if a live gateway already uses it.
        me, ttl = config.instance, config.lease_seconds
        identity_lease, identity = await claim_instance(services.writer, me, ttl)
        identity_task = asyncio.create_task(
            hold(services.writer, identity_lease, identity, ttl, asyncio.Event().wait),
            name="instance-identity",
        )
        handler = IntakeHandler(services.pipeline)
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
        probe = asyncio.create_task(
            services.scanner.probe_forever(config.scanner.probe_interval), name="scanner-probe"
        )
        delivery = asyncio.create_task(services.delivery.run(), name="outbox-delivery")
        # Duties one instance at a time does, whichever holds the lease (docs/scaling.md):
        # each mailbox's poller and the periodic jobs. One instance alone always holds them.

        def leased(name: str, duty: Callable[[], Any]) -> Any:
            return hold(services.writer, name, me, ttl, duty)

        retention = asyncio.create_task(
            leased(
                "jobs:retention",
                lambda: retention_daily(services, lambda: services.pipeline.config, system_clock()),
            ),
            name="retention",
        )
        workers: dict[tuple[str, ImapMailbox], tuple[MailboxWorker, asyncio.Task[None]]] = {}

        def start_mailboxes(cfg: GatewayConfig) -> None:
            """A worker per configured mailbox: new ones start, removed or changed ones
            stop (their committed state stays in the store), unchanged ones go on."""
            wanted = {(t.slug, box): t for t in cfg.tenants for box in t.imap}
            for key in [k for k in workers if k not in wanted]:
                workers.pop(key)[1].cancel()
            for key, tenant in wanted.items():
                if key not in workers:
                    w = MailboxWorker(cfg, tenant, key[1], services.pipeline, services.writer)
                    lease = f"imap:{tenant.slug}:{w.box.key}"
                    task = asyncio.create_task(leased(lease, w.run), name=f"imap:{w.box.key}")
                    workers[key] = (w, task)
            mailboxes[:] = [w for w, _ in workers.values()]

        mailboxes: list[MailboxWorker] = []
        start_mailboxes(config)
        last_error: list[str] = []
        ops_state = OpsState()
        ops = asyncio.create_task(
            leased(
                "jobs:ops",
                lambda: run_ops(
                    lambda: services.pipeline.config,
                    services.engine,
                    services.writer,
                    services.delivery.wake,
                    system_clock(),
                    ops_state,
                ),
            ),
            name="ops",
        )

        def snapshot() -> dict[str, object]:
            return {
                "pid": os.getpid(),
                "written_at": time.time(),
                "config_generation": generation,
                "last_config_error": last_error[0] if last_error else None,
                "version": __version__,
                "smtp": {
                    "host": host,
                    "port": port,
                    "starttls": config.smtp.tls_cert is not None,
                    "require_tls": config.smtp.require_tls,
                },
                "http": {"host": config.http.host, "port": http_port} if http_runner else None,
                "ops": ops_state.as_dict(),
                "scanner": {
                    "address": services.scanner.config.address,
                    "reachable": services.scanner.reachable,
                    "last_checked": services.scanner.last_checked,
                },
                "outbox": {"sent": services.delivery.sent, "failed": services.delivery.failed},
                "mailboxes": [m.state.as_dict() for m in mailboxes],
            }

        http_runner = None
        http_port = 0
        status = asyncio.create_task(
            write_status(config.data_dir / "status.json", snapshot), name="status-file"
        )
        started = time.time()

        async def full_status() -> dict[str, object]:
            store = await store_status(services.engine)
            return {
                "version": __version__,
                "uptime_seconds": round(time.time() - started, 1),
                **snapshot(),
                "outbox": {
                    "sent": services.delivery.sent,
                    "failed": services.delivery.failed,
                    **store["outbox"],
                },
                "tenants": store["tenants"],
            }

        async def refresh_gauges() -> None:
            store = await store_status(services.engine)
            metrics.OUTBOX_PENDING.set(store["outbox"]["pending"])
            metrics.OUTBOX_OLDEST.set(store["outbox"]["oldest_age_seconds"] or 0)
            for m in mailboxes:
                labels = (m.tenant.slug, m.box.key)
                metrics.IMAP_BACKLOG.labels(*labels).set(m.state.backlog)
                metrics.IMAP_CONNECTED.labels(*labels).set(int(m.state.connected))

        site = ClientSite(
            config, services.writer, services.pipeline, services.blobs, services.delivery.wake
        )
        if config.http.enabled:
            app = make_app(
                config.http,
                full_status,
                refresh_gauges,
                lambda: dict(services.delivery.attempts),
                site.routes,
            )
            http_runner, http_port = await start_http(app, config.http.host, config.http.port)
            site.base_url = (
                config.http.public_url.rstrip("/") or f"http://{config.http.host}:{http_port}"
            )
            log.info("http.listening", host=config.http.host, port=http_port)

        loaded = [_digest(config_path)]

        def reload(trigger: str = "sighup") -> None:
            """Swap in the file's config for messages that start from now on; a bad
            file is refused whole and the running config stays."""
            nonlocal generation
            digest = _digest(config_path)
            if trigger == "watch" and digest == loaded[0]:
                return  # touched, or rewritten with the same bytes
            loaded[0] = digest
            try:
                new = load_config(config_path)
            except ConfigError as exc:
                log.error("config.reload_refused", trigger=trigger, problems=exc.problems)
                last_error[:] = ["; ".join(exc.problems)[:2000]]
                return
            last_error.clear()
            services.pipeline.configure(new)
            set_log_privacy(new)
            services.delivery.configure(new)
            site.configure(new)
            start_mailboxes(new)
            generation += 1
            log.info("config.reloaded", trigger=trigger, generation=generation)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, reload)
        watcher = (
            asyncio.create_task(watch_file(config_path, lambda: reload("watch")), name="watch")
            if config.watch_config
            else None
        )
        await stop.wait()
        if watcher is not None:
            watcher.cancel()

        log.info("shutdown.draining", in_flight=handler.in_flight)
        handler.draining = True
        server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(config.smtp.pipeline_timeout + 5):
                await handler.idle.wait()
        if http_runner is not None:
            await http_runner.cleanup()
        for task in (probe, delivery, retention, status, ops, *(t for _, t in workers.values())):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        identity_task.cancel()  # last: the name is free only once nothing acts under it
        with contextlib.suppress(asyncio.CancelledError):
            await identity_task
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
    log.info("shutdown.done")
    return 0
