"""``gateway tickets list|show|dump`` and ``gateway audit``: read the store without a daemon.

What an agent's desk shows, for whoever has a shell: each ticket's priority,
assignee, tags and SLA, filters to find the breached ones, full-text search
(store/search.py), and the audit trail. ``--json`` prints what scripts read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.cli.common import load, open_read
from gateway.cli.errors import CommandError
from routing.config import GatewayConfig, Tenant
from routing.sla import format_duration, parse_duration

__all__ = ["add_parsers"]

# Search hits a filtered list looks through; more than an admin reads in a terminal.
SEARCH_LIMIT = 1000


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    pt = sub.add_parser("tickets", parents=[common], help="list, show or dump tickets")
    tsub = pt.add_subparsers(dest="tickets_command", required=True, metavar="ACTION")
    pl = tsub.add_parser(
        "list", parents=[common], help="tickets with priority, assignee, tags and SLA due"
    )
    pl.add_argument("--tenant", default=None, metavar="SLUG")
    pl.add_argument("--status", choices=("open", "closed"), default=None)
    pl.add_argument("--queue", default=None, metavar="NAME")
    pl.add_argument(
        "--assignee", default=None, metavar="ADDRESS", help="an agent, or 'none' for unassigned"
    )
    pl.add_argument("--tag", default=None, metavar="TAG")
    pl.add_argument("--breached", action="store_true", help="open tickets past an SLA target")
    pl.add_argument("--at-risk", action="store_true", help="open tickets close to an SLA target")
    pl.add_argument(
        "--search", default=None, metavar="TEXT", help="words in subject, text, sender or ref"
    )
    pl.add_argument(
        "--since",
        default=None,
        metavar="WHEN",
        help="activity since a date (2027-01-20, 2027-01-20T09:00) or a while ago (7d, 12h)",
    )
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=_run(_list))
    ps = tsub.add_parser("show", parents=[common], help="one ticket: messages, clocks, history")
    ps.add_argument("ref", help="a ticket's ref, or the id a 250 named (OK queued as ID)")
    ps.add_argument("--json", action="store_true")
    ps.add_argument(
        "--quoted",
        action="store_true",
        help="print each message whole, quoted history included (by default it is folded)",
    )
    ps.set_defaults(func=_run(_show))
    tsub.add_parser(
        "dump", parents=[common], help="every ticket in full, as one JSON array"
    ).set_defaults(func=_run(_dump))
    pa = sub.add_parser("audit", parents=[common], help="print the audit trail")
    who = pa.add_mutually_exclusive_group(required=True)
    who.add_argument("--ticket", default=None, metavar="REF")
    who.add_argument("--tenant", default=None, metavar="SLUG")
    pa.add_argument("--since", default=None, metavar="WHEN", help="as for tickets list")
    pa.add_argument("--json", action="store_true")
    pa.set_defaults(func=_run(_audit))


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


def _now() -> datetime:
    from gateway.clock import system_clock

    return system_clock()().astimezone(UTC)


def parse_since(value: str, now: datetime) -> datetime:
    """``--since``: an ISO date or time (UTC unless it says), or a while ago (7d, 12h, 1h30m)."""
    seconds = parse_duration(value)
    if seconds is not None:
        return now - timedelta(seconds=seconds)
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise CommandError(
            f"--since {value!r}: expected a date (2027-01-20), a time (2027-01-20T09:00) "
            "or a while ago (7d, 12h, 1h30m)"
        ) from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)


def _tenants(config: GatewayConfig, slug: str | None) -> list[Tenant]:
    if slug is None:
        return list(config.tenants)
    tenant = config.tenant(slug)
    if tenant is None:
        raise CommandError(f"unknown tenant {slug!r}")
    return [tenant]


async def _list(config: GatewayConfig, conn: Any, args: argparse.Namespace) -> int:
    from outbound.sla_watch import ticket_sla
    from store import clocks
    from store.queries import list_tickets
    from store.search import search_tickets

    now = _now()
    since = parse_since(args.since, now) if args.since else None
    assignee = args.assignee.strip().lower() if args.assignee is not None else None
    if assignee == "none":
        assignee = ""  # unassigned
    rows: list[dict[str, Any]] = []
    for tenant in _tenants(config, args.tenant):
        rank: dict[int, int] | None = None
        if args.search is not None:
            hits = await search_tickets(conn, tenant.slug, args.search, limit=SEARCH_LIMIT)
            rank = {h.ticket_id: i for i, h in enumerate(hits)}
        found = await list_tickets(
            conn,
            tenant.slug,
            status=args.status,
            queue=args.queue,
            assignee=assignee,
            since=since,
            ids=set(rank) if rank is not None else None,
        )
        if rank is not None:  # best match first
            found.sort(key=lambda r, rank=rank: rank[int(r["id"])])
        open_clocks = {
            int(t["id"]): t
            for t in await conn.run_sync(lambda c, s=tenant.slug: clocks.open_tickets(c, s))
        }
        for row in found:
            t = open_clocks.get(int(row["id"]))
            row["sla"] = ticket_sla(tenant, t, now) if t is not None else None
            if _keep(row, args):
                rows.append(row)
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    if rows:
        print(
            f"{'REF':<12} {'STATUS':<6} {'PRIORITY':<8} {'QUEUE':<10} {'ASSIGNEE':<20} "
            f"{'TAGS':<16} {'SLA DUE':<34} SUBJECT"
        )
    for r in rows:
        print(
            f"{r['ref']:<12} {r['status']:<6} {r['priority']:<8} {r['queue']:<10} "
            f"{r['assignee'] or '-':<20} {','.join(r['tags']) or '-':<16} "
            f"{sla_due(r['sla'], now):<34} {r['subject']}"
        )
    return 0


def _keep(row: dict[str, Any], args: argparse.Namespace) -> bool:
    """The filters the store cannot apply: a tag in the JSON list, the SLA state now."""
    if args.tag is not None and args.tag not in row["tags"]:
        return False
    if not (args.breached or args.at_risk):
        return True
    state = (row["sla"] or {}).get("state")
    return (args.breached and state == "breached") or (args.at_risk and state == "warning")


def sla_due(sla: dict[str, Any] | None, now: datetime) -> str:
    """The SLA column: ``in 2h 05m (2027-01-27 11:00Z)``, ``BREACHED``, ``waiting``, ``-``."""
    if not sla:
        return "-"
    state = sla["state"]
    if state == "breached":
        return "BREACHED"
    if state == "paused":
        return "waiting on client"
    if sla.get("due_at") and state in ("running", "warning"):
        due = datetime.fromisoformat(sla["due_at"]).astimezone(UTC)
        left = format_duration(max(0.0, (due - now).total_seconds()))
        risk = "AT RISK " if state == "warning" else ""
        return f"{risk}in {left} ({due:%Y-%m-%d %H:%M}Z)"
    return state


async def _audit(config: GatewayConfig, conn: Any, args: argparse.Namespace) -> int:
    from store.queries import audit_trail

    since = parse_since(args.since, _now()) if args.since else None
    if args.ticket is not None:
        slug = _tenant_of_ref(config, args.ticket)
        ticket_id = await _ticket_id(conn, slug, args.ticket.upper())
        events = await audit_trail(conn, slug, ticket_id=ticket_id, since=since)
    else:
        slug = _tenants(config, args.tenant)[0].slug
        events = await audit_trail(conn, slug, since=since)
    if args.json:
        print(json.dumps(events, ensure_ascii=False, indent=2))
        return 0
    for e in events:
        detail = json.dumps(e["detail"], ensure_ascii=False, sort_keys=True)
        print(f"{e['at'][:19]}  {e['ticket'] or '-':<12} {e['action']:<18} {e['actor']}  {detail}")
    return 0


async def _ticket_id(conn: Any, tenant: str, ref: str) -> int:
    from sqlalchemy import select

    from store.models import tickets

    found = (
        await conn.execute(
            select(tickets.c.id).where(tickets.c.tenant == tenant, tickets.c.ref == ref)
        )
    ).scalar()
    if found is None:
        raise CommandError(f"no ticket {ref}", os.EX_NOINPUT)
    return int(found)


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
    now = _now()
    for (slug, _ref), detail in zip(found, details, strict=True):
        if detail is not None:
            await _add_sla(config, conn, slug, detail, now)
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

    now = _now()
    everything = []
    for t in config.tenants:
        for row in await list_tickets(conn, t.slug):
            detail = await ticket_detail(conn, t.slug, row["ref"])
            if detail is not None:
                await _add_sla(config, conn, t.slug, detail, now)
                everything.append(detail)
    print(json.dumps(everything, ensure_ascii=False, indent=2))
    return 0


async def _add_sla(
    config: GatewayConfig, conn: Any, slug: str, detail: dict[str, Any], now: datetime
) -> None:
    """``detail["sla"]``: where the ticket's clocks stand now (None: the tenant has no SLA,
    or the ticket was opened before it began)."""
    from outbound.sla_watch import ticket_sla
    from store import clocks

    tenant = config.tenant(slug)
    ticket_id = await _ticket_id(conn, slug, detail["ref"])
    row = await conn.run_sync(lambda c: clocks.ticket_clocks(c, slug, ticket_id))
    detail["sla"] = ticket_sla(tenant, row, now) if tenant is not None and row else None


def _tenant_of_ref(config: GatewayConfig, ref: str) -> str:
    prefix = ref.rsplit("-", 1)[0].upper()
    for t in config.tenants:
        if t.tag_prefix == prefix:
            return t.slug
    raise CommandError(f"no tenant uses the ticket prefix {prefix!r}")


def _print_ticket(d: dict[str, Any], *, quoted: bool = False) -> None:
    print(f"{d['ref']}  [{d['status']}]  {d['subject']}")
    print(f"tenant: {d['tenant']}   opened: {d['created_at']}")
    print(
        f"priority: {d['priority']}   queue: {d['queue']}   assignee: {d['assignee'] or '-'}"
        f"   category: {d['category'] or '-'}   tags: {', '.join(d['tags']) or '-'}"
    )
    history = [f"{h['status']} {(h['at'] or '')[:16]} by {h['by']}" for h in d["status_history"]]
    print("status history: " + ("; ".join(history) or "-"))
    for c in (d.get("sla") or {}).get("clocks", []):
        label = c["clock"].replace("_", " ")
        due = f", due {c['due_at'][:16]}" if c["due_at"] else ""
        print(
            f"sla {label}: {c['state']} ({format_duration(c['elapsed_seconds'])} of "
            f"{format_duration(c['target_seconds'])}{due})"
        )
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
        print(_message_text(m.get("text") or "", m.get("subject") or "", quoted=quoted))
    for p in d.get("problems", []):
        what = p["detail"].get("reaction") or p["detail"].get("kind") or "-"
        why = p["detail"].get("error") or p["detail"].get("reason") or ""
        print(f"\n!!! {p['action']} ({what}) {p['created_at']}: {why}")


def _message_text(text: str, subject: str, *, quoted: bool) -> str:
    """What the sender wrote this time, and a line counting the quoted lines folded away."""
    if quoted:
        return text.rstrip()
    from parsers.quotes import split_reply

    reply, rest = split_reply(text, subject)
    folded = sum(1 for ln in rest.split("\n") if ln.strip())
    if not folded:
        return reply
    noun = "line" if folded == 1 else "lines"
    return f"{reply}\n\n    [{folded} quoted {noun} folded; --quoted shows them]"
