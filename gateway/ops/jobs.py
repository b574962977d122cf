"""The daemon's operations work: SLA watch, auto-close, monthly reports, report deletion,
daily backups.

Each job is a plain coroutine taking the time as an argument, so tests (and
``gateway report``) run it directly; ``run_ops`` calls them on a schedule with
the daemon's clock (shifted by $GATEWAY_TEST_CLOCK_FILE in tests). A failing
job logs, records its error for ``gateway status`` and is tried again on the
next round; it never takes the daemon down.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.clock import Clock
from gateway.ops import backup as backups
from gateway.ops.report_figures import collect, previous_month
from gateway.ops.report_pdf import render_pdf, report_path, write_atomic
from outbound.auto_close import close_pending, due_closes
from outbound.compose import Templates, report_mail
from outbound.reactions import queue
from outbound.sla_watch import check_sla, due_notices, setup_pending
from routing.config import GatewayConfig, Tenant
from store import reports as store_reports
from store import repos
from store.writer import Writer

__all__ = [
    "OpsState",
    "auto_close_round",
    "backup_due",
    "delete_expired_reports",
    "make_report",
    "monthly_reports",
    "run_ops",
    "sla_round",
]

log = structlog.get_logger("gateway.ops.jobs")
SLA_INTERVAL = 5.0  # seconds between SLA looks (a read; the writer only when a notice is due)
SLOW_INTERVAL = 60.0  # reports, deletions and the backup schedule


@dataclass
class OpsState:
    """What ``gateway status`` shows about the operations jobs."""

    sla_checked_at: str | None = None
    sla_notices: int = 0
    auto_closed: int = 0  # pending tickets closed by [tenants] auto_close_after
    last_backup: dict[str, Any] | None = None
    last_report: dict[str, Any] | None = None
    errors: list[dict[str, str]] = field(default_factory=list)

    def error(self, job: str, exc: BaseException, now: datetime) -> None:
        text = str(exc) or type(exc).__name__
        log.error("ops.failed", job=job, error=text[:500])
        self.errors = [*self.errors[-4:], {"job": job, "at": now.isoformat(), "error": text[:500]}]

    def as_dict(self) -> dict[str, Any]:
        return {
            "sla_checked_at": self.sla_checked_at,
            "sla_notices": self.sla_notices,
            "auto_closed": self.auto_closed,
            "last_backup": self.last_backup,
            "last_report": self.last_report,
            "errors": self.errors,
        }


# --- SLA -------------------------------------------------------------------------------------


async def sla_round(
    config: GatewayConfig, engine: AsyncEngine, writer: Writer, now: datetime
) -> int:
    """Send the warnings and breach notices due now; return how many went out."""
    async with engine.connect() as conn:
        due = await conn.run_sync(
            lambda c: due_notices(c, config, now) or setup_pending(c, config)
        )
    if not due:
        return 0
    sent = await writer.submit(lambda c: check_sla(c, config, now))
    for n in sent:
        log.info("sla.notice", tenant=n.tenant, ticket=n.ref, clock=n.clock, state=n.state)
    return len(sent)


# --- auto-close ------------------------------------------------------------------------------


async def auto_close_round(
    config: GatewayConfig, engine: AsyncEngine, writer: Writer, now: datetime
) -> int:
    """Close the pending tickets ``[tenants] auto_close_after`` has run out on, each
    client told that a reply reopens it; return how many closed."""
    if not any(t.auto_close_after for t in config.tenants):
        return 0
    async with engine.connect() as conn:
        due = await conn.run_sync(lambda c: due_closes(c, config, now))
    if not due:
        return 0
    closed = await writer.submit(lambda c: close_pending(c, config, now, Templates.of(config)))
    for t in closed:
        log.info("ticket.auto_closed", tenant=t.tenant, ticket=t.ref, mailed=t.mailed)
    return len(closed)


# --- reports ---------------------------------------------------------------------------------


async def make_report(
    config: GatewayConfig, engine: AsyncEngine, tenant: Tenant, month: str, now: datetime
) -> bytes:
    """The PDF bytes of one tenant's month (read on a reader, drawn in a thread)."""
    async with engine.connect() as conn:
        stats = await conn.run_sync(lambda c: collect(c, config, tenant, month, now))
    return await asyncio.to_thread(render_pdf, stats)


async def store_report(
    config: GatewayConfig,
    writer: Writer,
    tenant: Tenant,
    month: str,
    pdf: bytes,
    now: datetime,
    *,
    mail: bool,
) -> Path:
    """Write the file under the reports folder, record it (its deletion date follows from
    the row) and, for the monthly run, queue it to the recipients, all in one commit."""
    path = report_path(config, tenant.slug, month)
    sha = await asyncio.to_thread(write_atomic, path, pdf)

    def work(conn: Connection) -> None:
        store_reports.add_report(conn, tenant.slug, month, str(path), len(pdf), sha, now)
        repos.add_audit(
            conn,
            tenant.slug,
            "report.created",
            actor="gateway",
            detail={"month": month, "path": str(path), "sha256": sha, "mailed": mail},
        )
        if mail and tenant.reports.recipients:
            composed = report_mail(
                tenant=tenant,
                hostname=config.hostname,
                to=tenant.reports.recipients,
                month=month,
                filename=path.name,
                pdf=pdf,
                now=now,
            )
            queue(conn, tenant.slug, "report", None, composed)

    await writer.submit(work)
    return path


