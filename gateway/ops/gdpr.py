"""GDPR export and erasure, retention purges: the store's privacy functions, run in order.

Each is a few units of work for the writer (one transaction each) around
file work that must not hold the write lock: reading every raw mail of a
tenant, writing redacted copies, collecting blobs, compacting the database
so that deleted bytes are gone from the file and its WAL, not just unlinked.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import re
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy.engine import Connection

from gateway.clock import Clock
from routing.config import GatewayConfig, Tenant
from store import repos
from store.blobs import BlobStore
from store.blobs_db import DatabaseBlobStore
from store.privacy import Erasure, collect_subject, erase_subject, names_of, raw_mentions
from store.rectify import Rectification, rectify_subject
from store.redact import Redactor, pseudonym
from store.retention import Policy, Purge, collect_blobs, find_orphans, purge

__all__ = [
    "ErasureReport",
    "admin_actor",
    "blob_reader",
    "compact",
    "erase",
    "export",
    "export_archive",
    "find_mentions",
    "purge_tenants",
    "record_admin_event",
    "rectify",
    "retention_daily",
]

log = structlog.get_logger("gateway.ops.gdpr")
ORPHAN_AGE = 24 * 3600.0  # a blob no row names, older than this, is a crash's leftover
PURGE_EVERY = 24 * 3600.0


def admin_actor() -> str:
    """Who ran a command, for the audit log: the Unix account."""
    try:
        return f"admin:{getpass.getuser()}"
    except (KeyError, OSError):
        return "admin"


def blob_reader(services: Any) -> Callable[[str], bytes | None]:
    """Blocking reads by hash, for code that already holds a row naming the blob."""
    blobs: BlobStore = services.blobs
    return blobs.get


async def _read(services: Any, fn: Callable[[Connection], Any]) -> Any:
    """A read outside the write lock (WAL readers never block the writer)."""
    async with services.engine.connect() as conn:
        return await conn.run_sync(fn)


# -- access ------------------------------------------------------------------------------


async def export(services: Any, config: GatewayConfig, tenant: Tenant, address: str) -> dict:
    """Everything held about the address in the tenant; the export itself is audited."""
    address = address.strip().lower()
    data = await _read(services, lambda c: collect_subject(c, tenant.slug, address))
    for mail in data["mail_sent_to_them"]:
        mail["body"] = bytes(mail["body"]).decode("utf-8", "replace")
    counts = {k: len(v) for k, v in data.items() if isinstance(v, list)}
    actor = admin_actor()

    def work(conn: Connection) -> None:
        repos.add_audit(
            conn,
            tenant.slug,
            "gdpr.exported",
            actor=actor,
            detail={"subject": pseudonym(config.secret, address), **counts},
        )

    await services.writer.submit(work)
    return data


def export_archive(data: dict, read: Callable[[str], bytes | None], out: Path) -> int:
    """A zip: export.json, their raw mail as .eml, every attachment listed; returns files."""
    n = 0
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for m in data["messages"]:
            if m["raw_sha256"]:
                raw = read(m["raw_sha256"])
                if raw is not None:
                    m["raw_file"] = f"messages/{m['id']}.eml"
                    z.writestr(m["raw_file"], raw)
                    n += 1
            for a in m["attachments"]:
                blob = read(a["sha256"])
                if blob is not None:
                    safe = re.sub(r"[^A-Za-z0-9._-]", "_", a["filename"])[:80] or "file"
                    a["file"] = f"attachments/{m['id']}-{a['sha256'][:12]}-{safe}"
                    z.writestr(a["file"], blob)
                    n += 1
        z.writestr("export.json", json.dumps(data, ensure_ascii=False, indent=2, default=str))
    return n + 1


# -- rectification ----------------------------------------------------------------------


async def rectify(
    services: Any,
    config: GatewayConfig,
    tenant: Tenant,
    old: str,
    new: str | None,
    name: str | None,
) -> Rectification:
    """Correct a person's address and/or name in one transaction with its audit event.

    The event names the old address by its pseudonym only: an erasure of the
    new address later must not leave the old one behind in the log.
    """
    actor = admin_actor()

    def work(conn: Connection) -> Rectification:
        done = rectify_subject(conn, tenant.slug, old, new, name)
        if done.total:
            detail: dict[str, Any] = {"subject": pseudonym(config.secret, old), **done.counts()}
            if new:
                detail["new_address"] = new
            detail["name_changed"] = name is not None
            repos.add_audit(conn, tenant.slug, "gdpr.rectified", actor=actor, detail=detail)
        return done

    result: Rectification = await services.writer.submit(work)
    return result


# -- erasure -----------------------------------------------------------------------------


@dataclass
class ErasureReport:
    erasure: Erasure
    pseudonym: str
    blobs_deleted: int
    mentions_left: list[str]
    compacted: bool


async def erase(
    services: Any,
    config: GatewayConfig,
    tenant: Tenant,
    address: str,
    now: datetime,
    *,
    verify: bool = True,
) -> ErasureReport:
    """Docs/privacy.md "Erasure", in order: redacted copies written, one transaction,
    blobs collected, the database compacted, then (``verify``) the data directory searched."""
    address = address.strip().lower()
    slug = tenant.slug
    names = await _read(services, lambda c: names_of(c, slug, address))
    redactor = Redactor(config.secret, address, names)
    read = blob_reader(services)
    mentions = await _read(services, lambda c: raw_mentions(c, slug, redactor, read))
    copies = list(mentions.items())
    staged = await services.blobs.stage([data for _, (_, data) in copies])
    new_shas = staged.shas
    raw_copies = {
        row: (old, sha, len(data)) for (row, (old, data)), sha in zip(copies, new_shas, strict=True)
    }
    actor = admin_actor()

    def work(conn: Connection) -> Erasure:
        services.blobs.bind(conn, staged)  # the redacted copies, before the rows name them
        done = erase_subject(conn, slug, redactor, raw_copies, now)
        # The tombstone: that an erasure happened and for whom, by pseudonym only.
        repos.add_audit(
            conn,
            slug,
            "gdpr.erased",
            actor=actor,
            detail={"subject": redactor.token, **done.counts()},
        )
        return done

    done = await services.writer.submit(work)
    candidates = done.blob_candidates | set(new_shas)
    gone = await services.writer.submit(
        lambda conn: collect_blobs(conn, services.blobs, candidates)
    )
    compacted = await compact(services, vacuum=True)
    left = await asyncio.to_thread(find_mentions, config, address, services.blobs) if verify else []
    return ErasureReport(done, redactor.token, len(gone), left, compacted)


def find_mentions(config: GatewayConfig, address: str, blobs: BlobStore | None = None) -> list[str]:
    """Files under the data directory (the database, its WAL, blobs) that contain the address.

    With the database blob store on PostgreSQL the blobs are not under the data
    directory, so their rows are searched too (named ``blobs:<sha256>``); on SQLite
    they are pages of the database file, which is searched already.
    """
    needle = re.compile(re.escape(address.encode()), re.I)
    found = []
    for p in sorted(config.data_dir.rglob("*")):
        try:
            if p.is_file() and needle.search(p.read_bytes()):
                found.append(str(p.relative_to(config.data_dir)))
        except OSError:
            continue
    if isinstance(blobs, DatabaseBlobStore) and blobs.engine.dialect.name != "sqlite":
        found += [f"blobs:{sha}" for sha in blobs.containing(needle)]
    return found


async def compact(services: Any, *, vacuum: bool) -> bool:
    """Deleted bytes leave the file: VACUUM rewrites it, the checkpoint empties the WAL.

    secure_delete (store/db.py) already zeroes freed space; VACUUM also drops
    what an older database freed before that pragma was on. False when a busy
    daemon kept either from finishing: the erasure stands, the bytes wait.

    PostgreSQL: a plain VACUUM (no table lock, other instances keep working)
    removes the dead row versions so their space is reused; the bytes leave
    the server's files when that space is overwritten, and its WAL and
    backups age out on their own schedule (docs/scaling.md says so).
    """
    engine = services.writer.engine
    if engine.dialect.name == "postgresql":
        if not vacuum:
            return True

        def pg_work() -> bool:
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM")
            return True

        try:
            return await asyncio.to_thread(pg_work)
        except Exception as exc:
            log.warning("store.compact_failed", error=type(exc).__name__, detail=str(exc)[:200])
            return False
    if engine.dialect.name != "sqlite":
        return True

    def work() -> bool:
        raw = engine.raw_connection()
        try:
            cur = raw.cursor()
            if vacuum:
                cur.execute("VACUUM")
            busy = cur.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            cur.close()
            return not busy
        finally:
            raw.close()

    try:
        return await asyncio.to_thread(work)
    except Exception as exc:  # "database is locked": the rows are gone, the pages wait
        log.warning("store.compact_failed", error=type(exc).__name__, detail=str(exc)[:200])
        return False


# -- other admin actions ---------------------------------------------------------------


def record_admin_event(
    config_path: Path, action: str, tenants: list[str], detail: dict[str, Any]
) -> str | None:
    """An audit entry per tenant for something done to the config (a key rotation);
    returns why it could not be written, for the command to say so."""
    from gateway.services import open_services
    from routing.config import load_config
    from routing.errors import ConfigError

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        return f"the config does not load ({exc.problems[0]})"
    db = config.database_url
    if db.startswith("sqlite") and not Path(db.split("///", 1)[-1]).exists():
        return "there is no database yet"
    actor = admin_actor()

    def work(conn: Connection) -> None:
        for slug in tenants:
            repos.add_audit(conn, slug, action, actor=actor, detail=detail)

    async def run() -> None:
        async with open_services(config) as services:
            await services.writer.submit(work)

    try:
        asyncio.run(run())
    except Exception as exc:  # the rotation stands; only its record failed
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    return None


# -- retention ---------------------------------------------------------------------------


def _policy(tenant: Tenant) -> Policy:
    r = tenant.retention
    return Policy(r.closed_tickets_days, r.raw_messages_days, r.audit_days)


async def purge_tenants(
    services: Any,
    config: GatewayConfig,
    now: datetime,
    *,
    dry_run: bool,
    actor: str = "gateway",
    only: str | None = None,
) -> dict[str, Purge]:
    """Each tenant's policy in its own transaction, then the blobs that no row names."""
    results: dict[str, Purge] = {}
    candidates: set[str] = set()
    for tenant in config.tenants:
        if only is not None and tenant.slug != only:
            continue
        policy = _policy(tenant)

        def work(conn: Connection, slug: str = tenant.slug, policy: Policy = policy) -> Purge:
            result = purge(conn, slug, policy, now, dry_run=dry_run)
            if result and not dry_run:
                repos.add_audit(
                    conn,
                    slug,
                    "retention.purged",
                    actor=actor,
                    detail={**result.counts(), "tickets": result.closed_tickets[:200]},
                )
            return result

        results[tenant.slug] = await services.writer.submit(work)
        candidates |= results[tenant.slug].blob_candidates
    if not dry_run:
        candidates |= await asyncio.to_thread(
            find_orphans, services.writer.engine, services.blobs, time.time() - ORPHAN_AGE
        )
        await services.writer.submit(lambda conn: collect_blobs(conn, services.blobs, candidates))
        await compact(services, vacuum=False)
    return results


async def retention_daily(services: Any, config: Callable[[], GatewayConfig], clock: Clock) -> None:
    """The daemon's purge: once at start, then every 24 hours; a failure waits for the next."""
    while True:
        try:
            results = await purge_tenants(services, config(), clock(), dry_run=False)
            purged = {slug: r.counts() for slug, r in results.items() if r}
            log.info("retention.purged", purged=purged)
        except Exception as exc:  # a bad day must not stop tomorrow's purge
            log.warning("retention.failed", error=type(exc).__name__, detail=str(exc)[:200])
        await asyncio.sleep(PURGE_EVERY)
