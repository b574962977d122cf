"""``gateway run``, ``config check``, ``db upgrade`` and ``status``: the instance itself."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from gateway.cli.common import config_path, load, open_read
from gateway.cli.errors import CommandError
from routing.auth import unauthenticated
from routing.config import GatewayConfig, load_config
from routing.errors import ConfigError

__all__ = ["add_parsers"]


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    sub.add_parser("run", parents=[common], help="run the daemon").set_defaults(func=_run)

    pc = sub.add_parser("config", parents=[common], help="check the config file")
    csub = pc.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    pcc = csub.add_parser(
        "check", parents=[common], help="every error with its file, line and key; exit 1"
    )
    pcc.add_argument("path", nargs="?", type=Path)
    pcc.set_defaults(func=_config_check)

    pst = sub.add_parser(
        "status", parents=[common], help="is the scanner reachable, is the store ready"
    )
    pst.add_argument("--json", action="store_true")
    pst.set_defaults(func=_status)

    pd = sub.add_parser("db", parents=[common], help="database maintenance")
    dsub = pd.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    dsub.add_parser(
        "upgrade", parents=[common], help="bring the schema to the newest migration"
    ).set_defaults(func=_db_upgrade)


def _run(args: argparse.Namespace) -> int:
    from gateway.daemon import run_daemon
    from gateway.loop import run_on

    config = load(args, level=logging.INFO)
    return run_on(config.loop, lambda: run_daemon(config.path))


def _config_check(args: argparse.Namespace) -> int:
    """Exit 0 and one summary line, or every problem (file:line: key: message) and exit 1."""
    try:
        cfg = load_config(args.path or config_path(args))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"gateway: config error: {problem}", file=sys.stderr)
        return 1
    n_addr = sum(len(t.addresses) for t in cfg.tenants)
    n_box = sum(len(t.imap) for t in cfg.tenants)
    n_rules = sum(len(t.rules) for t in cfg.tenants)
    n_queues = sum(len(t.queues) for t in cfg.tenants)
    print(
        f"ok: {cfg.path}: {len(cfg.tenants)} tenants, {n_addr} addresses, {n_box} mailboxes, "
        f"{n_queues} queues, {n_rules} rules"
    )
    for warning in unauthenticated(cfg):  # valid, but every From is believed
        print(f"gateway: warning: {warning}", file=sys.stderr)
    return 0


def _db_upgrade(args: argparse.Namespace) -> int:
    from gateway.services import open_services

    async def upgrade(config: GatewayConfig) -> None:
        async with open_services(config):
            pass

    asyncio.run(upgrade(load(args)))
    print("ok: schema is current")
    return 0


def _status(args: argparse.Namespace) -> int:
    """Exit 0 when mail with attachments can be accepted now, 69 when it would be deferred."""
    return asyncio.run(_status_of(load(args), args.json))


async def _status_of(config: GatewayConfig, as_json: bool) -> int:
    from datetime import UTC, datetime

    from sqlalchemy import text

    from gateway.ops.status_view import collect_extra, render_extra
    from gateway.services import make_scanner

    scanner = make_scanner(config)
    reachable = await scanner.ping()
    checked = datetime.fromtimestamp(scanner.last_checked or 0, UTC).isoformat(timespec="seconds")
    schema: str | None = None
    store_error: str | None = None
    extra: dict[str, Any] = {}
    try:
        engine = open_read(config)
        try:
            async with engine.connect() as conn:
                schema = (
                    await conn.execute(text("SELECT version_num FROM alembic_version"))
                ).scalar()
            extra = await collect_extra(config, engine, schema)
        finally:
            await engine.dispose()
    except CommandError as exc:
        store_error = str(exc)
    except Exception as exc:
        store_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    daemon = _daemon_status(config)
    report = {
        "daemon": daemon,
        "scanner": {
            "address": config.scanner.address,
            "reachable": reachable,
            "checked_at": checked,
        },
        "store": {"url": _safe_url(config.database_url), "schema": schema, "error": store_error},
        **(extra or await collect_extra(config, None, schema)),
    }
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        state = "reachable" if reachable else "UNREACHABLE (mail with attachments is deferred)"
        print(f"scanner  {config.scanner.address}  {state}  (checked {checked})")
        print(
            f"store    {report['store']['url']}  "
            + (f"schema {schema}" if schema else f"NOT READY: {store_error}")
        )
        _print_daemon(daemon)
        print("\n".join(render_extra(report)))
    return 0 if reachable and schema else os.EX_UNAVAILABLE


def _print_daemon(daemon: dict[str, Any] | None) -> None:
    if daemon is None:
        print("daemon   not running (no fresh status file)")
        return
    err = daemon.get("last_config_error")
    print(
        f"daemon   pid {daemon['pid']}, config generation {daemon['config_generation']}"
        + (f", last reload refused: {err}" if err else "")
    )
    for m in daemon.get("mailboxes", []):
        state = "idling" if m["idling"] else "connected" if m["connected"] else "DOWN"
        print(
            f"imap     {m['tenant']} {m['mailbox']}  {state}, backlog {m['backlog']}, "
            f"committed {m['committed']}, quarantined {m['quarantined']}"
            + (f", last error: {m['last_error']}" if m["last_error"] else "")
        )


def _daemon_status(config: GatewayConfig) -> dict[str, Any] | None:
    """What the running daemon last wrote (it rewrites it every second), if fresh."""
    import time

    path = config.data_dir / "status.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or time.time() - float(data.get("written_at", 0)) > 10:
        return None
    return data


def _safe_url(url: str) -> str:
    """A database URL without its password, for printing."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
