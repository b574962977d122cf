"""The daemon's wiring: what it opens, in which order, and what a reload swaps.

Everything with a lifetime is entered into one ``AsyncExitStack`` in the order
it depends on, and so closed in reverse (aiohttp's ``CleanupContext`` order):

    store and writer  ->  instance lease  ->  services  ->  web  ->  SMTP
    (closed last)                                           (closed first)

SMTP closes first, after the messages in flight got their answers; then the web
side; then the services (each leased duty releases its lease); then the
instance's own lease, because the name is free only once nothing acts under it;
then the store. An error while starting unwinds whatever was opened so far.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import structlog

from gateway import metrics
from gateway.clock import system_clock
from gateway.daemon.files import digest, watch_file, write_status
from gateway.daemon.listeners import http_listener, lmtp_listener, smtp_listener, web_base
from gateway.daemon.ready import ready_line
from gateway.daemon.supervisor import Policy, Supervisor
from gateway.intake.imap import MailboxWorker
from gateway.intake.parse_pool import ParsePool, parse_pool
from gateway.logs import set_log_privacy
from gateway.ops.gdpr import retention_daily
from gateway.ops.instance import claim_instance, hold
from gateway.ops.jobs import OpsState, run_ops
from gateway.ops.status_view import package_version
from gateway.sending.pool import SendPool, send_pool
from gateway.services import Services, open_services
from gateway.web.app import make_app
from gateway.web.client import ClientSite
from gateway.web.desk import DeskSite
from gateway.web.pages import SiteParts
from gateway.web.view_log import ViewLog
from outbound.sla_watch import start_sla
from routing import language
from routing.config import GatewayConfig, ImapMailbox, load_config
from routing.errors import ConfigError
from store.queries import outbox_status, store_status

__all__ = ["EX_SOFTWARE", "Daemon", "run_daemon"]

log = structlog.get_logger("gateway.daemon")
EX_SOFTWARE = 70  # a service the daemon cannot run without has died (systemd restarts it)
# Seconds the listeners wait for the language model (~0.5 s of CPU, 2 s on a loaded
# host, mostly overlapped by the store's and web side's start): a message never waits
# on the load (figure 5's slowest reply, ~0.6 s); a sender's MTA finding no listener
# retries in minutes, so never longer than this (the lazy path then takes over).
_WARM_WAIT = 10.0
T = TypeVar("T")


def _loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    """Unretrieved task errors as one structured line, not a traceback on stderr.

    aioimaplib leaves a timed-out command's task behind when a session dies;
    that is expected and already handled (the session reconnects).
    """
    exc = context.get("exception")
    name = type(exc).__name__ if exc is not None else "-"
    level = log.debug if name in ("CommandTimeout", "Abort") else log.warning
    level("loop.exception", error=name, message=str(context.get("message", ""))[:200])


class Daemon:
    """One running gateway. ``run()`` starts it, waits for SIGTERM/SIGINT (or a
    service that must not die dying) and stops it; SIGHUP and a saved config file
    call ``reload``; ``snapshot`` is what ``gateway status`` and ``/status`` read."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        # The config the listeners were bound with; a reload swaps the pipeline's,
        # the delivery's, the web site's and the mailboxes', never the sockets.
        self.config = load_config(config_path)
        self.version = package_version("helpdesk-gateway") or "unknown"
        self.generation = 1
        self.last_error: str | None = None
        self.exit_code = 0
        self.started = time.time()
        self.ops_state = OpsState()
        self.smtp_address: tuple[str, int] = ("", 0)
        self.lmtp_address: str | None = None  # HOST:PORT or the socket's path, when on
        self.http_port: int | None = None
        self._loaded = digest(config_path)
        self._stopping = asyncio.Event()
        self.ready = asyncio.Event()  # set once everything is up (for tests, embedding)
        self._mailboxes: dict[tuple[str, ImapMailbox], tuple[str, MailboxWorker]] = {}
        self.services: Services
        self.site: ClientSite
        self.desk: DeskSite  # the agents' pages, /a/<tenant>/
        self.tasks: Supervisor
        self.pools: list[ParsePool | SendPool] = []  # worker processes, for status

    # -- lifetime --------------------------------------------------------------------------

    async def run(self) -> int:
        """Start, serve until told to stop, stop; the exit code (0, or EX_SOFTWARE)."""
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_loop_exception)
        async with contextlib.AsyncExitStack() as stack:
            # First in, so out last: a second SIGTERM while draining is ignored, not fatal.
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
                stack.callback(loop.remove_signal_handler, sig)
            if await self.start(stack):
                await self._stopping.wait()
        log.info("shutdown.done")
        return self.exit_code

    def stop(self, exit_code: int = 0) -> None:
        self.exit_code = self.exit_code or exit_code
        self._stopping.set()

    async def start(self, stack: contextlib.AsyncExitStack) -> bool:
        """Open everything into ``stack``; False if told to stop before it was up."""
        config = self.config
        set_log_privacy(config)
        self.services = services = await stack.enter_async_context(open_services(config))
        # Parse workers before any intake opens; stopped after the last message's answer.
        # The language model, if a tenant may need it, loads while the rest starts: in
        # each worker, else here in a thread (then re-frozen, _freeze).
        tell = language.wanted(config.tenants)
        pipeline = services.pipeline
        pipeline.parse_pool = await stack.enter_async_context(
            parse_pool(config.parse_workers, language=tell)
        )
        pipeline.after_model = _freeze
        # The outbox's SMTP conversations in the send worker; stopped after the outbox.
        sender = await stack.enter_async_context(
            send_pool(config.outbound.send_workers, config.loop)
        )
        if sender is not None:
            services.delivery.links.connect = sender.connection
        self.pools = [p for p in (pipeline.parse_pool, sender) if p is not None]
        if tell and pipeline.parse_pool is None:
            pipeline.warm_language()
        # Before anything acts under this instance's name (the outbox releases the
        # name's claims at start): refuse if a live gateway already uses it.
        me, ttl = config.instance, config.lease_seconds
        claimed = await self._unless_stopped(claim_instance(services.writer, me, ttl))
        if claimed is None:
            return False
        lease, holder = claimed
        lifeline = await stack.enter_async_context(Supervisor(self._service_died))
        lifeline.start(
            "instance",
            lambda: hold(services.writer, lease, holder, ttl, asyncio.Event().wait),
            Policy.STOP,
        )
        self.tasks = await stack.enter_async_context(Supervisor(self._service_died))
        # The audit rows of page views, of both sites, written in batches (view_log.py).
        self.views = ViewLog(services.writer)
        parts = SiteParts(
            config, services.writer, services.reader, self.views, services.blobs,
            services.delivery.wake,
        )  # fmt: skip
        self.site = ClientSite(parts, services.pipeline)
        self.desk = DeskSite(parts, services.engine)
        if config.http.enabled:
            await stack.enter_async_context(self._http())
        now = system_clock()()
        await services.writer.submit(lambda c: start_sla(c, config, now))  # before any mail
        if tell:  # the listeners (so "ready") wait for it: see _WARM_WAIT
            await pipeline.language_warmed(_WARM_WAIT)
        self.smtp_address = await stack.enter_async_context(
            smtp_listener(config, services.pipeline)
        )
        if config.lmtp.enabled:
            self.lmtp_address = await stack.enter_async_context(
                lmtp_listener(config, services.pipeline)
            )
        self._start_services()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        stack.callback(loop.remove_signal_handler, signal.SIGHUP)
        line = ready_line(config, self.smtp_address, web_base(config.http, self.http_port))
        log.info("gateway.ready", line=line, loop=type(loop).__module__.split(".")[0])
        with contextlib.suppress(OSError):  # no stdout (closed, a gone pipe): the log has it
            print(line, flush=True)
        _freeze()
        self.ready.set()
        return True

    async def _unless_stopped(self, work: Awaitable[T]) -> T | None:
        """``work``'s result, or None if a stop signal came first (``work`` is cancelled)."""
        task = asyncio.ensure_future(work)
        stopping = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        for pending in (task, stopping):
            pending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            return await task
        return None

    def _service_died(self, name: str) -> None:
        log.error("shutdown.service_died", service=name, exit_code=EX_SOFTWARE)
        self.stop(EX_SOFTWARE)

    @contextlib.asynccontextmanager
    async def _http(self) -> AsyncIterator[None]:
        """Status, metrics, the clients' pages and the agents' desk."""
        http, services = self.config.http, self.services
        app = make_app(
            http,
            self.full_status,
            self.refresh_gauges,
            lambda: dict(services.delivery.attempts),
            lambda app: (
                self.site.routes(app),
                self.desk.routes(app),
                # After the last request is answered, before the writer closes.
                app.on_cleanup.append(self.views.close),
            ),
        )
        async with http_listener(app, http) as self.http_port:
            self.site.base_url = self.desk.base_url = web_base(http, self.http_port)
            yield

    def _start_services(self) -> None:
        """Every service but the instance lease, each restarted if it dies (none of them
        holds state a new run cannot rebuild from the store)."""
        services, tasks, config = self.services, self.tasks, self.config
        probe = config.scanner.probe_interval
        tasks.start("scanner-probe", lambda: services.scanner.probe_forever(probe))
        tasks.start("outbox-delivery", services.delivery.run)
        tasks.start(
            "retention",
            self._leased(
                "jobs:retention",
                lambda: retention_daily(services, lambda: services.pipeline.config, system_clock()),
            ),
        )
        tasks.start(
            "ops",
            self._leased(
                "jobs:ops",
                lambda: run_ops(
                    lambda: services.pipeline.config,
                    services.engine,
                    services.writer,
                    services.delivery.wake,
                    system_clock(),
                    self.ops_state,
                ),
            ),
        )
        self._start_mailboxes(config)
        status = config.data_dir / "status.json"
        tasks.start("status-file", lambda: write_status(status, self.snapshot))
        if config.watch_config:
            tasks.start("config-watch", lambda: watch_file(self.config_path, self._file_saved))

    def _leased(
        self, lease: str, duty: Callable[[], Awaitable[None]]
    ) -> Callable[[], Awaitable[None]]:
        """A duty one instance at a time does, whichever holds the lease (docs/scaling.md).
        One instance alone always holds them."""
        writer, me, ttl = self.services.writer, self.config.instance, self.config.lease_seconds
        return lambda: hold(writer, lease, me, ttl, duty)

    def _start_mailboxes(self, cfg: GatewayConfig) -> None:
        """A worker per configured mailbox: new ones start, removed or changed ones
        stop (their committed state stays in the store), unchanged ones go on."""
        wanted = {(t.slug, box): t for t in cfg.tenants for box in t.imap}
        for key in [k for k in self._mailboxes if k not in wanted]:
            self.tasks.stop(self._mailboxes.pop(key)[0])
        services = self.services
        for key, tenant in wanted.items():
            if key not in self._mailboxes:
                w = MailboxWorker(cfg, tenant, key[1], services.pipeline, services.writer)
                lease = f"imap:{tenant.slug}:{w.box.key}"
                self.tasks.start(lease, self._leased(lease, w.run))
                self._mailboxes[key] = (lease, w)

    # -- reload ----------------------------------------------------------------------------

    def _file_saved(self) -> None:
        self.reload("watch")

    def reload(self, trigger: str = "sighup") -> None:
        """Swap in the file's config for messages that start from now on; a bad
        file is refused whole and the running config stays."""
        loaded = digest(self.config_path)
        if trigger == "watch" and loaded == self._loaded:
            return  # touched, or rewritten with the same bytes
        self._loaded = loaded
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            log.error("config.reload_refused", trigger=trigger, problems=exc.problems)
            self.last_error = "; ".join(exc.problems)[:2000]
            return
        self.last_error = None
        self.services.pipeline.configure(new)
        set_log_privacy(new)
        self.services.delivery.configure(new)
        self.site.configure(new)
        self.desk.configure(new)
        self._start_mailboxes(new)
        self.generation += 1
        log.info("config.reloaded", trigger=trigger, generation=self.generation)

    # -- what it reports -------------------------------------------------------------------

    def snapshot(self) -> dict[str, object]:
        """The state ``gateway status`` reads from the status file."""
        config, services = self.config, self.services
        host, port = self.smtp_address
        return {
            "pid": os.getpid(),
            "written_at": time.time(),
            "config_generation": self.generation,
            "last_config_error": self.last_error,
            "version": self.version,
            "smtp": {
                "host": host,
                "port": port,
                "starttls": config.smtp.tls_cert is not None,
                "require_tls": config.smtp.require_tls,
            },
            "lmtp": self.lmtp_address,
            "http": (
                {"host": config.http.host, "port": self.http_port}
                if self.http_port is not None
                else None
            ),
            "ops": self.ops_state.as_dict(),
            "scanner": {
                "address": services.scanner.config.address,
                "reachable": services.scanner.reachable,
                "last_checked": services.scanner.last_checked,
            },
            "outbox": {"sent": services.delivery.sent, "failed": services.delivery.failed},
            "mailboxes": [w.state.as_dict() for _, w in self._mailboxes.values()],
            "workers": [worker for pool in self.pools for worker in pool.state()],
            "services": self.tasks.state(),
        }

    async def full_status(self) -> dict[str, object]:
        """``/status``: the snapshot and what only the store knows."""
        services = self.services
        store = await store_status(services.engine)
        return {
            "version": self.version,
            "uptime_seconds": round(time.time() - self.started, 1),
            **self.snapshot(),
            "outbox": {
                "sent": services.delivery.sent,
                "failed": services.delivery.failed,
                **store["outbox"],
            },
            "tenants": store["tenants"],
        }

    async def refresh_gauges(self) -> None:
        """The gauges ``/metrics`` reads, refreshed when it is scraped."""
        waiting = await outbox_status(self.services.engine)
        metrics.OUTBOX_PENDING.set(waiting["pending"])
        metrics.OUTBOX_OLDEST.set(waiting["oldest_age_seconds"] or 0)
        big = self.services.pipeline.big_mail
        metrics.BIG_MAIL_WAITING.set(big.waiting)
        metrics.BIG_MAIL_HELD.set(big.held)
        for _, m in self._mailboxes.values():
            labels = (m.tenant.slug, m.box.key)
            metrics.IMAP_BACKLOG.labels(*labels).set(m.state.backlog)
            metrics.IMAP_CONNECTED.labels(*labels).set(int(m.state.connected))


async def run_daemon(config_path: Path) -> int:
    """``gateway run``: the exit code (0 after SIGTERM/SIGINT; EX_SOFTWARE if a
    service the daemon cannot run without died)."""
    return await Daemon(config_path).run()


def _freeze() -> None:
    """What start-up built (modules, the config, SQLAlchemy's tables and compiled
    statements) lives as long as the process: moved out of the
    collector's sight. Without this every full collection walked all of it: pauses
    of 0.1-1 s under figure 8's load, the whole of its p99 (BENCHMARKS.md). Run again
    once the language model is loaded here (py3langid's and numpy's modules)."""
    gc.collect()
    gc.freeze()
