"""``gateway parse``, ``ingest``, ``import`` and ``route explain``: mail in, from files or a pipe.

``ingest`` is what an MTA's pipe runs once per message: it imports the
pipeline inside the function, never the daemon, aiohttp or alembic.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

from gateway.cli.common import load
from gateway.cli.errors import CommandError

__all__ = ["add_parsers", "parsed_to_json"]


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    pp = sub.add_parser("parse", parents=[common], help="show what the parser sees in a file")
    pp.add_argument("file", type=Path)
    pp.add_argument("--json", action="store_true", help="print one JSON object (the default)")
    pp.set_defaults(func=_parse)

    pi = sub.add_parser("ingest", parents=[common], help="deliver one message from stdin")
    pi.add_argument("--tenant-address", required=True, action="append", metavar="ADDR")
    pi.add_argument("--sender", default=None, help="envelope sender (default: Return-Path)")
    pi.set_defaults(func=_ingest)

    pim = sub.add_parser(
        "import", parents=[common], help="bring in a mailbox's history (mbox, Maildir, .eml)"
    )
    pim.add_argument("path", type=Path, help="an mbox file, a Maildir, a folder of .eml, an .eml")
    pim.add_argument("--tenant", required=True, metavar="SLUG")
    pim.add_argument(
        "--to", default=None, metavar="ADDR", help="the tenant address (default: its first)"
    )
    pim.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    pim.add_argument(
        "--open-since",
        default=None,
        metavar="DURATION|DATE",
        help="tickets whose last message is older are closed (default: 30d)",
    )
    pim.set_defaults(func=_import)

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
    pre.set_defaults(func=_explain)


def _parse(args: argparse.Namespace) -> int:
    from parsers import parse
    from parsers.errors import ParseError

    path: Path = args.file
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CommandError(f"{path}: {exc.strerror or exc}", os.EX_NOINPUT) from None
    try:
        parsed = parse(data)
    except ParseError as exc:
        reason = str(exc) or type(exc).__name__
        raise CommandError(f"{path}: unreadable message: {reason}", os.EX_DATAERR) from None
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
        "attachments": [a.as_row() for a in parsed.attachments],
        "thread_hints": dataclasses.asdict(parsed.thread_hints)
        | {"references": list(parsed.thread_hints.references)},
        "defects": list(parsed.defects),
    }


def _explain(args: argparse.Namespace) -> int:
    from gateway.intake.explain import as_json, explain, render
    from parsers.errors import ParseError

    config = load(args)
    try:
        args.file.stat()  # a missing file is no input; one explain cannot read is bad data
    except OSError as exc:
        raise CommandError(f"{args.file}: {exc.strerror or exc}", os.EX_NOINPUT) from None
    try:
        report = explain(config, args.file, args.to)
    except ParseError as exc:
        raise CommandError(f"{args.file}: unreadable message: {exc}", os.EX_DATAERR) from None
    print(as_json(report) if args.json else render(report))
    return 0


def _ingest(args: argparse.Namespace) -> int:
    """The MTA pipe (like rt-mailgate): exit 0 committed, 75 retry, 65/67/69 refused."""
    from gateway.intake.replies import exit_code
    from gateway.ops.sources import envelope_sender
    from gateway.services import open_services
    from parsers.types import Envelope, RawMessage
    from routing.verdicts import Accepted

    config = load(args)
    data = sys.stdin.buffer.read()
    sender = args.sender if args.sender is not None else envelope_sender(data)
    raw = RawMessage(
        Envelope(mail_from=sender, rcpt_tos=tuple(args.tenant_address)), data, "ingest"
    )

    async def deliver() -> Any:
        async with open_services(config) as services:
            return await services.pipeline.process(raw)

    try:
        outcome = asyncio.run(deliver())
    except OSError as exc:
        raise CommandError(f"storage unavailable: {exc.strerror or exc}", os.EX_TEMPFAIL) from None
    if isinstance(outcome, Accepted):
        refs = [s.ticket_ref or "-" for s in outcome.stored]
        dup = all(s.duplicate for s in outcome.stored)
        print(("duplicate " if dup else "stored ") + " ".join(refs))
    else:
        print(f"gateway: {outcome.code} {outcome.enhanced} {outcome.text}", file=sys.stderr)
    return exit_code(outcome)


def _import(args: argparse.Namespace) -> int:
    """Exit 0 when every message was imported, duplicate or refused; 75 when some were
    deferred, so a script reruns it (dedupe makes the rerun harmless)."""
    from gateway.clock import system_clock
    from gateway.ops.importer import OPEN_SINCE, BarProgress, Progress, open_since, run_import
    from gateway.ops.sources import open_source

    config = load(args)
    tenant = config.tenant(args.tenant)
    if tenant is None:
        raise CommandError(f"unknown tenant {args.tenant!r}")
    rcpt = (args.to or tenant.addresses[0]).lower()
    if rcpt not in tenant.addresses:
        raise CommandError(f"{args.to} is not an address of tenant {tenant.slug!r}")
    try:
        since = open_since(args.open_since or OPEN_SINCE, system_clock()())
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    source = open_source(args.path)
    progress = BarProgress() if sys.stderr.isatty() else Progress()
    try:
        summary = asyncio.run(run_import(config, source, tenant.slug, rcpt, progress, since))
    except OSError as exc:
        raise CommandError(f"storage unavailable: {exc.strerror or exc}", os.EX_TEMPFAIL) from None
    finally:
        progress.close()
        source.close()
    if args.json:
        print(json.dumps(summary.as_json(), ensure_ascii=False))
    else:
        print("\n".join(summary.lines()))
    return os.EX_TEMPFAIL if summary.deferred else 0
