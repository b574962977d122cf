"""The month's figures for ``gateway report``, from the tickets' SLA clocks
(store/clocks.py), measured on the tenant's SLA calendar: response and resolution
times are the time the tenant promised to count (business hours, or around the
clock), and resolution leaves out the time spent waiting on the client. Tickets of
a tenant without an SLA are measured around the clock.

Percentiles are nearest-rank (the value below which p% of tickets fall, always one
of the measured times), which is what "90% answered within" means to a reader.
"""

from __future__ import annotations

import calendar as cal_mod
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Connection

from routing.config import GatewayConfig, Tenant
from routing.sla import Calendar, SlaPolicy, assess
from store import reports as store_reports

__all__ = [
    "MONTH",
    "Group",
    "MonthStats",
    "ReportError",
    "collect",
    "month_bounds",
    "percentile",
    "previous_month",
]

MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_AROUND_THE_CLOCK = SlaPolicy(calendar=Calendar())


class ReportError(Exception):
    """A report cannot be made; the message is for the operator, as is."""


def month_bounds(month: str, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """[first instant, first instant of the next month), in UTC, for the tenant's zone."""
    m = MONTH.match(month)
    if m is None:
        raise ReportError(f"month {month!r}: expected YYYY-MM")
    year, mon = int(m.group(1)), int(m.group(2))
    start = datetime(year, mon, 1, tzinfo=tz)
    nxt = datetime(year + (mon == 12), mon % 12 + 1, 1, tzinfo=tz)
    return start.astimezone(UTC), nxt.astimezone(UTC)


def previous_month(now: datetime, tz: ZoneInfo) -> str:
    local = now.astimezone(tz)
    first = local.replace(day=1)
    last = first - timedelta(days=1)
    return f"{last.year:04d}-{last.month:02d}"


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Group:
    """Figures for the whole tenant, one queue or one agent."""

    opened: int = 0
    closed: int = 0
    first_response: list[float] = field(default_factory=list)
    resolution: list[float] = field(default_factory=list)
    fr_met: int = 0
    fr_missed: int = 0
    res_met: int = 0
    res_missed: int = 0
    replies: int = 0
    closed_by: int = 0  # agents: tickets they closed with #close

    def attainment(self, which: str) -> float | None:
        met, missed = (
            (self.fr_met, self.fr_missed)
            if which == "first_response"
            else (self.res_met, self.res_missed)
        )
        return 100.0 * met / (met + missed) if met + missed else None


@dataclass
class MonthStats:
    tenant: str
    tenant_name: str
    month: str
    timezone: str
    has_sla: bool
    total: Group
    queues: dict[str, Group]
    agents: dict[str, Group]
    per_day_opened: list[int]
    per_day_closed: list[int]
    hours: list[int]  # client messages per hour of day (tenant's zone)
    weekdays: list[int]
    generated_at: datetime


def collect(
    conn: Connection, config: GatewayConfig, tenant: Tenant, month: str, now: datetime
) -> MonthStats:
    tz = ZoneInfo(tenant.reports.timezone)
    start, end = month_bounds(month, tz)
    days = cal_mod.monthrange(*(int(x) for x in month.split("-")))[1]
    total, queues, agents = Group(), defaultdict(Group), defaultdict(Group)
    opened_day, closed_day = [0] * days, [0] * days
    for t in store_reports.month_tickets(conn, tenant.slug, start, end):
        policy = (
            tenant.sla.policy_for(t["queue"], t["priority"]) if tenant.sla else _AROUND_THE_CLOCK
        )
        groups = [total, queues[t["queue"]]]
        states = {
            s.clock: s
            for s in assess(
                SlaPolicy(
                    calendar=policy.calendar,
                    first_response=policy.first_response or 1.0,
                    resolution=policy.resolution or 1.0,
                ),
                created_at=t["created_at"],
                now=min(now, end),
                first_response_at=t["first_response_at"],
                resolved_at=t["resolved_at"],
                pauses=t["pauses"],
            )
        }
        if start <= t["created_at"] < end:
            opened_day[(t["created_at"].astimezone(tz).day) - 1] += 1
            fr = states["first_response"]
            responder = [agents[t["first_response_by"]]] if t["first_response_by"] else []
            for g in groups:
                g.opened += 1
            if t["first_response_at"] is not None:
                for g in groups + responder:
                    g.first_response.append(fr.elapsed)
            if policy.first_response is not None:
                # Answered: met or missed. Unanswered: missed once late (closed late, or
                # still open past the target at the month's end), else not counted yet.
                late = fr.elapsed > policy.first_response
                if t["first_response_at"] is not None or late:
                    for g in groups + responder:
                        if late:
                            g.fr_missed += 1
                        else:
                            g.fr_met += 1
        if t["resolved_at"] is not None and start <= t["resolved_at"] < end:
            closed_day[t["resolved_at"].astimezone(tz).day - 1] += 1
            res = states["resolution"]
            for g in groups:
                g.closed += 1
                g.resolution.append(res.elapsed)
                if policy.resolution is not None:
                    if res.elapsed > policy.resolution:
                        g.res_missed += 1
                    else:
                        g.res_met += 1
    for addr, n in store_reports.agent_replies(conn, tenant.slug, start, end).items():
        agents[addr].replies += n
    for addr, n in store_reports.agent_closes(conn, tenant.slug, start, end).items():
        agents[addr].closed_by += n
    hours, weekdays = [0] * 24, [0] * 7
    for ts in store_reports.client_message_times(conn, tenant.slug, start, end):
        local = ts.astimezone(tz)
        hours[local.hour] += 1
        weekdays[local.weekday()] += 1
    return MonthStats(
        tenant=tenant.slug,
        tenant_name=tenant.name,
        month=month,
        timezone=tenant.reports.timezone,
        has_sla=tenant.sla is not None,
        total=total,
        queues=dict(sorted(queues.items())),
        agents=dict(sorted(agents.items())),
        per_day_opened=opened_day,
        per_day_closed=closed_day,
        hours=hours,
        weekdays=weekdays,
        generated_at=now,
    )
