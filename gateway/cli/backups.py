"""``gateway report``, ``gateway backup`` and ``gateway restore``.

Their failures are the ops room's own errors (gateway/ops/errors.py), which
gateway/cli/errors.py maps to exit codes. ``backup`` and ``restore`` print what
the archive holds, so an operator sees at once that a restore brought back what
was expected.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.cli.common import load
from gateway.cli.errors import CommandError
from routing.config import GatewayConfig

__all__ = ["add_parsers"]


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    pr = sub.add_parser(
        "report", parents=[common], help="a tenant's monthly report as PDF (figures and charts)"
    )
    pr.add_argument("--tenant", required=True, metavar="SLUG")
    pr.add_argument("--month", required=True, metavar="YYYY-MM")
    pr.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE",
        help="write here (default: the reports folder, deleted after [reports] keep_days)",
    )
    pr.set_defaults(func=_report)
    pb = sub.add_parser(
        "backup",
        parents=[common],
        help="an encrypted archive of the database (SQLite, or pg_dump on PostgreSQL) and blobs",
    )
    pb.add_argument(
        "--out", type=Path, default=None, metavar="DIR", help="folder (default: [backup] dir)"
    )
    pb.add_argument(
        "--new-key",
        type=Path,
        default=None,
        metavar="FILE",
        help="make a new backup key file (0600) instead, outside the data directory",
    )
    pb.add_argument("--json", action="store_true")
    pb.set_defaults(func=_backup)
    ps = sub.add_parser(
        "restore",
        parents=[common],
        help="unpack a backup into an empty data directory and database (every instance stopped)",
    )
    ps.add_argument("archive", type=Path)
    ps.add_argument("--json", action="store_true")
    ps.set_defaults(func=_restore)


def _report(args: argparse.Namespace) -> int:
    return asyncio.run(_report_of(load(args), args))


async def _report_of(config: GatewayConfig, args: argparse.Namespace) -> int:
    from gateway.clock import system_clock
    from gateway.ops.jobs import make_report, store_report
    from gateway.ops.report_figures import MONTH
    from gateway.ops.report_pdf import write_atomic
    from gateway.services import open_services

    tenant = config.tenant(args.tenant)
    if tenant is None:
        raise CommandError(f"unknown tenant {args.tenant!r}")
    if not MONTH.match(args.month):
        raise CommandError(f"--month {args.month!r}: expected YYYY-MM")
    now = system_clock()()
    async with open_services(config) as services:
        pdf = await make_report(config, services.engine, tenant, args.month, now)
        if args.out is not None:
            try:
                await asyncio.to_thread(write_atomic, args.out, pdf)
            except OSError as exc:
                raise CommandError(f"{args.out}: {exc.strerror or exc}", os.EX_CANTCREAT) from None
            path = args.out
        else:
            path = await store_report(
                config, services.writer, tenant, args.month, pdf, now, mail=False
            )
    print(f"report {tenant.slug} {args.month}: {path} ({len(pdf)} bytes)")
    return 0


def _backup(args: argparse.Namespace) -> int:
    from gateway.ops.backup import load_backup_key, make_backup, new_key_file

    config = load(args)
    if args.new_key is not None:
        kid = new_key_file(args.new_key, config)
        print(f"new backup key {kid} in {args.new_key} (mode 0600); keep a copy off this machine")
        return 0
    out = args.out or config.backup.dir
    if out is None:
        raise CommandError("no folder: give --out DIR or set [backup] dir")
    result = make_backup(config, out, load_backup_key(config), datetime.now(UTC))
    if args.json:
        print(
            json.dumps(
                {
                    "path": str(result.path),
                    "size": result.size,
                    "tickets": result.tickets,
                    "messages": result.messages,
                    "blobs": result.blobs,
                    "key_id": result.key_id,
                    "engine": result.engine,
                }
            )
        )
    else:
        print(
            f"backup {result.path} ({result.size} bytes): {result.tickets} tickets, "
            f"{result.messages} messages, {result.blobs} blobs; key {result.key_id}"
        )
    return 0


def _restore(args: argparse.Namespace) -> int:
    from gateway.ops.backup import load_backup_key
    from gateway.ops.restore import restore

    config = load(args)
    if not args.archive.is_file():
        raise CommandError(f"{args.archive}: no such file", os.EX_NOINPUT)
    result = restore(config, args.archive, load_backup_key(config))
    if args.json:
        print(
            json.dumps(
                {
                    "database": result.database,
                    "engine": result.engine,
                    "data_dir": str(result.data_dir),
                    "tickets": result.tickets,
                    "messages": result.messages,
                    "blobs": result.blobs,
                    "created": result.created,
                }
            )
        )
    else:
        print(
            f"restored backup of {result.created} into {result.database} and "
            f"{result.data_dir}: {result.tickets} tickets, {result.messages} messages, "
            f"{result.blobs} blobs verified"
        )
        print("next: gateway db upgrade (if this version is newer), then start the daemon")
    return 0
