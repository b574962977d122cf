"""The outbox rows' states in the store: claimed, handed back, released, sent, retried,
given up (with the audit event and the agents' failure notice). Each takes the writer's
connection and runs inside its transaction; the outbox worker (outbound/delivery.py)
decides when. Apart from it so the rules of who may change a row (``claimed_by``,
the lease) sit in one place, and the instances' tests can drive them directly.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import and_, bindparam, case, literal, or_, select, update
from sqlalchemy.engine import Connection

from outbound.outbox import queue_failure_notice
from outbound.sender import Attempt
from routing.config import GatewayConfig, Tenant
from store import repos
from store.direct import Direct, Family
from store.models import outbox

__all__ = [
    "claim",
    "is_plain_retry",
    "mark_retries",
    "mark_sent",
    "record",
    "release_claims",
    "unclaim",
]

log = structlog.get_logger("outbound.delivery")

_NO_FAILURE_NOTICE = {"failure"}  # a failure notice that fails tells nobody (no loops)
# Rows a multi-row statement names at most: under SQLite's bound-parameter limit
# with three values a row, and a claim takes fewer anyway.
_CHUNK = 300


def unclaim(conn: Connection, ids: list[int], instance: str) -> int:
    """Claimed rows handed back unsent: due again, no attempt counted."""
    res = conn.execute(
        update(outbox)
        .where(outbox.c.id.in_(ids), outbox.c.status == "sending", outbox.c.claimed_by == instance)
        .values(status="pending", claimed_by=None, claimed_until=None)
    )
    return res.rowcount


def release_claims(conn: Connection, instance: str) -> int:
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


# Straight to the driver (store/direct.py): a claim and a sent mark come with nearly
# every acknowledgement, and building them through SQLAlchemy cost 0.4-0.7 ms of CPU
# each, ten times what SQLite took to run them (bench/results/notes/outq21.md). Fixed
# statements by the limit, and by the size of ``repos.ids_asked``.
# Two halves, each its own statement: rows pending and due, and rows whose claimer's
# lease ran out. Each walks the index of (status, next_attempt_at) in order and stops at
# the limit. One statement with an OR of the two could not: SQLite and PostgreSQL both
# gathered every due row and sorted them, so after an outage each claim cost the whole
# backlog (12.5 ms a claim with 40,000 due on SQLite, 0.8 ms now). PostgreSQL's bitmap
# scan for the OR also never marks the index entries of dead row versions dead (every
# row sent leaves two: status is indexed, so no update is HOT), so each claim visited
# every row sent since the last VACUUM again (6.1 ms after 50,000 sent, 0.1 for a half
# alone), and autovacuum comes only once a fifth of the table has changed
# (bench/results/notes/claim30.md).
_HALVES = (
    and_(outbox.c.status == "pending", outbox.c.next_attempt_at <= bindparam("now")),
    and_(outbox.c.status == "sending", outbox.c.claimed_until < bindparam("now")),
)
_CLAIM_ROWS: Family[tuple[int, int]] = Family(
    lambda key: Direct(
        select(outbox)
        .where(_HALVES[key[1]])
        .order_by(outbox.c.next_attempt_at, outbox.c.id)
        .limit(key[0])
        .with_for_update(skip_locked=True)
    )
)


def claim(
    conn: Connection, now: datetime, limit: int, instance: str, lease: float
) -> list[dict[str, Any]]:
    """Due rows, and rows whose claimer's lease ran out, now this instance's.

    SKIP LOCKED: rows another instance is claiming in this very moment are
    passed over, not waited for, so claims never queue behind each other.
    """
    values = {"now": now}
    rows = [r for half in range(len(_HALVES)) for r in _CLAIM_ROWS[limit, half].rows(conn, values)]
    if len(rows) > limit:  # the oldest due first, as one statement over both would take
        rows = sorted(rows, key=lambda r: (r["next_attempt_at"], r["id"]))[:limit]
    until = now + timedelta(seconds=lease)
    ids = [r["id"] for r in rows]
    for at in range(0, len(ids), repos.IDS_AT_ONCE):
        size, params = repos.ids_asked(ids[at : at + repos.IDS_AT_ONCE], "i")
        _CLAIMED[size].rowcount(conn, {**params, "me": instance, "until": until})
    for r in rows:
        if r["status"] == "sending":
            log.info("outbox.taken_over", id=r["id"], previous=r["claimed_by"])
    return rows


def _claimed(size: int) -> Direct:
    return Direct(
        update(outbox)
        .where(repos.among_ids(size, outbox.c.id, "i"))
        .values(status="sending", claimed_by=bindparam("me"), claimed_until=bindparam("until"))
    )


_CLAIMED: Family[int] = Family(_claimed)


def _backoff(config: GatewayConfig, attempts: int) -> float:
    """Seconds until the next attempt after ``attempts``: exponential, capped, with
    jitter (a recovering server is not hit by every retry at once)."""
    o = config.outbound
    delay = min(o.retry_max, o.retry_base * 2 ** min(attempts - 1, 20))
    return delay * random.uniform(0.5, 1.5)


def _created(row: dict[str, Any], now: datetime) -> datetime:
    created: datetime = row["created_at"]
    if created.tzinfo is None:  # SQLite hands back naive UTC
        created = created.replace(tzinfo=now.tzinfo)
    return created


def is_plain_retry(
    config: GatewayConfig, row: dict[str, Any], attempt: Attempt, now: datetime
) -> bool:
    """A temporary failure of mail still young enough to try again: nothing to tell
    anyone, only the next attempt's time to set (``mark_retries``)."""
    if attempt.result != "retry":
        return False
    return (now - _created(row, now)).total_seconds() <= config.outbound.max_age


