"""Delivers the outbox through each tenant's own SMTP account (aiosmtplib).

At-least-once, never more than needed: a row is claimed (``sending``, with
this instance's name and a lease), sent, then marked ``sent``; a crash in
between leaves it ``sending``, and this instance's next start puts it back to
``pending``, or, if it never comes back, another instance takes it over once
the lease has run out: the same bytes with the same Message-ID go out again
(the receiver can tell it is the same mail). Several instances on one
PostgreSQL claim with ``FOR UPDATE SKIP LOCKED``, so no row is claimed by
two; on SQLite the writer's IMMEDIATE transaction serializes the claims.
Temporary failures (4xx, network, timeouts) retry with jittered exponential
backoff until ``max_age``; a 5xx, or that age, gives up with an audit event
and a notice to the tenant's agents (never a notice about a notice).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiosmtplib
import structlog
from sqlalchemy import and_, or_, select, update
from sqlalchemy.engine import Connection

from outbound.compose import failure_notice
from outbound.mime import as_7bit, downgrade, needs_8bitmime, needs_smtputf8
from outbound.reactions import queue
from routing.config import GatewayConfig, OutboundAccount, Tenant
from store import repos
from store.models import outbox
from store.writer import Writer

__all__ = ["Attempt", "Delivery"]

log = structlog.get_logger("outbound.delivery")

_NO_FAILURE_NOTICE = {"failure"}  # a failure notice that fails tells nobody (no loops)


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one delivery attempt came to: sent, retry later, or give up."""

    result: str  # sent | retry | failed
    detail: str = ""
    code: int | None = None
    # Sent to the others, but these could not be answered (they need SMTPUTF8).
    unanswerable: tuple[str, ...] = ()


