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

Batched (issue 21): one claim takes rows for every free connection at once;
each tenant's rows are split into lanes, and a lane sends its rows one after
the other over one connection to the tenant's account (outbound/sender.py; kept
open for the next lane, outbound/links.py), at most ``concurrency`` connections
at a time. The outcomes waiting are written together, in one writer transaction.
A lane that could not send a row before the lease is near its end hands the rest
back unsent (``pending``, no attempt counted), so a slow server never lets another
instance take over a row this one is still sending.

Paced (issue 21): the claims and the outcomes' writes are each at most one writer
transaction per ``GATHER`` (a claim that filled its limit is followed at once), and a
claim is made only when mail was queued since the last one (``wake``), the last one
was full, or ``poll_interval`` passed (retries come due). A lone sender's
acknowledgements took ~0.6 outbox transactions a message (an empty claim after each
lane, an outcome written per send), each one the next message's 250 waited behind at
the writer; paced, 0.17 at ~190 msg/s (bench/results/notes/pace21.md), fewer a
message the faster mail comes, and an acknowledgement goes out at most ``GATHER`` later.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog
from sqlalchemy.engine import Connection

from outbound.links import IdleLinks
from outbound.outbox_rows import (
    claim,
    is_plain_retry,
    mark_retries,
    mark_sent,
    record,
    release_claims,
    unclaim,
)
from outbound.sender import Attempt
from routing.config import GatewayConfig
from store import repos
from store.writer import Writer

__all__ = ["Attempt", "Delivery"]

log = structlog.get_logger("outbound.delivery")

PER_CONNECTION = 20  # rows one lane sends over its connection, at most
# Seconds between two claims (unless the first filled its limit), and between two
# writes of outcomes: a lone sender's acknowledgements then take one claim and one
# write per ~50 ms, not one each per message, which the sender's next message waited
# behind at the writer (bench/results/notes/lat21.md, pace21.md). Mail, not a reply:
# 50 ms later is no one's wait.
GATHER = 0.05


