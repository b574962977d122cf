"""``gateway gdpr export|erase|rectify|hash`` and ``gateway purge``: the privacy policy's commands.

Which command serves which right is in docs/privacy.md. Each prints what it
did (or, for ``purge --dry-run``, what it would do) and leaves an audit
entry; errors are one line with a non-zero exit, as everywhere in the CLI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any

from gateway.cli.common import add_config_option, load, require_database
from gateway.cli.errors import CommandError
from routing.config import GatewayConfig, Tenant
from store.redact import pseudonym

__all__ = ["add_parsers"]


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """``gdpr`` with its actions, and ``purge``; every level accepts --config."""
    pg = sub.add_parser("gdpr", parents=[common], help="export or erase one person's data")
    gsub = pg.add_subparsers(dest="gdpr_command", required=True, metavar="ACTION")
    pe = gsub.add_parser("export", help="everything held about EMAIL in a tenant (JSON or zip)")
    pe.add_argument("--out", type=Path, default=None, help="write a zip archive with the files")
    pr = gsub.add_parser("erase", help="erase EMAIL from a tenant; leaves a hashed tombstone")
    pr.add_argument(
        "--no-verify", action="store_true", help="skip searching the data directory afterwards"
    )
    ph = gsub.add_parser("hash", help="the pseudonym of EMAIL in tombstones and logs")
    pc = gsub.add_parser(
        "rectify", help="correct a person's address or name on every row of a tenant"
    )
    pc.add_argument("--tenant", required=True, metavar="SLUG")
    pc.add_argument("--address", required=True, metavar="OLD", help="the address as stored")
    pc.add_argument("--new-address", default=None, metavar="NEW", help="the correct address")
    pc.add_argument("--name", default=None, help="the correct display name")
    for p in (pe, pr, ph):
        p.add_argument("email")
        if p is not ph:
            p.add_argument("--tenant", required=True, metavar="SLUG")
    pp = sub.add_parser("purge", parents=[common], help="apply every tenant's retention now")
    pp.add_argument("--dry-run", action="store_true", help="print what would go, change nothing")
    pp.add_argument("--tenant", default=None, metavar="SLUG")
    pp.set_defaults(func=_purge)
    for p, func in ((pe, _export), (pr, _erase), (ph, _hash), (pc, _rectify)):
        add_config_option(p)
        p.set_defaults(func=func)


def _purge(args: argparse.Namespace) -> int:
    config = load(args)
    if args.tenant is not None:
        _tenant(config, args.tenant)
    return asyncio.run(_purge_tenants(config, args.dry_run, args.tenant))


def _hash(args: argparse.Namespace) -> int:
    print(pseudonym(load(args).secret, _address(args.email)))
    return 0


def _export(args: argparse.Namespace) -> int:
    config = load(args)
    email = _address(args.email)
    return asyncio.run(_export_of(config, _tenant(config, args.tenant), email, args.out))


def _erase(args: argparse.Namespace) -> int:
    config = load(args)
    email = _address(args.email)
    tenant = _tenant(config, args.tenant)
    if email in tenant.addresses:
        raise CommandError(f"{email} is an address of tenant {tenant.slug!r}, not a person")
    return asyncio.run(_erase_of(config, tenant, email, verify=not args.no_verify))


def _rectify(args: argparse.Namespace) -> int:
    config = load(args)
    tenant = _tenant(config, args.tenant)
    old = _address(args.address)
    new = _address(args.new_address) if args.new_address is not None else None
    name = " ".join(args.name.split()) if args.name is not None else None
    if new is None and name is None:
        raise CommandError("nothing to correct: give --new-address, --name or both")
    if new == old:
        new = None
    for addr in (old, new):
        if addr is not None and addr in tenant.addresses:
            raise CommandError(f"{addr} is an address of tenant {tenant.slug!r}, not a person")
    return asyncio.run(_rectify_of(config, tenant, old, new, name))


async def _rectify_of(
    config: GatewayConfig, tenant: Tenant, old: str, new: str | None, name: str | None
) -> int:
    from gateway.ops.gdpr import rectify

    async with _services(config) as services:
        done = await rectify(services, config, tenant, old, new, name)
    if not done.total:
        raise CommandError(f"nothing held about {old} in {tenant.slug}", os.EX_NOINPUT)
    what = (
        " and ".join(
            x
            for x in (f"address to {new}" if new else "", f"name to {name!r}" if name else "")
            if x
        )
        or "name (cleared)"
    )
    c = done.counts()
    print(f"corrected {old} in {tenant.slug}: {what}")
    print(
        f"  participation rows: {c['participation']}, messages they sent: {c['messages_from']}, "
        f"messages addressed to them: {c['messages_addressed']}, tickets (assignee, first "
        f"responder): {c['tickets']}, sign-in links, sessions and bounce marks deleted: "
        f"{c['sign_in_rows_deleted']}"
    )
    return 0


def _address(value: str) -> str:
    email = value.strip().lower()
    local, at, domain = email.partition("@")
    if not (local and at and domain) or any(c.isspace() for c in email):
        raise CommandError(f"not an email address: {value!r}")
    return email


def _tenant(config: GatewayConfig, slug: str) -> Tenant:
    tenant = config.tenant(slug)
    if tenant is None:
        known = ", ".join(t.slug for t in config.tenants)
        raise CommandError(f"unknown tenant {slug!r} (tenants: {known})")
    return tenant


def _services(config: GatewayConfig) -> Any:
    from gateway.services import open_services

    require_database(config)
    return open_services(config)


def _now() -> Any:
    from gateway.clock import system_clock

    return system_clock()()


async def _export_of(config: GatewayConfig, tenant: Tenant, email: str, out: Path | None) -> int:
    from gateway.ops.gdpr import blob_reader, export, export_archive

    async with _services(config) as services:
        data = await export(services, config, tenant, email)
        if out is None:
            print(json.dumps(data, ensure_ascii=False, indent=2, default=str))
            return 0
        try:
            files = await asyncio.to_thread(export_archive, data, blob_reader(services), out)
        except OSError as exc:
            raise CommandError(
                f"{out}: cannot write: {exc.strerror or exc}", os.EX_CANTCREAT
            ) from None
    print(
        f"wrote {out}: {len(data['tickets'])} tickets, {len(data['messages'])} messages, "
        f"{len(data['audit_events'])} audit entries, {files} files"
    )
    return 0


async def _erase_of(config: GatewayConfig, tenant: Tenant, email: str, *, verify: bool) -> int:
    from gateway.ops.gdpr import erase

    async with _services(config) as services:
        report = await erase(services, config, tenant, email, _now(), verify=verify)
    e = report.erasure
    print(f"erased {email} from {tenant.slug}; tombstone {report.pseudonym}")
    print(f"  their messages emptied: {e.their_messages} (bodies, attachments, raw mail)")
    print(f"  tickets deleted (no one else on them): {', '.join(e.tickets_deleted) or '-'}")
    print(f"  tickets kept for other participants: {', '.join(e.tickets_kept) or '-'}")
    print(
        f"  other people's messages redacted: {e.messages_redacted} "
        f"(raw copies re-stored: {e.raw_copies_redacted})"
    )
    print(
        f"  sent mail deleted: {e.outbox_deleted}, queued mail redacted: {e.outbox_redacted}, "
        f"sign-in rows deleted: {e.web_rows_deleted}, audit entries pseudonymised: "
        f"{e.audit_redacted}, blobs deleted: {report.blobs_deleted}"
    )
    if not report.compacted:
        raise CommandError(
            "erased, but the database was busy and still holds deleted pages: run the "
            "same command again",
            os.EX_TEMPFAIL,
        )
    if not verify:
        return 0
    rows = config.blobs == "database"  # on PostgreSQL their rows are searched, not files
    if report.mentions_left:
        where = " or in blob rows (blobs:<sha256>)" if rows else ""
        print(
            f"  still found under {config.data_dir}{where} (other tenants' data, or another "
            f"person's attachment; see docs/privacy.md): {', '.join(report.mentions_left)}"
        )
    else:
        nor = " nor any blob row" if rows else ""
        print(f"  no file under {config.data_dir}{nor} contains the address any more")
    return 0


async def _purge_tenants(config: GatewayConfig, dry_run: bool, only: str | None) -> int:
    from gateway.ops.gdpr import admin_actor, purge_tenants

    async with _services(config) as services:
        results = await purge_tenants(
            services, config, _now(), dry_run=dry_run, actor=admin_actor(), only=only
        )
    verb = "would delete" if dry_run else "deleted"
    for slug, r in results.items():
        c = r.counts()
        tickets = f" ({', '.join(r.closed_tickets)})" if r.closed_tickets else ""
        print(
            f"{slug}: {verb} {c['closed_tickets']} closed tickets{tickets}, "
            f"{c['raw_messages']} raw messages, {c['sent_mail']} sent mails, "
            f"{c['audit_events']} audit entries, {c['link_tokens']} expired links, "
            f"{c['web_sessions']} expired sessions, {c['auth_events']} sign-in events"
        )
    return 0
