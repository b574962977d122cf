"""``gateway import``: a support mailbox's history, through the same pipeline as live mail.

The same pipeline means the same dedupe, scanning and threading, so an
import that stops halfway (Ctrl-C, a deferred message) is finished by running
it again. What differs is only that history never emails anyone (the
pipeline checks ``source == "import"``) and that messages go in parents
first (``sources.import_order``).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from gateway.clock import system_clock
from gateway.intake.big_mail import BUDGET as BIG_MAIL_BUDGET
from gateway.intake.in_order import InOrder, Turn
from gateway.intake.parse_pool import parse_pool
from gateway.ops.sources import Entry, MailSource, envelope_sender, import_order, index
from parsers.types import Envelope, RawMessage
from routing import language
from routing.config import GatewayConfig
from routing.sla import parse_duration
from routing.verdicts import Accepted, Defer, Outcome, Reject
from store.history import settle_imported

__all__ = ["OPEN_SINCE", "BarProgress", "Progress", "Summary", "open_since", "run_import"]

OPEN_SINCE = "30d"  # the default of --open-since: a month-old conversation is over

# Messages in the pipeline at once, and their raw bytes: enough for the writer to commit
# them together and for scans to overlap. The bytes no more than big mail's budget
# (gateway/intake/big_mail.py): a message waiting for its parent starts late, and must
# not find that budget held by a later message, which waits for this one's commit.
WINDOW = 32
WINDOW_BYTES = BIG_MAIL_BUDGET

WAITS_FOR_PARENT = "waits for a deferred message it answers"


@dataclass
class Summary:
    """Every message read lands in exactly one count, so the counts add up to ``read``."""

    path: str
    format: str
    tenant: str
    read: int = 0
    opened: int = 0
    threaded: Counter[str] = field(default_factory=Counter)  # by token | references | tag
    recorded: int = 0  # machine mail kept without a ticket
    duplicates: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # by reply text
    deferred: Counter[str] = field(default_factory=Counter)
    flagged: Counter[str] = field(default_factory=Counter)  # notes, not a count of their own
    seconds: float = 0.0
    dated: int = 0  # tickets of the import given their own dates (store/history.py)
    closed: int = 0  # of those, closed: no message since --open-since
    refs: set[str] = field(default_factory=set, repr=False)  # tickets this import touched

    def count(self, outcome: Outcome) -> str | None:
        """Add one message; return the problem text for a refused or deferred one."""
        if isinstance(outcome, Accepted):
            for stored in outcome.stored[:1]:  # one recipient, one tenant
                self.flagged.update(stored.flagged)
                if stored.ticket_ref is not None and not stored.duplicate:
                    self.refs.add(stored.ticket_ref)
                if stored.duplicate:
                    self.duplicates += 1
                elif stored.thread_by == "new":
                    self.opened += 1
                elif stored.ticket_ref is None:
                    self.recorded += 1
                else:
                    self.threaded[stored.thread_by] += 1
            return None
        reason = f"{outcome.code} {outcome.enhanced} {outcome.text}"
        (self.refused if isinstance(outcome, Reject) else self.deferred)[reason] += 1
        return reason

    @property
    def accounted(self) -> int:
        return (
            self.opened
            + self.threaded.total()
            + self.recorded
            + self.duplicates
            + self.refused.total()
            + self.deferred.total()
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "tenant": self.tenant,
            "messages_read": self.read,
            "tickets_opened": self.opened,
            "replies_threaded": self.threaded.total(),
            "threaded_by": dict(sorted(self.threaded.items())),
            "recorded_without_ticket": self.recorded,
            "duplicates": self.duplicates,
            "refused": self.refused.total(),
            "refused_by_reason": dict(self.refused.most_common()),
            "deferred": self.deferred.total(),
            "deferred_by_reason": dict(self.deferred.most_common()),
            "flagged": dict(sorted(self.flagged.items())),
            "tickets_dated": self.dated,
            "tickets_closed": self.closed,
            "seconds": round(self.seconds, 2),
            "messages_per_second": round(self.read / self.seconds, 1) if self.seconds else None,
        }

    def lines(self) -> list[str]:
        rate = f", {self.read / self.seconds:.0f} msg/s" if self.seconds else ""
        by = ", ".join(f"{k} {v}" for k, v in sorted(self.threaded.items()))
        out = [
            f"imported {self.path} ({self.format}) into {self.tenant} "
            f"in {self.seconds:.1f} s{rate}",
            f"  messages read            {self.read:>7}",
            f"  tickets opened           {self.opened:>7}",
            f"  replies threaded         {self.threaded.total():>7}" + (f"  ({by})" if by else ""),
            f"  recorded without ticket  {self.recorded:>7}  (auto-replies, bounces)",
            f"  duplicates               {self.duplicates:>7}  (already present)",
            f"  refused                  {self.refused.total():>7}",
            *(f"    {n:>5}  {reason}" for reason, n in self.refused.most_common()),
            f"  deferred                 {self.deferred.total():>7}"
            + ("  (run the same import again to finish)" if self.deferred else ""),
            *(f"    {n:>5}  {reason}" for reason, n in self.deferred.most_common()),
            f"  tickets closed as old    {self.closed:>7}  (of {self.dated} dated by their mail)",
        ]
        out += [f"  flagged {what}: {n}" for what, n in sorted(self.flagged.items())]
        return out


class Progress:
    """What ``run_import`` reports as it goes: problems as plain stderr lines, no bar
    (a cron job or a pipe wants lines it can grep, not redrawn bars)."""

    def phase(self, name: str, total: int) -> None:
        pass

    def advance(self) -> None:
        pass

    def problem(self, text: str) -> None:
        print(f"gateway: import: {text}", file=sys.stderr)

    def close(self) -> None:
        pass


class BarProgress(Progress):
    """A rich progress bar on stderr, for a person at a terminal; problems print above it."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as Bar

        self._bar = Bar(
            TextColumn("{task.description:<16}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self._bar.start()
        self._task: Any = None

    def phase(self, name: str, total: int) -> None:
        if self._task is not None:
            self._bar.update(self._task, completed=self._bar.tasks[-1].total)
        self._task = self._bar.add_task(name, total=total)

    def advance(self) -> None:
        self._bar.advance(self._task)

    def problem(self, text: str) -> None:
        self._bar.console.print(f"gateway: import: {text}", markup=False, highlight=False)

    def close(self) -> None:
        self._bar.stop()


def open_since(text: str, now: datetime) -> datetime:
    """``--open-since``: a duration back from now ("30d", "12h") or a date ("2024-03-01",
    midnight UTC) or an ISO moment; ValueError with the accepted forms otherwise."""
    seconds = parse_duration(text)
    if seconds is not None:
        return now - timedelta(seconds=seconds)
    try:
        if len(text.strip()) == 10:
            day = date.fromisoformat(text.strip())
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--open-since {text!r}: expected a duration such as '30d' or '12h', "
            "or a date such as 2024-03-01"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def run_import(
    config: GatewayConfig,
    source: MailSource,
    tenant: str,
    rcpt: str,
    progress: Progress | None = None,
    since: datetime | None = None,
) -> Summary:
    """Import in parents-first order, up to ``WINDOW`` messages at a time, each committed in
    that order; then give the tickets it touched their own dates and close those quiet
    since ``since`` (``--open-since``, default 30 days back).

    The commits keep the import's order (``gateway/intake/in_order.py``), so ticket
    numbers follow the messages' dates as one at a time did, while the commits share
    the writer's transactions and the scans overlap.
    """
    from gateway.services import open_services

    progress = progress or Progress()
    started = time.perf_counter()
    summary = Summary(str(source.path), source.kind, tenant)
    locators = source.locators()
    progress.phase("reading headers", len(locators))
    entries: list[Entry] = []
    for entry in index(source, locators):
        entries.append(entry)
        progress.advance()
    order = import_order(entries)
    progress.phase("importing", len(order))
    # The daemon's parse workers ([gateway] parse_workers): with a window in flight the
    # import is no longer one core's work (the loop and the writer share one GIL). Not
    # for a window's worth or less: starting them (~0.7 s) would cost more than they save.
    workers = config.parse_workers if len(order) > WINDOW else 0
    tell = language.wanted(config.tenants)
    async with (
        open_services(config) as services,
        parse_pool(workers, language=tell) as pool,
    ):
        services.pipeline.parse_pool = pool
        run = _Run(source, rcpt, services.pipeline.process, summary, progress)
        await run.all(order)
        if summary.refs:
            now = system_clock()()
            cutoff = since or open_since(OPEN_SINCE, now)
            refs = summary.refs
            settled = await services.writer.submit(
                lambda c: settle_imported(c, tenant, refs, cutoff, now)
            )
            summary.dated, summary.closed = settled.dated, settled.closed
    summary.seconds = time.perf_counter() - started
    return summary


class _Run:
    def __init__(
        self,
        source: MailSource,
        rcpt: str,
        process: Callable[..., Awaitable[Outcome]],
        summary: Summary,
        progress: Progress,
    ) -> None:
        self.source = source
        self.rcpt = rcpt
        self.process = process
        self.summary = summary
        self.progress = progress
        self.held: set[int] = set()  # positions deferred, directly or through a parent
        self.running: dict[int, asyncio.Future[None]] = {}  # positions in flight

    async def all(self, order: list[Entry]) -> None:
        """``order`` through the pipeline, a window of it at a time, committed in order. The
        progress moves as each leaves the window (in order); a problem prints as it ends."""
        turns = InOrder()
        flying: deque[tuple[asyncio.Future[None], int]] = deque()
        held_bytes = 0
        try:
            for entry in order:
                data: bytes | OSError | KeyError
                try:
                    data = self.source.read(entry.locator)
                except (OSError, KeyError) as exc:
                    data = exc
                size = len(data) if isinstance(data, bytes) else 0
                while flying and (len(flying) >= WINDOW or held_bytes + size > WINDOW_BYTES):
                    done, n = flying.popleft()
                    await done
                    held_bytes -= n
                    self.progress.advance()
                # Its parents in flight, taken now: only those ahead of it in the order.
                # Asked inside ``one``, a reference cycle (each message naming the other,
                # cut by ``import_order``) would have each wait on the other, for ever.
                parents = [f for p in entry.parents if (f := self.running.get(p)) is not None]
                task = asyncio.ensure_future(self.one(entry, data, parents, turns.turn()))
                self.running[entry.position] = task
                task.add_done_callback(lambda _t, at=entry.position: self.running.pop(at, None))
                flying.append((task, size))
                held_bytes += size
            while flying:
                await flying.popleft()[0]
                self.progress.advance()
        except BaseException:  # Ctrl-C, or a fault of the store's: none goes on
            for task, _ in flying:
                task.cancel()
            await asyncio.gather(*(t for t, _ in flying), return_exceptions=True)
            raise

    async def one(
        self,
        entry: Entry,
        data: bytes | OSError | KeyError,
        parents: list[asyncio.Future[None]],
        turn: Turn,
    ) -> None:
        """A message whose parent was deferred is deferred too: imported now, it would open
        a ticket of its own, and the rerun that brings the parent could no longer move it
        (it would be a duplicate by then). A parent still in flight (``parents``) is
        waited for: only its outcome says."""
        try:
            self.summary.read += 1
            if parents:
                await asyncio.wait(parents)
            if any(p in self.held for p in entry.parents):
                self._defer(entry, WAITS_FOR_PARENT)
                return
            if not isinstance(data, bytes):
                self._defer(entry, f"cannot read: {getattr(data, 'strerror', None) or data}")
                return
            envelope = Envelope(mail_from=envelope_sender(data), rcpt_tos=(self.rcpt,))
            outcome = await self.process(RawMessage(envelope, data, "import"), turn=turn)
        finally:
            turn.passed()  # ended without a commit, or after it: the next one's turn
        if isinstance(outcome, Defer):
            self.held.add(entry.position)
        reason = self.summary.count(outcome)
        if reason is not None:
            verb = "deferred" if isinstance(outcome, Defer) else "refused"
            self.progress.problem(f"{self.source.name(entry.locator)}: {verb}: {reason}")

    def _defer(self, entry: Entry, reason: str) -> None:
        self.held.add(entry.position)
        self.summary.deferred[reason] += 1
        self.progress.problem(f"{self.source.name(entry.locator)}: deferred: {reason}")
