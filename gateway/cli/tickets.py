"""``gateway tickets list|show|dump``: read the store without a running daemon."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.cli.common import load, open_read
from gateway.cli.errors import CommandError
from routing.config import GatewayConfig

__all__ = ["add_parsers"]


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    pt = sub.add_parser("tickets", parents=[common], help="list, show or dump tickets")
    tsub = pt.add_subparsers(dest="tickets_command", required=True, metavar="ACTION")
    pl = tsub.add_parser("list", parents=[common])
    pl.add_argument("--tenant", default=None, metavar="SLUG")
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=_run(_list))
    ps = tsub.add_parser("show", parents=[common])
    ps.add_argument("ref", help="a ticket's ref, or the id a 250 named (OK queued as ID)")
    ps.add_argument("--json", action="store_true")
    ps.add_argument(
        "--quoted",
        action="store_true",
        help="print each message whole, quoted history included (by default it is folded)",
    )
    ps.set_defaults(func=_run(_show))
    tsub.add_parser("dump", parents=[common]).set_defaults(func=_run(_dump))


_Action = Callable[[GatewayConfig, Any, argparse.Namespace], Awaitable[int]]


def _run(action: _Action) -> Callable[[argparse.Namespace], int]:
    """A command that runs ``action(config, conn, args)`` on a read-only connection."""

    def command(args: argparse.Namespace) -> int:
        config = load(args)

        async def run() -> int:
            engine = open_read(config)
            try:
                async with engine.connect() as conn:
                    return int(await action(config, conn, args))
            finally:
                await engine.dispose()

        return asyncio.run(run())

    return command


async def _list(config: GatewayConfig, conn: Any, args: argparse.Namespace) -> int:
    from store.queries import list_tickets

    if args.tenant and config.tenant(args.tenant) is None:
        raise CommandError(f"unknown tenant {args.tenant!r}")
    slugs = [args.tenant] if args.tenant else [t.slug for t in config.tenants]
    rows = [row for s in slugs for row in await list_tickets(conn, s)]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
    else:
        for r in rows:
            print(f"{r['ref']:<14} {r['status']:<8} {r['created_at'][:19]}  {r['subject']}")
    return 0


async def _show(config: GatewayConfig, conn: Any, args: argparse.Namespace) -> int:
    from store.queries import ticket_detail, ticket_queued_as

    if _QUEUED_AS.fullmatch(args.ref):  # what a sender can quote: their 250's id
        found = []
        for t in config.tenants:  # one ticket per tenant the mail went to
            ref = await ticket_queued_as(conn, t.slug, args.ref)
            if ref is not None:
                found.append((t.slug, ref))
        if not found:
            raise CommandError(f"no ticket holds the mail queued as {args.ref}", os.EX_NOINPUT)
    else:
        found = [(_tenant_of_ref(config, args.ref), args.ref.upper())]
    details = [await ticket_detail(conn, slug, ref) for slug, ref in found]
    if details[0] is None:
        raise CommandError(f"no ticket {args.ref}", os.EX_NOINPUT)
    if args.json:  # one ticket as an object; a mail to two tenants as a list of them
        shown = details[0] if len(details) == 1 else details
        print(json.dumps(shown, ensure_ascii=False, indent=2))
        return 0
    for detail in details:
        _print_ticket(detail, quoted=args.quoted)  # type: ignore[arg-type]
    return 0


_QUEUED_AS = re.compile(r"[0-9a-f]{16}")  # gateway/intake/replies.py queue_id()


async def _dump(config: GatewayConfig, conn: Any, args: argparse.Namespace) -> int:
    from store.queries import list_tickets, ticket_detail

    everything = []
    for t in config.tenants:
        for row in await list_tickets(conn, t.slug):
            everything.append(await ticket_detail(conn, t.slug, row["ref"]))
    print(json.dumps(everything, ensure_ascii=False, indent=2))
    return 0


def _tenant_of_ref(config: GatewayConfig, ref: str) -> str:
    prefix = ref.rsplit("-", 1)[0].upper()
    for t in config.tenants:
        if t.tag_prefix == prefix:
            return t.slug
    raise CommandError(f"no tenant uses the ticket prefix {prefix!r}")


def _print_ticket(d: dict[str, Any], *, quoted: bool = False) -> None:
    print(f"{d['ref']}  [{d['status']}]  {d['subject']}")
    print(f"tenant: {d['tenant']}   opened: {d['created_at']}")
    print("participants: " + ", ".join(f"{p['address']} ({p['role']})" for p in d["participants"]))
    for m in d["messages"]:
        auth = f"  auth={m['auth']}" if m["direction"] == "in" else ""
        print(f"\n--- {m['direction']} {m['kind']} from {m['from']}{auth}  {m['date'] or ''}")
        print(f"    Message-ID: {m['message_id']}")
        if m.get("queued_as"):
            print(f"    queued as:  {m['queued_as']}")
        for a in m["attachments"]:
            print(
                f"    attachment: {a['filename']} ({a['content_type']}, {a['size']} bytes, "
                f"sha256 {a['sha256']})"
            )
        print()
        print(_message_text(m.get("text") or "", quoted=quoted))
    for p in d.get("problems", []):
        what = p["detail"].get("reaction") or p["detail"].get("kind") or "-"
        why = p["detail"].get("error") or p["detail"].get("reason") or ""
        print(f"\n!!! {p['action']} ({what}) {p['created_at']}: {why}")


def _message_text(text: str, *, quoted: bool) -> str:
    """What the sender wrote this time, and a line counting the quoted lines folded away."""
    if quoted:
        return text.rstrip()
    from parsers.quotes import split_reply

    reply, rest = split_reply(text)
    folded = sum(1 for ln in rest.split("\n") if ln.strip())
    if not folded:
        return reply
    noun = "line" if folded == 1 else "lines"
    return f"{reply}\n\n    [{folded} quoted {noun} folded; --quoted shows them]"
