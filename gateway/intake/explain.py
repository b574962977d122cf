"""``gateway route explain FILE``: what the gateway would do with a message, storing nothing.

The message runs through the pipeline's own commit code against the live
database inside a transaction that is always rolled back, so the answer
(tenant, queue, rules, threading, what would be sent) is the pipeline's, not
a second description of it. Scanning is only reported, not done: explain is
for rules and threading, and must work without clamd.
"""

from __future__ import annotations

import asyncio
import json
import re
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine as create_sync
from sqlalchemy import inspect
from sqlalchemy.engine import Engine

from gateway.intake.auth import Authenticator, trusted_id
from gateway.intake.commit import explain_commit
from gateway.intake.decide import Plan
from gateway.intake.pipeline import needs_scan
from parsers import parse
from parsers.types import Envelope, ParsedMessage, RawMessage
from routing.config import GatewayConfig
from routing.tenants import AddressIndex
from store import repos
from store.db import create_writer_engine
from store.models import metadata

__all__ = ["explain"]


class ExplainError(Exception):
    """A one-line answer for the CLI (bad file, no tenant address)."""


def explain(config: GatewayConfig, path: Path, to: list[str] | None) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ExplainError(f"{path}: {exc.strerror or exc}") from None
    # A saved .eml has the local line ends; over SMTP it would arrive with CRLF, and
    # the duplicate check compares the bytes as they arrive.
    data = re.sub(rb"(?<!\r)\n", b"\r\n", data)
    parsed = parse(data)
    rcpts = tuple(to) if to else _recipients(config, parsed)
    if not rcpts:
        raise ExplainError(
            f"{path}: no tenant address in To, Cc or Delivered-To; say which with --to ADDR"
        )
    index = AddressIndex(config)
    unknown = [r for r in rcpts if index.lookup(r) is None]
    if to and unknown:
        raise ExplainError(f"not a tenant address: {', '.join(unknown)}")
    sender = parsed.from_addr
    raw = RawMessage(Envelope(mail_from=sender, rcpt_tos=rcpts), data, "explain")
    # As the pipeline does before its commit: a trusted front MTA's header, else DKIM and
    # DMARC over DNS (a saved file has no client address, so SPF is not checked).
    tenants_named = [r.tenant for r in map(index.lookup, rcpts) if r is not None]
    trusted = trusted_id(config, raw, tenants_named)
    verdict = asyncio.run(Authenticator(config).verdict(raw, sender, trusted))
    engine, live = _engine(config)
    try:
        with engine.connect() as conn:
            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
            trans = conn.begin()
            try:
                tenants = explain_commit(conn, config, raw, parsed, repos.now(), verdict)
                for item in tenants:
                    item["ticket"] = _ticket(conn, item)
            finally:
                trans.rollback()
    finally:
        engine.dispose()
    return {
        "file": str(path),
        "store": "live" if live else "empty (no database yet)",
        "message": {
            "from": sender,
            "subject": parsed.subject,
            "message_id": parsed.message_id,
            "kind": parsed.kind,
            "attachments": len(parsed.attachments),
            "scanned_before_commit": needs_scan(parsed),
            "auth": verdict.summary,
            "auth_results": verdict.header,
        },
        "recipients": list(rcpts),
        "tenants": [_plain(config, item) for item in tenants],
    }


def _recipients(config: GatewayConfig, parsed: ParsedMessage) -> tuple[str, ...]:
    index = AddressIndex(config)
    out = [a for a in (*parsed.to, *parsed.cc, *_delivered_to(parsed)) if index.lookup(a)]
    return tuple(dict.fromkeys(out))


def _delivered_to(parsed: ParsedMessage) -> list[str]:
    return [v.strip("<> ") for n, v in parsed.headers if n == "delivered-to"]


def _engine(config: GatewayConfig) -> tuple[Engine, bool]:
    url = config.database_url
    if not url.startswith("sqlite") or Path(url.split("///", 1)[-1]).exists():
        live = create_writer_engine(url)
        # A PostgreSQL database the gateway has not run on yet has no tables.
        if inspect(live).has_table("messages"):
            return live, True
        live.dispose()
    engine = create_sync("sqlite://")
    metadata.create_all(engine)
    return engine, False


