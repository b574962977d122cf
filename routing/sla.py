"""SLA targets and the clock arithmetic behind them: pure functions of datetimes.

A target such as "first response within 4 hours" means 4 *business* hours when
the tenant works office hours: a mail at Friday 16:30 with hours 09:00-17:00 is
due Monday 12:30, not Friday 20:30. The hours are wall-clock hours in the
tenant's time zone, so a working day is 8 hours long on the day the clocks
change too; around the clock ("24x7") counts real elapsed seconds.

Time the ticket spends waiting on the client (after an agent's reply, until the
client answers; see store/clocks.py) is taken off the resolution clock, never
off the first-response clock, which stops at the first reply anyway.

Everything here takes the time as an argument (never reads the clock) so the
tests can walk a ticket across weekends, holidays and DST changes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from routing.schema import Checker

__all__ = [
    "Calendar",
    "ClockState",
    "Pauses",
    "SlaPolicy",
    "SlaSettings",
    "SlaTarget",
    "add_business",
    "assess",
    "business_seconds",
    "format_duration",
    "parse_duration",
    "parse_sla",
]

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DURATION = re.compile(r"^(?:(\d+)d)?\s*(?:(\d+)h)?\s*(?:(\d+)m)?$")
_HOURS = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")
# A deadline further away than this is a configuration nobody meant (no working day at all).
_HORIZON_DAYS = 3 * 366
DIGEST_EVERY = 15 * 60.0  # seconds: ``[tenants.sla] digest_every`` when not given ("15m")
# Waiting-on-the-client periods, oldest first; the last one may still be open (None).
Pauses = Sequence[tuple[datetime, datetime | None]]


@dataclass(frozen=True, slots=True)
class Calendar:
    """When the clock runs: always (``tz`` None), or on working days' office hours."""

    tz: ZoneInfo | None = None
    days: frozenset[int] = frozenset(range(5))  # 0 = Monday
    start: time = time(9, 0)
    end: time = time(17, 0)  # time(0, 0) with start 00:00 would be empty; 24:00 is time.max
    holidays: frozenset[date] = frozenset()

    @property
    def always(self) -> bool:
        return self.tz is None

    def windows(self, since: datetime, until: datetime) -> Iterable[tuple[datetime, datetime]]:
        """The working periods (UTC) that touch [since, until], in order."""
        assert self.tz is not None
        day = since.astimezone(self.tz).date() - timedelta(days=1)
        last = until.astimezone(self.tz).date() + timedelta(days=1)
        while day <= last:
            if day.weekday() in self.days and day not in self.holidays:
                # fold=0 and zoneinfo's normalisation: an hour that does not exist
                # (spring forward) moves on, one that exists twice takes the first.
                lo = datetime.combine(day, self.start, self.tz).astimezone(UTC)
                hi = (
                    datetime.combine(day + timedelta(days=1), time(0), self.tz)
                    if self.end == time.max
                    else datetime.combine(day, self.end, self.tz)
                ).astimezone(UTC)
                if hi > lo:
                    yield lo, hi
            day += timedelta(days=1)