async def monthly_reports(
    config: GatewayConfig, engine: AsyncEngine, writer: Writer, now: datetime
) -> list[tuple[str, str]]:
    """Last month's report for each tenant that asks for one, once (a missed first of the
    month, daemon down, is caught up at the next start)."""
    made: list[tuple[str, str]] = []
    for tenant in config.tenants:
        if not tenant.reports.monthly:
            continue
        month = previous_month(now, ZoneInfo(tenant.reports.timezone))
        async with engine.connect() as conn:
            done = await conn.run_sync(
                lambda c, t=tenant, m=month: store_reports.has_report(c, t.slug, m)
            )
        if done:
            continue
        pdf = await make_report(config, engine, tenant, month, now)
        path = await store_report(config, writer, tenant, month, pdf, now, mail=True)
        log.info("report.created", tenant=tenant.slug, month=month, path=str(path), size=len(pdf))
        made.append((tenant.slug, month))
    return made


async def delete_expired_reports(config: GatewayConfig, writer: Writer, now: datetime) -> int:
    """Delete report files ``[reports] keep_days`` after they were made (row kept, path cleared)."""
    before = now - timedelta(days=config.reports.keep_days)

    def work(conn: Connection) -> int:
        n = 0
        for row in store_reports.expired_reports(conn, before):
            if row["path"]:
                Path(row["path"]).unlink(missing_ok=True)
            store_reports.mark_report_deleted(conn, row["tenant"], row["id"], now)
            repos.add_audit(
                conn,
                row["tenant"],
                "report.deleted",
                actor="gateway",
                detail={"month": row["month"], "path": row["path"], "made": str(row["created_at"])},
            )
            n += 1
        return n

    n = await writer.submit(work)
    if n:
        log.info("report.deleted", count=n)
    return n


# --- backups ---------------------------------------------------------------------------------


def backup_due(config: GatewayConfig, now: datetime) -> bool:
    """Due when the newest archive is older than the last scheduled time (``at`` in its zone)."""
    b = config.backup
    if not b.enabled or b.dir is None:
        return False
    local = now.astimezone(ZoneInfo(b.timezone))
    slot = local.replace(hour=b.at.hour, minute=b.at.minute, second=0, microsecond=0)
    if slot > local:
        slot -= timedelta(days=1)
    archives = backups.list_backups(b.dir)
    if not archives:
        return True
    m = backups.ARCHIVE_NAME.match(archives[-1].name)
    assert m is not None
    last = datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return last < slot


async def daily_backup(config: GatewayConfig, now: datetime) -> backups.BackupResult | None:
    """The day's archive, SQLite or PostgreSQL alike. With several instances only the
    holder of ``jobs:ops`` runs this; ``[backup] dir`` is best a folder they all mount,
    so a new holder sees the archives (the schedule) and prunes them (docs/scaling.md)."""
    if not backup_due(config, now):
        return None
    assert config.backup.dir is not None
    key = backups.load_backup_key(config)
    stop = threading.Event()
    try:
        result = await asyncio.to_thread(
            backups.make_backup, config, config.backup.dir, key, now, stop
        )
    except asyncio.CancelledError:
        stop.set()  # the lease passed on or the daemon stops: end the copy, drop the part
        raise
    gone = backups.prune_backups(config.backup.dir, config.backup.keep)
    log.info(
        "backup.done",
        path=str(result.path),
        size=result.size,
        tickets=result.tickets,
        engine=result.engine,
        pruned=[p.name for p in gone],
    )
    return result


# --- the schedule ----------------------------------------------------------------------------


async def run_ops(
    get_config: Callable[[], GatewayConfig],
    engine: AsyncEngine,
    writer: Writer,
    wake: Callable[[], None],
    clock: Clock,
    state: OpsState,
) -> None:
    """Forever: the SLA watch every few seconds, the slow jobs every minute."""
    slow_at = 0.0
    loop = asyncio.get_running_loop()
    while True:
        config, now = get_config(), clock()
        try:
            n = await sla_round(config, engine, writer, now)
            state.sla_checked_at = now.isoformat()
            if n:
                state.sla_notices += n
                wake()
        except Exception as exc:
            state.error("sla", exc, now)
        try:
            closed = await auto_close_round(config, engine, writer, now)
            if closed:
                state.auto_closed += closed
                wake()
        except Exception as exc:
            state.error("auto_close", exc, now)
        if loop.time() >= slow_at:
            slow_at = loop.time() + SLOW_INTERVAL
            await _slow(config, engine, writer, wake, now, state)
        await asyncio.sleep(SLA_INTERVAL)


async def _slow(
    config: GatewayConfig,
    engine: AsyncEngine,
    writer: Writer,
    wake: Callable[[], None],
    now: datetime,
    state: OpsState,
) -> None:
    try:
        await delete_expired_reports(config, writer, now)
        made = await monthly_reports(config, engine, writer, now)
        if made:
            state.last_report = {"at": now.isoformat(), "reports": [f"{t} {m}" for t, m in made]}
            wake()
    except Exception as exc:
        state.error("reports", exc, now)
    try:
        result = await daily_backup(config, now)
        if result is not None:
            state.last_backup = {
                "at": result.created_at.isoformat(),
                "path": str(result.path),
                "size": result.size,
                "tickets": result.tickets,
                "engine": result.engine,
            }
    except Exception as exc:
        state.error("backup", exc, now)
        state.last_backup = {**(state.last_backup or {}), "error": str(exc)[:500]}