class Delivery:
    """The outbox worker of one gateway process; ``wake()`` after queueing mail."""

    def __init__(self, config: GatewayConfig, writer: Writer, *, concurrency: int = 4) -> None:
        self.config = config
        self.writer = writer
        self.instance = config.instance
        self.concurrency = concurrency
        self._wake = asyncio.Event()
        self.sent = 0
        self.failed = 0
        self.attempts: dict[tuple[str, str], int] = {}  # (kind, result) -> count, for /metrics

    def configure(self, config: GatewayConfig) -> None:
        self.config = config

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled; only CancelledError leaves."""
        me = self.instance
        await self.writer.submit(lambda conn: _release_claims(conn, me))
        running: set[asyncio.Task[None]] = set()

        def done(task: asyncio.Task[None]) -> None:
            running.discard(task)
            self._wake.set()  # a slot is free: claim the next row

        try:
            while True:
                self._wake.clear()
                # Only as many rows as there are free slots: a claimed row's lease
                # starts now, so it must not wait behind other sends.
                free = self.concurrency - len(running)
                rows: list[dict[str, Any]] = []
                if free > 0:
                    lease = self.config.outbound.claim_lease
                    try:
                        rows = await self.writer.submit(
                            lambda conn, n=free, ttl=lease: _claim(conn, repos.now(), n, me, ttl)
                        )
                    except Exception as exc:  # the store is busy or down: try again soon
                        log.warning("outbox.claim_failed", error=type(exc).__name__)
                for row in rows:
                    task = asyncio.create_task(self._deliver(row))
                    running.add(task)
                    task.add_done_callback(done)
                if not rows:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.config.outbound.poll_interval):
                            await self._wake.wait()
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def _deliver(self, row: dict[str, Any]) -> None:
        config = self.config
        tenant = config.tenant(row["tenant"])
        try:
            attempt = await send_one(config, tenant, row)
        except Exception as exc:  # a bug must not leave the row claimed until restart
            log.exception("outbox.send_crashed", id=row["id"])
            attempt = Attempt("retry", f"internal error: {type(exc).__name__}")
        me = self.instance
        try:
            kept = await self.writer.submit(
                lambda conn: _record(conn, config, tenant, row, attempt, me)
            )
        except Exception as exc:  # stays "sending": released at next start or taken over
            log.error("outbox.record_failed", id=row["id"], error=type(exc).__name__)
            return
        if not kept:  # the lease ran out mid-send and another instance has the row now
            log.warning("outbox.claim_lost", id=row["id"], result=attempt.result)
            return
        self.attempts[(row["kind"], attempt.result)] = (
            self.attempts.get((row["kind"], attempt.result), 0) + 1
        )
        if attempt.result == "sent":
            self.sent += 1
        elif attempt.result == "failed":
            self.failed += 1
            self.wake()  # a failure notice may have been queued
        log.info(
            "outbox.attempt",
            id=row["id"],
            tenant=row["tenant"],
            kind=row["kind"],
            result=attempt.result,
            code=attempt.code,
            attempts=row["attempts"] + 1,
        )


async def send_one(config: GatewayConfig, tenant: Tenant | None, row: dict[str, Any]) -> Attempt:
    """One SMTP transaction; every outcome is an Attempt, nothing raises but cancellation."""
    account = tenant.outbound if tenant is not None else None
    if account is None:
        return Attempt("retry", "no outbound account configured for this tenant")
    # The SMTP client, not aiosmtplib.send(): send() refuses the null sender
    # that acknowledgements must use (RFC 3834 section 3).
    client = aiosmtplib.SMTP(
        hostname=account.host,
        port=account.port,
        username=account.username or None,
        password=account.password or None,
        use_tls=account.security == "tls",
        start_tls=account.security == "starttls",
        tls_context=_tls_context(account),
        local_hostname=config.hostname,
        timeout=config.outbound.timeout,
    )
    rcpts = list(row["rcpt_tos"])
    # An internationalised address (RFC 6531) goes only with SMTPUTF8; a server
    # without it can never take the mail, so that is permanent and said plainly.
    # Its ASCII co-recipients still get the mail, with ASCII headers (split).
    utf8 = needs_smtputf8(row["mail_from"], rcpts, row["body"])
    unanswerable: list[str] = []
    try:
        async with asyncio.timeout(config.outbound.timeout * 2):
            async with client:
                options = ["SMTPUTF8"] if utf8 else []
                body = row["body"]
                # UTF-8 text goes as it is (8bit), said so to the server; to one that
                # does not know the word, quoted-printable (the same mail, other bytes).
                if needs_8bitmime(body):
                    if client.supports_extension("8bitmime"):
                        options.append("BODY=8BITMIME")
                    else:
                        body = as_7bit(body)
                try:
                    errors, response = await client.sendmail(
                        row["mail_from"], rcpts, body, mail_options=options
                    )
                except aiosmtplib.SMTPNotSupported:
                    plain, down = _without_smtputf8(row["mail_from"], rcpts, body)
                    if not (utf8 and plain and down):
                        raise
                    unanswerable = [r for r in rcpts if r not in plain]
                    errors, response = await client.sendmail(
                        row["mail_from"],
                        plain,
                        down,
                        mail_options=[o for o in options if o != "SMTPUTF8"],
                    )
    except aiosmtplib.SMTPNotSupported as exc:
        if not utf8:
            return Attempt("retry", f"{type(exc).__name__}: {exc}"[:1000])
        return Attempt("failed", _needs_smtputf8(account))
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = [e.code for e in exc.recipients]
        permanent = all(c >= 500 for c in codes)
        detail = "; ".join(f"{e.recipient}: {e.code} {e.message}" for e in exc.recipients)
        return Attempt("failed" if permanent else "retry", detail[:1000], min(codes, default=None))
    except aiosmtplib.SMTPResponseException as exc:
        permanent = 500 <= exc.code < 600
        return Attempt("failed" if permanent else "retry", f"{exc.code} {exc.message}", exc.code)
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        return Attempt("retry", f"{type(exc).__name__}: {exc}"[:1000])
    if unanswerable:
        reason = _needs_smtputf8(account)
        return Attempt("sent", f"partly: {', '.join(unanswerable)} {reason}"[:1000],
                       unanswerable=tuple(unanswerable))  # fmt: skip
    if errors:  # some recipients refused, the others accepted: done, refusals noted
        refused = "; ".join(f"{r}: {e.code} {e.message}" for r, e in errors.items())
        return Attempt("sent", f"partly refused: {refused}"[:1000])
    return Attempt("sent", response[:200])


def _needs_smtputf8(account: OutboundAccount) -> str:
    return (
        f"cannot be answered: the address needs SMTPUTF8 (RFC 6531), which the "
        f"tenant's server {account.host} does not offer"
    )


def _without_smtputf8(
    mail_from: str, rcpts: list[str], body: bytes
) -> tuple[list[str], bytes | None]:
    """The recipients an ASCII mail can reach, and that mail (headers downgraded)."""
    if not mail_from.isascii():
        return [], None
    plain = [r for r in rcpts if r.isascii()]
    return plain, downgrade(body) if plain else None


def _tls_context(account: OutboundAccount) -> ssl.SSLContext | None:
    if account.ca_file is None:
        return None
    return ssl.create_default_context(cafile=str(account.ca_file))


def _release_claims(conn: Connection, instance: str) -> int:
    """Rows this instance's crash left ``sending`` are sent again: at least once, never
    lost. Another live instance's claims are its own; a dead one's pass on by lease."""
    res = conn.execute(
        update(outbox)
        .where(
            outbox.c.status == "sending",
            or_(outbox.c.claimed_by == instance, outbox.c.claimed_by.is_(None)),
        )
        .values(status="pending", claimed_by=None, claimed_until=None)
    )
    return res.rowcount


def _claim(
    conn: Connection, now: datetime, limit: int, instance: str, lease: float
) -> list[dict[str, Any]]:
    """Due rows, and rows whose claimer's lease ran out, now this instance's.

    SKIP LOCKED: rows another instance is claiming in this very moment are
    passed over, not waited for, so claims never queue behind each other.
    """
    due = or_(
        and_(outbox.c.status == "pending", outbox.c.next_attempt_at <= now),
        and_(outbox.c.status == "sending", outbox.c.claimed_until < now),
    )
    rows = [
        dict(r._mapping)
        for r in conn.execute(
            select(outbox)
            .where(due)
            .order_by(outbox.c.next_attempt_at, outbox.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ]
    if rows:
        conn.execute(
            update(outbox)
            .where(outbox.c.id.in_([r["id"] for r in rows]))
            .values(
                status="sending",
                claimed_by=instance,
                claimed_until=now + timedelta(seconds=lease),
            )
        )
    for r in rows:
        if r["status"] == "sending":
            log.info("outbox.taken_over", id=r["id"], previous=r["claimed_by"])
    return rows


def _record(
    conn: Connection,
    config: GatewayConfig,
    tenant: Tenant | None,
    row: dict[str, Any],
    attempt: Attempt,
    instance: str,
) -> bool:
    """Write the attempt's outcome; False (and nothing written) when the row is no
    longer this instance's claim, so a late answer never undoes a peer's."""
    now = repos.now()
    attempts = row["attempts"] + 1
    where = and_(
        outbox.c.id == row["id"], outbox.c.status == "sending", outbox.c.claimed_by == instance
    )
    done = {"claimed_by": None, "claimed_until": None}
    if attempt.result == "sent":
        res = conn.execute(
            update(outbox)
            .where(where)
            .values(
                status="sent",
                attempts=attempts,
                sent_at=now,
                last_error=attempt.detail or None,
                **done,
            )
        )
        if res.rowcount == 1 and attempt.unanswerable:  # the agents must know who was not
            _tell(conn, config, tenant, row, attempt.unanswerable, attempt.detail, now)
        return res.rowcount == 1
    created = row["created_at"]
    if created.tzinfo is None:  # SQLite hands back naive UTC
        created = created.replace(tzinfo=now.tzinfo)
    too_old = (now - created).total_seconds() > config.outbound.max_age
    if attempt.result == "retry" and not too_old:
        o = config.outbound
        delay = min(o.retry_max, o.retry_base * 2 ** min(attempts - 1, 20))
        delay *= random.uniform(0.5, 1.5)  # jitter: a recovering server is not hit at once
        res = conn.execute(
            update(outbox)
            .where(where)
            .values(
                status="pending",
                attempts=attempts,
                next_attempt_at=now + timedelta(seconds=delay),
                last_error=attempt.detail,
                **done,
            )
        )
        return res.rowcount == 1
    reason = attempt.detail if attempt.result == "failed" else f"gave up: {attempt.detail}"
    res = conn.execute(
        update(outbox)
        .where(where)
        .values(status="failed", attempts=attempts, last_error=reason, **done)
    )
    if res.rowcount != 1:
        return False
    _tell(conn, config, tenant, row, tuple(row["rcpt_tos"]), reason, now)
    return True


def _tell(
    conn: Connection,
    config: GatewayConfig,
    tenant: Tenant | None,
    row: dict[str, Any],
    recipients: tuple[str, ...],
    reason: str,
    now: datetime,
) -> None:
    """Mail that did not reach ``recipients``: an audit event on the ticket
    (``tickets show``) and a failure notice to the tenant's agents."""
    repos.add_audit(
        conn,
        row["tenant"],
        "outbox.failed",
        actor="gateway",
        ticket_id=row["ticket_id"],
        detail={
            "message_id": row["message_id"],
            "kind": row["kind"],
            "recipients": list(recipients),
            "reason": reason[:500],
            "attempts": row["attempts"] + 1,
        },
    )
    if tenant is None or row["kind"] in _NO_FAILURE_NOTICE or not tenant.agents:
        return
    ticket = repos.ticket_row(conn, tenant.slug, row["ticket_id"]) if row["ticket_id"] else None
    mail = failure_notice(
        tenant=tenant,
        hostname=config.hostname,
        agents=tenant.agents,
        ref=str(ticket["ref"]) if ticket else "-",
        subject=str(ticket["subject"]) if ticket else "(no ticket)",
        recipients=list(recipients),
        reason=reason,
        now=now,
    )
    queue(conn, tenant.slug, "failure", row["ticket_id"], mail)