class Delivery:
    """The outbox worker of one gateway process; ``wake()`` after queueing mail."""

    def __init__(self, config: GatewayConfig, writer: Writer, *, concurrency: int = 4) -> None:
        self.config = config
        self.writer = writer
        self.instance = config.instance
        self.concurrency = concurrency
        self._wake = asyncio.Event()
        self._due = True  # mail may be waiting that no claim has taken yet
        self._slots = asyncio.Semaphore(concurrency)  # open connections
        self._results: list[tuple[dict[str, Any], Attempt, GatewayConfig]] = []
        self._recorded = asyncio.Event()
        self.sent = 0
        self.failed = 0
        self.connections = 0  # opened so far (kept from lane to lane: outbound/links.py)
        self.attempts: dict[tuple[str, str], int] = {}  # (kind, result) -> count, for /metrics
        self.links = IdleLinks()

    def configure(self, config: GatewayConfig) -> None:
        self.config = config

    def wake(self) -> None:
        """Mail was queued (or may have been): claim it soon."""
        self._due = True
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled; only CancelledError leaves."""
        me = self.instance
        await self.writer.submit(lambda conn: release_claims(conn, me))
        running: set[asyncio.Task[None]] = set()
        recorder = asyncio.create_task(self._record_forever())

        def done(task: asyncio.Task[None]) -> None:
            running.discard(task)
            self._wake.set()  # a connection is free: claim, if mail is due

        claimed_at, full = -GATHER, False
        try:
            while True:
                self._wake.clear()
                free = self.concurrency - len(running)
                if free > 0 and self._due:
                    # Paced: a claim's transaction held the writer that the next
                    # message's 250 waits on (see GATHER); not after a full claim,
                    # when a backlog is sent (figure 7).
                    if not full:
                        await asyncio.sleep(claimed_at + GATHER - time.monotonic())
                    claimed_at = time.monotonic()
                    self._due = False
                    # Only as many rows as the free connections will send before the
                    # lease (which starts now) is near its end.
                    limit = free * PER_CONNECTION
                    rows = await self._claim(limit)
                    until = claimed_at + self.config.outbound.claim_lease
                    for lane in _lanes(rows, free):
                        task = asyncio.create_task(self._lane(lane, until))
                        running.add(task)
                        task.add_done_callback(done)
                    full = len(rows) == limit
                    if full:
                        self._due = True  # more may be waiting: claim when a lane ends
                    continue
                try:
                    async with asyncio.timeout(self.config.outbound.poll_interval):
                        await self._wake.wait()
                except TimeoutError:
                    self._due = True  # retries come due without a wake
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            recorder.cancel()
            await asyncio.gather(recorder, return_exceptions=True)
            with contextlib.suppress(Exception):  # what was sent is marked sent, if it can be
                await self._record_waiting()
            await self.links.close()  # QUIT on the idle connections

    async def _claim(self, limit: int) -> list[dict[str, Any]]:
        me, lease = self.instance, self.config.outbound.claim_lease
        try:
            return await self.writer.submit(
                lambda conn: claim(conn, repos.now(), limit, me, lease),
                durable=False,  # a claim lost is a row due again
            )
        except Exception as exc:  # the store is busy or down: try again at the next poll
            log.warning("outbox.claim_failed", error=type(exc).__name__)
            return []

    async def _lane(self, rows: list[dict[str, Any]], until: float) -> None:
        """Send ``rows`` (one tenant's) over one connection, in order."""
        async with self._slots:
            config = self.config
            tenant = config.tenant(rows[0]["tenant"])
            account = tenant.outbound if tenant is not None else None
            where = (account, config.hostname, config.outbound.timeout)
            link = self.links.take(*where)
            # The worst one attempt can take (2 x timeout) must end before the lease
            # does, or another instance could send it too: none starts after this.
            start_by = until - 2 * config.outbound.timeout
            done, opened, sound = 0, link.opened, False
            try:
                async for i, attempt in link.deliver(rows, start_by):
                    self._results.append((rows[i], attempt, config))
                    self._recorded.set()
                    done = i + 1
                sound = True
            finally:
                self.connections += link.opened - opened
                if sound:  # kept for the next lane; a cancelled one's state is unknown
                    self.links.give_back(link, *where, done)
                else:
                    self.links.drop(link)
            if done < len(rows):  # never started: not an attempt
                await self._hand_back(rows[done:])

    async def _hand_back(self, rows: list[dict[str, Any]]) -> None:
        me, ids = self.instance, [r["id"] for r in rows]
        log.info("outbox.handed_back", count=len(ids))
        with contextlib.suppress(Exception):  # else released at next start or taken over
            await self.writer.submit(lambda conn: unclaim(conn, ids, me), durable=False)
        self._due = True  # due again at once

    async def _record_forever(self) -> None:
        while True:
            await self._recorded.wait()
            written = time.monotonic()
            self._recorded.clear()
            try:
                await self._record_waiting()
            except Exception as exc:  # stays "sending": released at next start or taken over
                log.error("outbox.record_failed", error=type(exc).__name__)
            await asyncio.sleep(written + GATHER - time.monotonic())  # paced (see GATHER)

    async def _record_waiting(self) -> None:
        """Every outcome waiting, in one transaction (group commit, no wait window)."""
        batch, self._results = self._results, []
        if not batch:
            return
        me = self.instance

        def write(conn: Connection) -> list[bool]:
            # A plain "sent" (nearly all of them) is the same change for every row: one
            # UPDATE for them all, not one each (a fifth of the worker's CPU per mail).
            # Plain retries (an account down) are one UPDATE too: on PostgreSQL each
            # was a round trip that ingest waited behind at the writer (outbox_rows.py).
            now = repos.now()
            sent = [row["id"] for row, a, _ in batch if a.result == "sent" and not a.detail]
            later = [x for x in batch if is_plain_retry(x[2], x[0], x[1], now)]
            marked = mark_sent(conn, sent, me) if sent else set()
            marked |= mark_retries(conn, later, me, now) if later else set()
            batched = set(sent) | {row["id"] for row, _, _ in later}
            return [
                row["id"] in marked
                if row["id"] in batched
                else record(conn, config, config.tenant(row["tenant"]), row, attempt, me)
                for row, attempt, config in batch
            ]

        # Not waiting for the disk: an outcome lost with a power cut is a mail sent
        # again with its Message-ID, or tried again (store/writer.py).
        kept = await self.writer.submit(write, durable=False)
        for (row, attempt, _config), ok in zip(batch, kept, strict=True):
            self._count(row, attempt, ok)

    def _count(self, row: dict[str, Any], attempt: Attempt, kept: bool) -> None:
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


def _lanes(rows: list[dict[str, Any]], free: int) -> list[list[dict[str, Any]]]:
    """Each tenant's rows split over about its share of the ``free`` connections (at
    least one each), in claim order within a lane."""
    by_tenant: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_tenant.setdefault(r["tenant"], []).append(r)
    lanes: list[list[dict[str, Any]]] = []
    for mine in by_tenant.values():
        n = max(1, min(len(mine), round(free * len(mine) / len(rows))))
        lanes += [mine[i::n] for i in range(n)]
    return lanes