def business_seconds(cal: Calendar, start: datetime, end: datetime) -> float:
    """Seconds of [start, end] inside the calendar's working time (0 if end <= start)."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)  # never wall-clock arithmetic
    if end <= start:
        return 0.0
    if cal.always:
        return (end - start).total_seconds()
    total = 0.0
    for lo, hi in cal.windows(start, end):
        a, b = max(lo, start), min(hi, end)
        if b > a:
            total += (b - a).total_seconds()
    return total


def add_business(cal: Calendar, start: datetime, seconds: float) -> datetime:
    """The moment ``seconds`` of working time after ``start`` have passed (in UTC)."""
    start = start.astimezone(UTC)
    if cal.always:
        return start + timedelta(seconds=seconds)
    left = max(0.0, seconds)
    cursor = start
    horizon = start + timedelta(days=_HORIZON_DAYS)
    while cursor < horizon:
        chunk_end = min(cursor + timedelta(days=31), horizon)
        for lo, hi in cal.windows(cursor, chunk_end):
            a = max(lo, cursor)
            if hi <= a:
                continue
            span = (hi - a).total_seconds()
            if left <= span:
                return a + timedelta(seconds=left)
            left -= span
        cursor = chunk_end
    raise ValueError("no working time within three years: check the SLA calendar")


def _paused(cal: Calendar, pauses: Pauses, until: datetime) -> float:
    return sum(business_seconds(cal, a, min(b or until, until)) for a, b in pauses)


@dataclass(frozen=True, slots=True)
class SlaPolicy:
    """The targets (seconds of calendar time) for one kind of ticket."""

    calendar: Calendar = field(default_factory=Calendar)
    first_response: float | None = None
    resolution: float | None = None
    warn_before: float = 0.0  # a warning this long before a target is missed; 0: none


@dataclass(frozen=True, slots=True)
class SlaTarget:
    """An override for a queue and/or a priority; the first that matches wins."""

    policy: SlaPolicy
    queue: str | None = None
    priority: str | None = None

    def matches(self, queue: str | None, priority: str | None) -> bool:
        return (self.queue is None or self.queue == queue) and (
            self.priority is None or self.priority == priority
        )


@dataclass(frozen=True, slots=True)
class SlaSettings:
    default: SlaPolicy
    targets: tuple[SlaTarget, ...] = ()
    # At most one mail of SLA alerts per agent this often (outbound/sla_watch.py): a
    # burst of warnings and breaches comes as one digest, never as a storm.
    digest_every: float = DIGEST_EVERY

    def policy_for(self, queue: str | None, priority: str | None) -> SlaPolicy:
        for t in self.targets:
            if t.matches(queue, priority):
                return t.policy
        return self.default


@dataclass(frozen=True, slots=True)
class ClockState:
    """One clock of one ticket at one moment.

    state: ``met`` (stopped within target), ``missed`` (stopped late), ``running``,
    ``warning`` (running, within warn_before of the target), ``breached`` (running,
    past it), ``paused`` (waiting on the client).
    """

    clock: str  # first_response | resolution
    state: str
    elapsed: float  # calendar seconds counted so far (or until it stopped)
    target: float
    due_at: datetime | None  # None when stopped or paused

    @property
    def late(self) -> bool:
        return self.state in ("missed", "breached")


def assess(
    policy: SlaPolicy,
    *,
    created_at: datetime,
    now: datetime,
    first_response_at: datetime | None,
    resolved_at: datetime | None,
    pauses: Pauses = (),
) -> list[ClockState]:
    """Where each of the ticket's clocks stands at ``now``."""
    cal = policy.calendar
    out: list[ClockState] = []
    if policy.first_response is not None:
        # Closing a ticket without a word to the client (spam, a duplicate) stops this
        # clock too; it is late only if it was late when closed.
        out.append(
            _state(
                "first_response", policy.first_response, policy.warn_before, cal, created_at,
                first_response_at or resolved_at, now, (),
            )
        )  # fmt: skip
    if policy.resolution is not None:
        out.append(
            _state(
                "resolution", policy.resolution, policy.warn_before, cal, created_at,
                resolved_at, now, pauses,
            )
        )  # fmt: skip
    return out


def _state(
    clock: str,
    target: float,
    warn: float,
    cal: Calendar,
    start: datetime,
    stopped: datetime | None,
    now: datetime,
    pauses: Pauses,
) -> ClockState:
    until = stopped or now
    elapsed = max(0.0, business_seconds(cal, start, until) - _paused(cal, pauses, until))
    if stopped is not None:
        return ClockState(clock, "met" if elapsed <= target else "missed", elapsed, target, None)
    if pauses and pauses[-1][1] is None:
        state = "breached" if elapsed > target else "paused"
        return ClockState(clock, state, elapsed, target, None)
    due = add_business(cal, now, target - elapsed) if elapsed < target else None
    if elapsed >= target:
        return ClockState(clock, "breached", elapsed, target, due)
    if warn and target - elapsed <= warn:
        return ClockState(clock, "warning", elapsed, target, due)
    return ClockState(clock, "running", elapsed, target, due)


def parse_duration(text: str) -> float | None:
    """``"4h"``, ``"1h30m"``, ``"2d"`` (2 x 24 hours of calendar time) -> seconds."""
    m = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if m is None or not any(m.groups()):
        return None
    d, h, mi = (int(x or 0) for x in m.groups())
    return float(((d * 24 + h) * 60 + mi) * 60)


