"""Draining a mailbox's folder in batches: bodies prefetched, messages moved after commit.

One drain pass offers every message in the folder to the pipeline, committed in
UID order (a reply must find the ticket its predecessor made, as on one SMTP
session), a fetched batch at once: each message's commit is queued after its
predecessor's (gateway/intake/in_order.py), and the rest of their ways (parse,
scan, DNS) run side by side, so a batch's commits share the writer's transactions.
What would leave the pipeline waiting on the server is taken off its path:

- Bodies come in batches: one ``UID FETCH <set> (UID BODY.PEEK[])`` of up to
  ``FETCH_COUNT`` messages or ``FETCH_BYTES`` bytes (sizes known beforehand,
  ``SIZE_CHUNK`` at a time), and the next batch is fetched while the current
  one goes through the pipeline; at most two batches are held.
- Committed messages leave the folder together, in one ``UID MOVE`` (or
  ``UID COPY`` + ``UID STORE \\Deleted`` + ``UID EXPUNGE``) of several batches'
  (``MOVE_COUNT``, ``MOVE_AFTER``), and the position is saved after it, never
  before their commits: a crash between the commits and the MOVE leaves them
  where they were, and the next session's pipeline recognises each message
  again (dedupe by Message-ID and content) and moves it then.

IMAP commands stay strictly one after the other on the connection (a chain
of tasks, each awaiting the one before); only the pipeline runs beside them.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from typing import TYPE_CHECKING, Any

import aioimaplib
import structlog
from sqlalchemy.engine import Connection

from gateway.intake.imap_wire import bodies, consume, sizes, uid_set
from gateway.intake.in_order import InOrder, Turn
from gateway.intake.replies import ImapAction, imap_action, quarantine, reject
from parsers.mime import head_of
from parsers.types import Envelope, RawMessage
from routing.verdicts import Defer, Outcome, Reason, Reject
from store import imap_state, repos
from store.faults import IMAP_AFTER_COMMIT_BEFORE_MOVE, crash_point

if TYPE_CHECKING:
    from gateway.intake.imap import MailboxWorker

__all__ = ["FETCH_BYTES", "FETCH_COUNT", "MOVE_AFTER", "MOVE_COUNT", "SIZE_CHUNK", "Drain"]

log = structlog.get_logger("gateway.imap")

FETCH_COUNT = 32  # bodies in one UID FETCH
FETCH_BYTES = 8 << 20  # ... and their sizes together at most (one bigger message goes alone)
SIZE_CHUNK = 500  # UIDs whose sizes one FETCH asks for
# Committed messages leave the folder together, in one UID MOVE of up to this many (at
# a pass's end at once, and none waits longer than MOVE_AFTER seconds): Dovecot
# rewrites a Maildir folder's UID list and index on every expunge, so a MOVE costs it
# about the folder's size: a 50,000-message backlog drained at 172 msg/s with Dovecot
# at 0.8 of a core moving 32 at a time, at 389 with it at 0.1 moving up to 512
# (bench/results/s28/backlog_bound.py.txt).
MOVE_COUNT = 512
MOVE_AFTER = 2.0


class _Chain:
    """IMAP steps run in the order queued, each after the one before it ended.

    A failed step fails every later one (the session is then lost anyway), so
    whoever awaits any later step hears of it.
    """

    def __init__(self) -> None:
        self._last: asyncio.Task[Any] | None = None
        self._tasks: list[asyncio.Task[Any]] = []

    def then(self, step: Callable[[], Awaitable[Any]]) -> asyncio.Task[Any]:
        before = self._last

        async def run() -> Any:
            if before is not None:
                await before
            return await step()

        task = asyncio.ensure_future(run())
        self._last = task
        self._tasks = [t for t in self._tasks if not t.done()] + [task]
        return task

    async def finish(self) -> None:
        if self._last is not None:
            await self._last

    def abandon(self) -> None:
        for task in self._tasks:
            if not task.done():
                task.cancel()
            task.add_done_callback(consume)


class Drain:
    """One pass over the folder; ``run`` returns how many messages were left (deferred)."""

    def __init__(self, worker: MailboxWorker, imap: aioimaplib.IMAP4, uidvalidity: int) -> None:
        self.w = worker
        self.imap = imap
        self.uidvalidity = uidvalidity
        self.sizes: dict[int, int] = {}

    async def run(self) -> int:
        w = self.w
        resp = await w.call(self.imap.uid_search("ALL", charset=None), "UID SEARCH")
        uids = sorted(
            {int(x) for line in resp.lines[:1] for x in bytes(line).split() if x.isdigit()}
        )
        w.state.backlog = len(uids)
        todo = deque(uids)
        chain = _Chain()
        deferred = batches = 0
        started = time.perf_counter()
        waited = 0.0  # the pipeline idle, waiting on the server: what prefetch is to hide
        # Committed (or set aside) and still in the folder: moved out together (MOVE_COUNT).
        moving: list[int] = []
        setting_aside: list[tuple[int, str]] = []
        gathered_since = time.monotonic()
        try:
            nxt = chain.then(lambda: self._fetch_batch(todo)) if todo else None
            while nxt is not None:
                t0 = time.perf_counter()
                batch, data, size = await nxt
                waited += time.perf_counter() - t0
                batches += 1
                nxt = chain.then(lambda: self._fetch_batch(todo)) if todo else None
                deferred += await self._offer_all(batch, size, data, moving, setting_aside)
                due = (
                    nxt is None
                    or len(moving) + len(setting_aside) >= MOVE_COUNT
                    or time.monotonic() - gathered_since >= MOVE_AFTER
                )
                if due and (moving or setting_aside):
                    if moving:
                        crash_point(IMAP_AFTER_COMMIT_BEFORE_MOVE)
                    d, a = sorted(moving), sorted(setting_aside)
                    chain.then(lambda d=d, a=a: self._settle(d, a))
                    moving, setting_aside = [], []
                    gathered_since = time.monotonic()
            t0 = time.perf_counter()
            await chain.finish()
            waited += time.perf_counter() - t0
        finally:
            chain.abandon()
        if uids:
            log.info(
                "imap.drained",
                tenant=w.tenant.slug,
                mailbox=w.box.key,
                messages=len(uids),
                batches=batches,
                deferred=deferred,
                secs=round(time.perf_counter() - started, 3),
                waited_on_server=round(waited, 3),
            )
        return deferred

    # -- the IMAP side (run inside the chain) -------------------------------------------

    async def _fetch_batch(
        self, todo: deque[int]
    ) -> tuple[list[int], dict[int, bytes], dict[int, int]]:
        """Take the next batch off ``todo``; fetch its bodies (not those too big); its sizes."""
        if todo[0] not in self.sizes:
            ask = [todo[i] for i in range(min(SIZE_CHUNK, len(todo)))]
            resp = await self.w.call(
                self.imap.uid("fetch", uid_set(ask), "(RFC822.SIZE)"), "FETCH SIZE"
            )
            self.sizes.update(sizes(resp))
            for uid in ask:
                self.sizes.setdefault(uid, 0)  # gone meanwhile: the body FETCH says so
        batch: list[int] = []
        total = 0
        while todo and len(batch) < FETCH_COUNT and todo[0] in self.sizes:
            size = self.sizes[todo[0]]
            if batch and total + size > FETCH_BYTES:
                break
            batch.append(todo.popleft())
            total += size
        wanted = [u for u in batch if self.sizes[u] <= self.w.max_size]
        data: dict[int, bytes] = {}
        if wanted:
            resp = await self.w.call(
                self.imap.uid("fetch", uid_set(wanted), "(UID BODY.PEEK[])"), "FETCH BODY"
            )
            data = bodies(resp)
        return batch, data, {uid: self.sizes.pop(uid) for uid in batch}

    async def _settle(self, done: list[int], aside: list[tuple[int, str]]) -> None:
        """After the batch's commits: move it out, save the position, audit quarantines."""
        w = self.w
        if done:
            await self._move(done, w.box.processed_folder)
            await self._advance(max(done))
            w.state.committed += len(done)
        if aside:
            await self._move([uid for uid, _ in aside], w.box.quarantine_folder)
            w.state.quarantined += len(aside)
            slug, key = w.tenant.slug, w.box.key

            def work(conn: Connection) -> None:
                for uid, reason in aside:
                    repos.add_audit(
                        conn,
                        slug,
                        "imap.quarantined",
                        actor=key,
                        detail={"uid": uid, "reason": reason},
                    )

            await w.writer.submit(work)
            for uid, reason in aside:
                log.warning("imap.quarantined", tenant=slug, mailbox=key, uid=uid, reason=reason)

    async def _move(self, uids: list[int], folder: str) -> None:
        call, imap, which = self.w.call, self.imap, uid_set(uids)
        if imap.has_capability("MOVE"):
            await call(imap.uid("move", which, folder), "UID MOVE")
            return
        await call(imap.uid("copy", which, folder), "UID COPY")
        await call(imap.uid("store", which, "+FLAGS.SILENT", r"(\Deleted)"), "UID STORE")
        if imap.has_capability("UIDPLUS"):
            await call(imap.uid("expunge", which), "UID EXPUNGE")
        else:
            await call(imap.expunge(), "EXPUNGE")

    async def _advance(self, uid: int) -> None:
        slug, key, uidvalidity = self.w.tenant.slug, self.w.box.key, self.uidvalidity

        def work(conn: Connection) -> None:
            known = imap_state.imap_position(conn, slug, key)
            if known is None or known[1] < uid:
                imap_state.save_imap_position(conn, slug, key, uidvalidity, uid)

        await self.w.writer.submit(work)

    # -- the pipeline side ------------------------------------------------------------------

    async def _offer_all(
        self,
        batch: list[int],
        size: dict[int, int],
        data: dict[int, bytes],
        done: list[int],
        aside: list[tuple[int, str]],
    ) -> int:
        """The batch through the pipeline at once, committed in UID order; how many stay.
        What leaves the folder is added to ``done`` and ``aside``, which gather until the
        next move."""
        order = InOrder()
        offers = [
            asyncio.ensure_future(
                self._offer(uid, size[uid], data.pop(uid, None), done, aside, order.turn())
            )
            for uid in batch
        ]
        try:
            left = await asyncio.gather(*offers)
        except BaseException:  # the session is lost, or the drain cancelled: none goes on
            for offer in offers:
                offer.cancel()
            await asyncio.gather(*offers, return_exceptions=True)
            raise
        return left.count(False)

    async def _offer(
        self,
        uid: int,
        size: int,
        data: bytes | None,
        done: list[int],
        aside: list[tuple[int, str]],
        turn: Turn,
    ) -> bool:
        """Put the message through the pipeline; True when it is to leave the folder."""
        w = self.w
        outcome: Outcome
        try:
            if size > w.max_size:
                outcome = reject(Reason.TOO_BIG_TO_FETCH, size)
            elif data is None:  # expunged by another client meanwhile, or an answer misread
                log.warning("imap.no_body", tenant=w.tenant.slug, mailbox=w.box.key, uid=uid)
                return False  # offered again on the next pass, if it is still there
            else:
                outcome = await w.pipeline.process(self._raw(data), turn=turn)
        finally:
            turn.passed()
            w.state.backlog -= 1
        action = imap_action(outcome)
        if action is ImapAction.DONE:
            done.append(uid)
            w.state.failures.pop(uid, None)
            return True
        assert isinstance(outcome, Reject | Defer)
        if action is ImapAction.LEAVE:
            n = w.state.failures[uid] = w.state.failures.get(uid, 0) + 1
            if n < w.box.max_failures:
                return False
            aside.append((uid, quarantine(outcome, n).text))
        else:
            aside.append((uid, quarantine(outcome).text))
        w.state.failures.pop(uid, None)
        return True

    def _raw(self, data: bytes) -> RawMessage:
        """The envelope IMAP lost: Return-Path as sender, Delivered-To (plus-token kept) if ours."""
        box = self.w.box
        head = BytesHeaderParser().parsebytes(head_of(data))
        sender = getaddresses([str(head.get("Return-Path", "") or head.get("From", ""))])
        rcpt = box.address
        for value in head.get_all("Delivered-To") or []:
            addr = getaddresses([str(value)])[0][1].lower()
            local, _, domain = addr.partition("@")
            if f"{local.split('+', 1)[0]}@{domain}" == box.address:
                rcpt = addr
                break
        envelope = Envelope(
            mail_from=sender[0][1] if sender else "",
            rcpt_tos=(rcpt,),
            peer=f"imap:{box.host}",
        )
        return RawMessage(envelope, data, "imap")