def mark_retries(
    conn: Connection,
    items: list[tuple[dict[str, Any], Attempt, GatewayConfig]],
    instance: str,
    now: datetime,
) -> set[int]:
    """Plain retries (``is_plain_retry``) back to ``pending``, each with its own next
    attempt time and error, in one UPDATE per chunk; the ids still this instance's
    claim. The same values ``record`` writes for one."""
    kept: set[int] = set()
    for i in range(0, len(items), _CHUNK):
        part = items[i : i + _CHUNK]
        due = {
            row["id"]: literal(
                now + timedelta(seconds=_backoff(config, row["attempts"] + 1)),
                outbox.c.next_attempt_at.type,
            )
            for row, _attempt, config in part
        }
        errors = {
            row["id"]: literal(attempt.detail, outbox.c.last_error.type)
            for row, attempt, _config in part
        }
        res = conn.execute(
            update(outbox)
            .where(
                outbox.c.id.in_(list(due)),
                outbox.c.status == "sending",
                outbox.c.claimed_by == instance,
            )
            .values(
                status="pending",
                attempts=outbox.c.attempts + 1,
                next_attempt_at=case(due, value=outbox.c.id),
                last_error=case(errors, value=outbox.c.id),
                claimed_by=None,
                claimed_until=None,
            )
            .returning(outbox.c.id)
        )
        kept |= {r[0] for r in res}
    return kept


def mark_sent(conn: Connection, ids: list[int], instance: str) -> set[int]:
    """Rows sent with nothing to note, marked ``sent`` at once; the ids still this
    instance's claim (a row another instance took over stays as it has it)."""
    kept: set[int] = set()
    values = {"me": instance, "sent_at": repos.now()}
    for at in range(0, len(ids), repos.IDS_AT_ONCE):
        size, params = repos.ids_asked(ids[at : at + repos.IDS_AT_ONCE], "i")
        kept |= {r[0] for r in _SENT[size].all(conn, {**params, **values})}
    return kept


def _sent(size: int) -> Direct:
    return Direct(
        update(outbox)
        .where(
            repos.among_ids(size, outbox.c.id, "i"),
            outbox.c.status == "sending",
            outbox.c.claimed_by == bindparam("me"),
        )
        .values(
            status="sent",
            attempts=outbox.c.attempts + 1,
            sent_at=bindparam("sent_at"),
            last_error=None,
            claimed_by=None,
            claimed_until=None,
        )
        .returning(outbox.c.id)
    )


_SENT: Family[int] = Family(_sent)


def record(
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
                last_error=attempt.detail or None,  # None, or "partly refused: ..."
                **done,
            )
        )
        if res.rowcount == 1 and attempt.unanswerable:  # the agents must know who was not
            _tell(conn, config, tenant, row, attempt.unanswerable, attempt.detail, now)
        return res.rowcount == 1
    if is_plain_retry(config, row, attempt, now):
        res = conn.execute(
            update(outbox)
            .where(where)
            .values(
                status="pending",
                attempts=attempts,
                next_attempt_at=now + timedelta(seconds=_backoff(config, attempts)),
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
    if tenant is None or row["kind"] in _NO_FAILURE_NOTICE:
        return
    queue_failure_notice(conn, config, tenant, row["ticket_id"], list(recipients), reason, now)