def format_duration(seconds: float | None) -> str:
    """Hours and minutes, as a manager reads a response time: ``3h 05m``."""
    if seconds is None:
        return "-"
    minutes = round(seconds / 60)
    h, m = divmod(minutes, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m"


def parse_sla(
    c: Checker, raw: Any, base: str, *, queues: Sequence[str], priorities: Sequence[str]
) -> SlaSettings | None:
    """``[tenants.sla]`` with its ``[[tenants.sla.targets]]``; errors go to the checker."""
    if raw is None:
        return None
    if c.table(raw, base) is None:
        return None
    allowed = {
        "calendar", "timezone", "hours", "days", "holidays", "first_response", "resolution",
        "warn_before", "targets", "digest_every",
    }  # fmt: skip
    c.unknown(raw, allowed, base)
    digest_every = DIGEST_EVERY
    if "digest_every" in raw:
        every = raw["digest_every"]
        digest_every = (parse_duration(every) if isinstance(every, str) else None) or 0.0
        if digest_every <= 0:
            c.error(f"{base}.digest_every", "expected a duration such as '15m', '1h' or '1h30m'")
    calendar = _calendar(c, raw, base, None)
    default = _policy(c, raw, base, calendar, None)
    targets: list[SlaTarget] = []
    for _, tb, t in c.tables(raw.get("targets", []), f"{base}.targets", "tenants.sla.targets"):
        c.unknown(t, allowed - {"targets", "digest_every"} | {"queue", "priority"}, tb)
        queue, priority = t.get("queue"), t.get("priority")
        if queue is not None and queue not in queues:
            c.error(f"{tb}.queue", f"unknown queue {queue!r}")
        if priority is not None and priority not in priorities:
            c.error(f"{tb}.priority", f"must be one of {', '.join(priorities)}")
        if queue is None and priority is None:
            c.error(tb, "a target names a queue, a priority or both")
        cal = _calendar(c, t, tb, calendar) if _CAL_KEYS & t.keys() else calendar
        targets.append(SlaTarget(_policy(c, t, tb, cal, default), queue, priority))
    return SlaSettings(default=default, targets=tuple(targets), digest_every=digest_every)


_CAL_KEYS = {"calendar", "timezone", "hours", "days", "holidays"}


def _calendar(c: Checker, raw: dict[str, Any], base: str, parent: Calendar | None) -> Calendar:
    kind = raw.get("calendar", "business" if parent is None or not parent.always else "24x7")
    if kind not in ("business", "24x7"):
        c.error(f"{base}.calendar", "must be 'business' or '24x7'")
        return Calendar()
    if kind == "24x7":
        for key in ("hours", "days", "holidays"):
            if key in raw:
                c.error(f"{base}.{key}", "only for calendar = 'business'")
        return Calendar(tz=None)
    inherit = parent if parent is not None and not parent.always else Calendar(tz=ZoneInfo("UTC"))
    tz = inherit.tz
    if "timezone" in raw:
        try:
            tz = ZoneInfo(str(raw["timezone"]))
        except (ZoneInfoNotFoundError, ValueError):
            c.error(f"{base}.timezone", f"unknown time zone {raw['timezone']!r}")
    start, end = inherit.start, inherit.end
    if "hours" in raw:
        m = _HOURS.match(str(raw["hours"]))
        if m is None:
            c.error(f"{base}.hours", "expected HH:MM-HH:MM, for example 09:00-17:00")
        else:
            h1, m1, h2, m2 = (int(x) for x in m.groups())
            start = time(h1, m1)
            if (h2, m2) == (24, 0):
                end = time.max
            elif h2 < 24 and time(h2, m2) > start:
                end = time(h2, m2)
            else:
                c.error(f"{base}.hours", "the end must come after the start (24:00 at most)")
    days = inherit.days
    if "days" in raw:
        names = raw["days"]
        if not isinstance(names, list) or not names or any(d not in _DAYS for d in names):
            c.error(f"{base}.days", f"expected a list from {list(_DAYS)}")
        else:
            days = frozenset(_DAYS.index(d) for d in names)
    holidays = inherit.holidays
    if "holidays" in raw:
        values = raw["holidays"]
        parsed: set[date] = set()
        if not isinstance(values, list):
            c.error(f"{base}.holidays", "expected a list of dates (2026-12-25)")
            values = []
        for v in values:
            if isinstance(v, date) and not isinstance(v, datetime):
                parsed.add(v)
                continue
            try:
                parsed.add(date.fromisoformat(str(v)))
            except ValueError:
                c.error(f"{base}.holidays", f"{v!r} is not a date (YYYY-MM-DD)")
        holidays = frozenset(parsed)
    return Calendar(tz=tz, days=days, start=start, end=end, holidays=holidays)


def _policy(
    c: Checker, raw: dict[str, Any], base: str, cal: Calendar, parent: SlaPolicy | None
) -> SlaPolicy:
    values: dict[str, float | None] = {}
    for key in ("first_response", "resolution", "warn_before"):
        if key not in raw:
            values[key] = getattr(parent, key) if parent is not None else None
            continue
        seconds = parse_duration(raw[key]) if isinstance(raw[key], str) else None
        if seconds is None or (key != "warn_before" and seconds <= 0):
            c.error(f"{base}.{key}", "expected a duration such as '4h', '30m', '1h30m' or '2d'")
        values[key] = seconds
    return SlaPolicy(
        calendar=cal,
        first_response=values["first_response"],
        resolution=values["resolution"],
        warn_before=values["warn_before"] or 0.0,
    )
