"""The ``gateway`` command: run the daemon, feed it mail, look at tickets.

Every error is one line on stderr with a non-zero exit, never a traceback:
an admin or an MTA reads these, not a developer.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from routing.config import GatewayConfig, default_config_path, load_config
from routing.errors import ConfigError

__all__ = ["main"]

EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_TEMPFAIL = 75
EX_CONFIG = 78


class CliError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        # SUPPRESS: a nested parser (tickets list) must not reset a --config given above it
        default=argparse.SUPPRESS,
        help="config file (default: $GATEWAY_CONFIG, then ./gateway.toml)",
    )
    p = argparse.ArgumentParser(prog="gateway", description="Email-first helpdesk gateway")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("run", parents=[common], help="run the daemon")

    pp = sub.add_parser("parse", parents=[common], help="show what the parser sees in a file")
    pp.add_argument("file", type=Path)
    pp.add_argument("--json", action="store_true", help="print one JSON object (the default)")

    pi = sub.add_parser("ingest", parents=[common], help="deliver one message from stdin")
    pi.add_argument("--tenant-address", required=True, action="append", metavar="ADDR")
    pi.add_argument("--sender", default=None, help="envelope sender (default: Return-Path)")

    pim = sub.add_parser(
        "import", parents=[common], help="bring in a mailbox's history (mbox, Maildir, .eml)"
    )
    pim.add_argument("path", type=Path, help="an mbox file, a Maildir, a folder of .eml, an .eml")
    pim.add_argument("--tenant", required=True, metavar="SLUG")
    pim.add_argument(
        "--to", default=None, metavar="ADDR", help="the tenant address (default: its first)"
    )
    pim.add_argument("--json", action="store_true", help="print the summary as one JSON object")

    pt = sub.add_parser("tickets", parents=[common], help="list, show or dump tickets")
    tsub = pt.add_subparsers(dest="tickets_command", required=True, metavar="ACTION")
    pl = tsub.add_parser("list", parents=[common])
    pl.add_argument("--tenant", default=None, metavar="SLUG")
    pl.add_argument("--json", action="store_true")
    ps = tsub.add_parser("show", parents=[common])
    ps.add_argument("ref")
    ps.add_argument("--json", action="store_true")
    tsub.add_parser("dump", parents=[common])

    pc = sub.add_parser("config", parents=[common], help="check the config file")
    csub = pc.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    pcc = csub.add_parser("check", parents=[common])
    pcc.add_argument("path", nargs="?", type=Path)

    pr = sub.add_parser("route", parents=[common], help="explain how a message would be routed")
    rsub = pr.add_subparsers(dest="route_command", required=True, metavar="ACTION")
    pre = rsub.add_parser(
        "explain",
        parents=[common],
        help="tenant, queue, rules, threading and replies; stores nothing",
    )
    pre.add_argument("file", type=Path)
    pre.add_argument("--to", action="append", metavar="ADDR", help="envelope recipient")
    pre.add_argument("--json", action="store_true")

    pst = sub.add_parser(
        "status", parents=[common], help="is the scanner reachable, is the store ready"
    )
    pst.add_argument("--json", action="store_true")

    pd = sub.add_parser("db", parents=[common], help="database maintenance")
    dsub = pd.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    dsub.add_parser("upgrade", parents=[common])
    from gateway.cli.gdpr import add_parser as privacy_parser
    from gateway.cli.ops import add_parsers as ops_parsers
    from gateway.cli.secrets import add_parser as secrets_parser

    secrets_parser(sub, common)
    privacy_parser(sub, common)
    ops_parsers(sub, common)
    return p


def _config(args: argparse.Namespace) -> GatewayConfig:
    return load_config(args.config or default_config_path())


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.config = getattr(args, "config", None)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"gateway: config error: {problem}", file=sys.stderr)
        return EX_CONFIG
    except CliError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # last resort: one line, never a traceback
        print(f"gateway: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EX_SOFTWARE


def _dispatch(args: argparse.Namespace) -> int:
    from gateway.logs import setup_logging

    if args.command == "parse":
        return _parse(args.file)
    if args.command == "config":
        return _config_check(args.path or args.config or default_config_path())
    if args.command == "secrets":  # reads the file itself: a bad secret must not stop it
        from gateway.cli import secrets as secrets_cli

        return secrets_cli.run(args, args.config or default_config_path())
    config = _config(args)
    # One-shot commands speak through their exit code and one stderr line (a
    # Postfix pipe returns stderr in its bounce); only the daemon logs events.
    setup_logging(config.log_format, logging.INFO if args.command == "run" else logging.ERROR)
    if args.command == "run":
        from gateway.daemon import run_daemon
        from gateway.ops.instance import InstanceInUse

        try:
            return asyncio.run(run_daemon(config.path))
        except InstanceInUse as exc:
            raise CliError(str(exc), EX_CONFIG) from None
    if args.command == "ingest":
        return asyncio.run(_ingest(config, args.tenant_address, args.sender))
    if args.command == "import":
        return asyncio.run(_import(config, args))
    if args.command == "tickets":
        return asyncio.run(_tickets(config, args))
    if args.command == "db":
        return asyncio.run(_db_upgrade(config))
    if args.command == "status":
        return asyncio.run(_status(config, args.json))
    if args.command == "route":
        return _explain(config, args)
    if args.command in ("gdpr", "purge"):
        from gateway.cli import gdpr as privacy_cli

        return privacy_cli.run(args, config)
    if args.command in ("report", "backup", "restore"):
        from gateway.cli import ops as ops_cli

        try:
            return ops_cli.run(args, config)
        except ops_cli.OpsCliError as exc:
            raise CliError(str(exc), exc.code) from None
    raise CliError(f"unknown command {args.command}", EX_USAGE)


def _config_check(path: Path) -> int:
    """Exit 0 and one summary line, or every problem (file:line: key: message) and exit 1."""
    try:
        cfg = load_config(path)
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
    return 0


def _explain(config: GatewayConfig, args: argparse.Namespace) -> int:
    from gateway.intake.explain import ExplainError, as_json, explain, render
    from parsers.errors import ParseError

    try:
        report = explain(config, args.file, args.to)
    except ExplainError as exc:
        raise CliError(str(exc), EX_NOINPUT if "No such file" in str(exc) else EX_DATAERR) from None
    except ParseError as exc:
        raise CliError(f"{args.file}: unreadable message: {exc}", EX_DATAERR) from None
    print(as_json(report) if args.json else render(report))
    return 0


def _parse(path: Path) -> int:
    from parsers import parse
    from parsers.errors import ParseError

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror or exc}", EX_NOINPUT) from None
    try:
        parsed = parse(data)
    except ParseError as exc:
        reason = str(exc) or type(exc).__name__
        raise CliError(f"{path}: unreadable message: {reason}", EX_DATAERR) from None
    print(json.dumps(parsed_to_json(parsed), ensure_ascii=False, indent=2))
    return 0


def parsed_to_json(parsed: Any) -> dict[str, Any]:
    return {
        "message_id": parsed.message_id,
        "subject": parsed.subject,
        "from": parsed.from_addr,
        "from_name": parsed.from_name,
        "to": list(parsed.to),
        "cc": list(parsed.cc),
        "date": parsed.date,
        "kind": parsed.kind,
        "text": parsed.text,
        "reply_text": parsed.reply_text,
        "html": parsed.html,
        "attachments": [
            {
                "filename": a.filename,
                "content_type": a.content_type,
                "size": a.size,
                "sha256": a.sha256,
                "inline": a.inline,
                "content_id": a.content_id,
            }
            for a in parsed.attachments
        ],
        "thread_hints": dataclasses.asdict(parsed.thread_hints)
        | {"references": list(parsed.thread_hints.references)},
        "defects": list(parsed.defects),
    }


async def _ingest(config: GatewayConfig, addresses: list[str], sender: str | None) -> int:
    """The MTA pipe (like rt-mailgate): exit 0 committed, 75 retry, 65/67/69 refused."""
    from gateway.intake.replies import exit_code
    from gateway.ops.sources import envelope_sender
    from gateway.services import open_services
    from parsers.types import Envelope, RawMessage
    from routing.verdicts import Accepted

    data = sys.stdin.buffer.read()
    if sender is None:
        sender = envelope_sender(data)
    raw = RawMessage(Envelope(mail_from=sender, rcpt_tos=tuple(addresses)), data, "ingest")
    try:
        async with open_services(config) as services:
            outcome = await services.pipeline.process(raw)
    except OSError as exc:
        raise CliError(f"storage unavailable: {exc.strerror or exc}", EX_TEMPFAIL) from None
    if isinstance(outcome, Accepted):
        refs = [s.ticket_ref or "-" for s in outcome.stored]
        dup = all(s.duplicate for s in outcome.stored)
        print(("duplicate " if dup else "stored ") + " ".join(refs))
    else:
        print(f"gateway: {outcome.code} {outcome.enhanced} {outcome.text}", file=sys.stderr)
    return exit_code(outcome)


async def _import(config: GatewayConfig, args: argparse.Namespace) -> int:
    """Exit 0 when every message was imported, duplicate or refused; 75 when some were
    deferred, so a script reruns it (dedupe makes the rerun harmless)."""
    from gateway.ops.importer import BarProgress, Progress, run_import
    from gateway.ops.sources import SourceError, open_source

    tenant = config.tenant(args.tenant)
    if tenant is None:
        raise CliError(f"unknown tenant {args.tenant!r}", EX_USAGE)
    rcpt = (args.to or tenant.addresses[0]).lower()
    if rcpt not in tenant.addresses:
        raise CliError(f"{args.to} is not an address of tenant {tenant.slug!r}", EX_USAGE)
    try:
        source = open_source(args.path)
    except SourceError as exc:
        raise CliError(str(exc), exc.code) from None
    progress = BarProgress() if sys.stderr.isatty() else Progress()
    try:
        summary = await run_import(config, source, tenant.slug, rcpt, progress)
    except SourceError as exc:
        raise CliError(str(exc), exc.code) from None
    except OSError as exc:
        raise CliError(f"storage unavailable: {exc.strerror or exc}", EX_TEMPFAIL) from None
    finally:
        progress.close()
        source.close()
    if args.json:
        print(json.dumps(summary.as_json(), ensure_ascii=False))
    else:
        print("\n".join(summary.lines()))
    return EX_TEMPFAIL if summary.deferred else 0


async def _status(config: GatewayConfig, as_json: bool) -> int:
    """Exit 0 when mail with attachments can be accepted now, 69 when it would be deferred."""
    from datetime import UTC, datetime

    from sqlalchemy import text

    from gateway.services import make_scanner

    scanner = make_scanner(config)
    reachable = await scanner.ping()
    checked = datetime.fromtimestamp(scanner.last_checked or 0, UTC).isoformat(timespec="seconds")
    from gateway.ops.status_view import collect_extra, render_extra

    schema: str | None = None
    store_error: str | None = None
    extra: dict[str, Any] = {}
    try:
        engine = _open_read(config)
        try:
            async with engine.connect() as conn:
                schema = (
                    await conn.execute(text("SELECT version_num FROM alembic_version"))
                ).scalar()
            extra = await collect_extra(config, engine, schema)
        finally:
            await engine.dispose()
    except CliError as exc:
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
    return 0 if reachable and schema else EX_UNAVAILABLE


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


def _open_read(config: GatewayConfig):  # type: ignore[no-untyped-def]
    from store.db import create_engine

    db = config.database_url
    if db.startswith("sqlite") and not os.path.exists(db.split("///", 1)[-1]):
        raise CliError(f"no database yet at {db.split('///', 1)[-1]}", EX_NOINPUT)
    return create_engine(db)


async def _tickets(config: GatewayConfig, args: argparse.Namespace) -> int:
    from store.queries import list_tickets, ticket_detail

    engine = _open_read(config)
    try:
        async with engine.connect() as conn:
            if args.tickets_command == "list":
                slugs = [args.tenant] if args.tenant else [t.slug for t in config.tenants]
                if args.tenant and config.tenant(args.tenant) is None:
                    raise CliError(f"unknown tenant {args.tenant!r}", EX_USAGE)
                rows = [row for s in slugs for row in await list_tickets(conn, s)]
                if args.json:
                    print(json.dumps(rows, ensure_ascii=False, indent=2))
                else:
                    for r in rows:
                        print(
                            f"{r['ref']:<14} {r['status']:<8} {r['created_at'][:19]}  "
                            f"{r['subject']}"
                        )
                return 0
            if args.tickets_command == "show":
                tenant = _tenant_of_ref(config, args.ref)
                detail = await ticket_detail(conn, tenant, args.ref.upper())
                if detail is None:
                    raise CliError(f"no ticket {args.ref}", EX_NOINPUT)
                if args.json:
                    print(json.dumps(detail, ensure_ascii=False, indent=2))
                else:
                    _print_ticket(detail)
                return 0
            everything = []
            for t in config.tenants:
                for row in await list_tickets(conn, t.slug):
                    everything.append(await ticket_detail(conn, t.slug, row["ref"]))
            print(json.dumps(everything, ensure_ascii=False, indent=2))
            return 0
    finally:
        await engine.dispose()


def _tenant_of_ref(config: GatewayConfig, ref: str) -> str:
    prefix = ref.rsplit("-", 1)[0].upper()
    for t in config.tenants:
        if t.tag_prefix == prefix:
            return t.slug
    raise CliError(f"no tenant uses the ticket prefix {prefix!r}", EX_USAGE)


def _print_ticket(d: dict[str, Any]) -> None:
    print(f"{d['ref']}  [{d['status']}]  {d['subject']}")
    print(f"tenant: {d['tenant']}   opened: {d['created_at']}")
    print("participants: " + ", ".join(f"{p['address']} ({p['role']})" for p in d["participants"]))
    for m in d["messages"]:
        print(f"\n--- {m['direction']} {m['kind']} from {m['from']}  {m['date'] or ''}")
        print(f"    Message-ID: {m['message_id']}")
        for a in m["attachments"]:
            print(
                f"    attachment: {a['filename']} ({a['content_type']}, {a['size']} bytes, "
                f"sha256 {a['sha256']})"
            )
        print()
        print(m.get("text", "").rstrip())


async def _db_upgrade(config: GatewayConfig) -> int:
    from gateway.services import open_services

    async with open_services(config):
        pass
    print("ok: schema is current")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