def _ticket(conn: Any, item: dict[str, Any]) -> dict[str, Any] | None:
    match = item["plan"].match
    ref = item["result"].get("ticket")
    if ref is None:
        return None
    ticket_id = repos.ticket_by_ref(conn, item["tenant"], ref)
    row = repos.ticket_row(conn, item["tenant"], ticket_id) if ticket_id is not None else None
    if row is None:
        return None
    return {
        k: row[k] for k in ("ref", "status", "queue", "priority", "category", "tags", "assignee")
    } | {"existing": match is not None and match.ticket_id is not None}


def _plain(config: GatewayConfig, item: dict[str, Any]) -> dict[str, Any]:
    plan: Plan = item.pop("plan")
    match, rules = plan.match, plan.rules
    item["rules"] = rules.as_dict() if rules is not None else None
    item["speaker"] = plan.role
    if plan.agent is not None:
        item["speaker"] += f" ({plan.agent.address})"
    item["threading"] = (
        {"by": match.by, "found": match.ticket_id is not None} if match is not None else None
    )
    item["would_send"] = [_mail(row) for row in item.pop("outbox", [])]
    return item


def _mail(row: dict[str, Any]) -> dict[str, Any]:
    head = BytesHeaderParser().parsebytes(bytes(row["body"]))
    return {
        "kind": row["kind"],
        "to": list(row["rcpt_tos"]),
        "from": str(head.get("From", "")),
        "subject": str(head.get("Subject", "")),
    }


def render(report: dict[str, Any]) -> str:
    """The human reading of the report, one fact per line."""
    m = report["message"]
    lines = [
        f"message   {report['file']}",
        f"  from    {m['from'] or '(none)'}   kind {m['kind']}   id {m['message_id'] or '(none)'}",
        f"  subject {m['subject']}",
        f"  auth    auth={m['auth']}"
        + (f"   {m['auth_results']}".replace("\n", "\n" + " " * 22) if m["auth_results"] else ""),
        f"  scan    {'yes, before commit' if m['scanned_before_commit'] else 'not needed'}"
        f" ({m['attachments']} attachments)",
        f"store     {report['store']}",
    ]
    for t in report["tenants"]:
        lines.append(f"\ntenant    {t['tenant']} (to {t['address']})")
        res = t["result"]
        rules = t["rules"]
        if rules is not None:
            for name in rules["matched"]:
                lines.append(f"  rule    matched  {name}")
            for miss in rules["missed"]:
                lines.append(f"  rule    missed   {miss['rule']}: {miss['why']}")
            if not rules["matched"] and not rules["missed"]:
                lines.append("  rule    (no rules)")
        if t["speaker"]:
            lines.append(f"  speaker {t['speaker']}")
        if t["threading"] is not None:
            th = t["threading"]
            lines.append(
                f"  thread  {'continues a ticket, by ' + th['by'] if th['found'] else 'no match'}"
            )
        if "reply" in res:
            lines.append(f"  result  REJECTED by rule {res['rule']!r}: {res['reply']}")
            continue
        if res["duplicate"]:
            lines.append("  result  duplicate: already stored, nothing would change")
            continue
        if rules is not None and rules["drop"]:
            lines.append(f"  result  DROPPED by rule {rules['drop']!r} (250, audit only)")
            continue
        tk = t["ticket"]
        if tk is None:
            lines.append("  result  recorded without a ticket (machine mail)")
        else:
            verb = "added to" if tk["existing"] else "opens"
            lines.append(
                f"  result  {verb} {tk['ref']}  queue {tk['queue']}, priority {tk['priority']}"
                + (f", category {tk['category']}" if tk["category"] else "")
                + (f", tags {', '.join(tk['tags'])}" if tk["tags"] else "")
                + (f", assignee {tk['assignee']}" if tk["assignee"] else "")
            )
        for mail in t["would_send"]:
            lines.append(
                f"  send    {mail['kind']:<7} to {', '.join(mail['to'])}: {mail['subject']}"
            )
        if not t["would_send"]:
            lines.append("  send    nothing")
    return "\n".join(lines)


def as_json(report: dict[str, Any]) -> str:
    return json.dumps(report, ensure_ascii=False, indent=2)
