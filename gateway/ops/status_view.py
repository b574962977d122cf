"""The operator's one screen for ``gateway status``: listeners, mailboxes, scanner,
outbox, SLA, backups, reports, the last errors and the versions.

It works whether the daemon runs or not: the store and the backup folder are read
directly, the daemon's own view comes from the status file it rewrites every second.
"""

from __future__ import annotations

import platform
import sqlite3
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.ops.backup import ARCHIVE_NAME, list_backups
from outbound.sla_watch import ticket_sla
from routing.config import GatewayConfig
from store import clocks
from store.status import REACTION_WINDOW_HOURS, outbox_summary, reaction_failures, report_summary

__all__ = ["collect_extra", "package_version", "render_extra"]


def package_version(name: str) -> str | None:
    """An installed distribution's version (ours is ``helpdesk-gateway``), or None."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def versions(schema: str | None) -> dict[str, str | None]:
    version = package_version
    return {
        "gateway": version("helpdesk-gateway"),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "schema": schema,
        "aiosmtpd": version("aiosmtpd"),
        "sqlalchemy": version("sqlalchemy"),
    }


def _sla(conn: Any, config: GatewayConfig, now: datetime) -> dict[str, dict[str, Any]]:
    """Per tenant: open tickets, and of those watched (opened since SLA began, as the
    SLA watch counts them) how many are breached, at risk or waiting on the client,
    and which refs are breached."""
    out: dict[str, dict[str, Any]] = {}
    for tenant in config.tenants:
        if tenant.sla is None:
            continue
        counts: dict[str, Any] = {"open": 0, "warning": 0, "breached": 0, "paused": 0}
        breached: list[str] = []
        for t in clocks.open_tickets(conn, tenant.slug):
            counts["open"] += 1
            state = (ticket_sla(tenant, t, now) or {}).get("state")  # None: not watched
            if state in ("breached", "warning", "paused"):
                counts[state] += 1
            if state == "breached":
                breached.append(str(t["ref"]))
        counts["breached_refs"] = breached
        out[tenant.slug] = counts
    return out


def _backups(config: GatewayConfig, now: datetime) -> dict[str, Any]:
    b = config.backup
    info: dict[str, Any] = {
        "enabled": b.enabled,
        "dir": str(b.dir) if b.dir else None,
        "keep": b.keep,
    }
    archives = list_backups(b.dir) if b.dir else []
    info["count"] = len(archives)
    if archives:
        m = ARCHIVE_NAME.match(archives[-1].name)
        assert m is not None
        made = datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        info["last"] = {
            "path": str(archives[-1]),
            "made": made.isoformat(timespec="seconds"),
            "age_hours": round((now - made).total_seconds() / 3600, 1),
            "size": archives[-1].stat().st_size,
        }
    return info


async def collect_extra(
    config: GatewayConfig, engine: AsyncEngine | None, schema: str | None
) -> dict[str, Any]:
    from gateway.clock import system_clock

    now = system_clock()()  # the real clock, unless a test moved it
    out: dict[str, Any] = {
        "versions": versions(schema),
        "listeners": {
            "smtp": {
                "listen": f"{config.smtp.host}:{config.smtp.port}",
                "starttls": config.smtp.tls_cert is not None,
                "require_tls": config.smtp.require_tls,
            },
            "http": f"{config.http.host}:{config.http.port}" if config.http.enabled else None,
        },
        "backups": _backups(config, now),
    }
    if engine is not None and schema:
        try:
            async with engine.connect() as conn:
                out["outbox"] = await conn.run_sync(lambda c: outbox_summary(c, now))
                out["sla"] = await conn.run_sync(lambda c: _sla(c, config, now))
                out["reports"] = await conn.run_sync(report_summary)
                out["reactions"] = await conn.run_sync(lambda c: reaction_failures(c, now))
        except Exception as exc:  # an older schema (run gateway db upgrade): say so, go on
            out["store_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    return out


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _reactions(failed: dict[str, dict[str, Any]]) -> list[str]:
    """Reactions (acknowledgement, notice, relay, SLA clock) that failed lately, per tenant:
    the mail was stored all the same, but someone was not told."""
    if not failed:
        return [f"reaction none failed in the last {REACTION_WINDOW_HOURS} h"]
    lines = []
    for tenant, f in failed.items():
        last = f["last"]
        lines.append(
            f"reaction {tenant}: {f['count']} FAILED in the last {f['hours']} h; last "
            f"{last['reaction']} at {(last['at'] or '-')[:19]}: {last['error'][:120]}"
        )
    return lines


def _workers(workers: list[dict[str, Any]]) -> str:
    """The daemon's worker processes on one line, parse and send alike: pids (a dead
    one said so), what they hold unanswered, how many replaced a dead one."""
    parts = []
    for role in dict.fromkeys(w["role"] for w in workers):
        mine = [w for w in workers if w["role"] == role]
        pids = ", ".join(f"{w['pid']}" + ("" if w["alive"] else " DEAD") for w in mine)
        held = sum(w["in_flight"] for w in mine)
        replaced = f", {mine[0]['replaced']} replaced" if mine[0]["replaced"] else ""
        parts.append(f"{role} {pids} ({held} in flight{replaced})")
    return "; ".join(parts)


def render_extra(report: dict[str, Any]) -> list[str]:
    """The lines that follow scanner/store/daemon on the operator's screen."""
    lines: list[str] = []
    daemon = report.get("daemon") or {}
    ls = report["listeners"]
    smtp = daemon.get("smtp") or {}
    bound = f"{smtp['host']}:{smtp['port']}" if smtp else ls["smtp"]["listen"] + " (configured)"
    tls = (
        "STARTTLS required"
        if ls["smtp"]["require_tls"]
        else ("STARTTLS offered" if ls["smtp"]["starttls"] else "no TLS")
    )
    lines.append(f"smtp     {bound}  {tls}")
    if daemon.get("lmtp"):
        lines.append(f"lmtp     {daemon['lmtp']}")
    http = daemon.get("http")
    lines.append(
        "http     "
        + (
            f"{http['host']}:{http['port']}"
            if http
            else (ls["http"] or "disabled") + " (configured)"
        )
    )
    if daemon.get("workers"):
        lines.append("workers  " + _workers(daemon["workers"]))
    ob = report.get("outbox")
    if ob:
        lines.append(
            f"outbox   {ob['pending']} waiting (oldest {_age(ob['oldest_age_seconds'])}), "
            f"{ob['sent']} sent, {ob['failed']} given up"
        )
    for tenant, c in (report.get("sla") or {}).items():
        lines.append(
            f"sla      {tenant}: {c['open']} open, {c['breached']} BREACHED, "
            f"{c['warning']} at risk, {c['paused']} waiting on the client"
        )
        refs = c.get("breached_refs") or []
        if refs:  # which ones, and where the rest are
            more = f" and {len(refs) - 5} more" if len(refs) > 5 else ""
            lines.append(
                f"         breached: {', '.join(refs[:5])}{more} "
                f"(gateway tickets list --tenant {tenant} --breached)"
            )
    if "reactions" in report:
        lines += _reactions(report["reactions"])
    b = report["backups"]
    if b.get("last"):
        last = b["last"]
        lines.append(
            f"backup   {'daily' if b['enabled'] else 'not scheduled'}, {b['count']} kept in "
            f"{b['dir']}; last {last['made']} ({last['age_hours']} h ago, {last['size']} bytes)"
        )
    else:
        lines.append(f"backup   {'daily, none yet' if b['enabled'] else 'not scheduled'}")
    for tenant, r in (report.get("reports") or {}).items():
        lines.append(
            f"report   {tenant}: {r['month']} made {r['made']}"
            + (" (deleted)" if r["deleted"] else "")
        )
    errors: list[str] = []
    if report.get("store_error"):
        errors.append(f"store: {report['store_error']}")
    ops = daemon.get("ops") or {}
    for e in ops.get("errors", [])[-3:]:
        errors.append(f"{e['at'][:19]} {e['job']}: {e['error']}")
    for e in (ob or {}).get("recent_errors", []):
        errors.append(f"outbox {e['tenant']} {e['kind']} to {e['to']}: {e['error']}")
    for m in daemon.get("mailboxes", []):
        if m.get("last_error"):
            errors.append(f"imap {m['tenant']} {m['mailbox']}: {m['last_error']}")
    if daemon.get("last_config_error"):
        errors.append(f"config: {daemon['last_config_error']}")
    lines.append("errors   " + ("none" if not errors else errors[0]))
    lines += [f"         {e}" for e in errors[1:6]]
    v = report["versions"]
    lines.append(
        f"versions gateway {v['gateway']}, schema {v['schema']}, python {v['python']}, "
        f"sqlite {v['sqlite']}, aiosmtpd {v['aiosmtpd']}, sqlalchemy {v['sqlalchemy']}"
    )
    return lines
