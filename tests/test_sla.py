"""SLA clocks: business hours, weekends, holidays, DST changes, pauses, and their config.

The clock is always an argument here: a ticket is walked across a weekend and
the night the clocks change without waiting a second.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from routing.config import load_config
from routing.errors import ConfigError
from routing.sla import (
    Calendar,
    SlaPolicy,
    add_business,
    assess,
    business_seconds,
    parse_duration,
)

BERLIN = ZoneInfo("Europe/Berlin")
OFFICE = Calendar(tz=BERLIN, start=time(9), end=time(17))
H = 3600.0


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)  # type: ignore[misc]


def test_business_hours_skip_nights_and_the_weekend() -> None:
    friday_4pm = berlin(2026, 3, 13, 16, 0)
    monday_10am = berlin(2026, 3, 16, 10, 0)
    # Friday 16-17 and Monday 9-10: two working hours across a weekend.
    assert business_seconds(OFFICE, friday_4pm, monday_10am) == 2 * H
    # A 4-hour target from Friday 16:30 falls due Monday 12:30.
    assert add_business(OFFICE, berlin(2026, 3, 13, 16, 30), 4 * H) == berlin(2026, 3, 16, 12, 30)
    # Mail at Saturday noon starts counting on Monday at 9.
    assert add_business(OFFICE, berlin(2026, 3, 14, 12), 1 * H) == berlin(2026, 3, 16, 10)
    # Around the clock counts every second.
    assert business_seconds(Calendar(), friday_4pm, monday_10am) == 66 * H


def test_a_working_day_keeps_its_hours_when_the_clocks_change() -> None:
    # Europe/Berlin springs forward on Sunday 2026-03-29 and falls back on 2026-10-25.
    spring_fri, spring_mon = berlin(2026, 3, 27, 9), berlin(2026, 3, 30, 17)
    assert business_seconds(OFFICE, spring_fri, spring_mon) == 16 * H
    assert add_business(OFFICE, berlin(2026, 3, 27, 13), 8 * H) == berlin(2026, 3, 30, 13)
    # Around the clock, the short night is really an hour shorter (and the long one longer).
    assert business_seconds(Calendar(), berlin(2026, 3, 28, 12), berlin(2026, 3, 29, 12)) == 23 * H
    assert (
        business_seconds(Calendar(), berlin(2026, 10, 24, 12), berlin(2026, 10, 25, 12)) == 25 * H
    )
    # A seven-day calendar open at night sees the same: 02:00-03:00 does not exist on the 29th.
    nights = Calendar(tz=BERLIN, days=frozenset(range(7)), start=time(0), end=time.max)
    assert business_seconds(nights, berlin(2026, 3, 29, 0), berlin(2026, 3, 29, 12)) == 11 * H


def test_the_same_instant_counts_in_the_tenant_zone_not_the_server_zone() -> None:
    tokyo = Calendar(tz=ZoneInfo("Asia/Tokyo"), start=time(9), end=time(17))
    # Monday 09:00 UTC is 18:00 in Tokyo (closed) and 10:00 in Berlin (open).
    start = datetime(2026, 3, 16, 9, tzinfo=UTC)
    end = start + timedelta(hours=1)
    assert business_seconds(tokyo, start, end) == 0
    assert business_seconds(OFFICE, start, end) == H


def test_holidays_do_not_count() -> None:
    xmas = Calendar(
        tz=BERLIN,
        start=time(9),
        end=time(17),
        holidays=frozenset({date(2026, 12, 24), date(2026, 12, 25)}),
    )
    # Wednesday 23rd 16:00 + 2h: Thursday and Friday are holidays, so Monday 28th 10:00.
    assert add_business(xmas, berlin(2026, 12, 23, 16), 2 * H) == berlin(2026, 12, 28, 10)


def test_waiting_on_the_client_pauses_resolution_not_first_response() -> None:
    policy = SlaPolicy(calendar=OFFICE, first_response=2 * H, resolution=8 * H, warn_before=H)
    created = berlin(2026, 3, 16, 9)  # Monday
    replied = berlin(2026, 3, 16, 10)  # the agent asks a question: the ticket waits
    answered = berlin(2026, 3, 17, 15)  # Tuesday: the client answers, 13 working hours later
    now = berlin(2026, 3, 17, 16)
    first, resolution = assess(
        policy,
        created_at=created,
        now=now,
        first_response_at=replied,
        resolved_at=None,
        pauses=[(replied, answered)],
    )
    assert (first.state, first.elapsed) == ("met", H)
    # 15 working hours have passed, 13 of them waiting: 2 count.
    assert resolution.elapsed == 2 * H and resolution.state == "running"
    assert resolution.due_at == berlin(2026, 3, 18, 14)  # Tuesday 16-17, Wednesday 9-14
    # While still waiting, the clock is paused and nothing falls due.
    (_, waiting) = assess(
        policy,
        created_at=created,
        now=now,
        first_response_at=replied,
        resolved_at=None,
        pauses=[(replied, None)],
    )
    assert (waiting.state, waiting.elapsed, waiting.due_at) == ("paused", H, None)


def test_warning_then_breach_then_missed() -> None:
    policy = SlaPolicy(calendar=OFFICE, first_response=4 * H, warn_before=H)
    created = berlin(2026, 3, 13, 15)  # Friday 15:00: 2 hours on Friday, due Monday 11:00

    def state(now: datetime, replied: datetime | None = None) -> str:
        (s,) = assess(
            policy, created_at=created, now=now, first_response_at=replied, resolved_at=None
        )
        return s.state

    assert state(berlin(2026, 3, 13, 16, 59)) == "running"
    assert state(berlin(2026, 3, 15, 23)) == "running"  # the weekend does not count
    assert state(berlin(2026, 3, 16, 10, 30)) == "warning"
    assert state(berlin(2026, 3, 16, 11, 1)) == "breached"
    assert state(berlin(2026, 3, 16, 12), replied=berlin(2026, 3, 16, 10, 59)) == "met"
    assert state(berlin(2026, 3, 16, 12), replied=berlin(2026, 3, 16, 11, 30)) == "missed"


def test_durations() -> None:
    assert parse_duration("4h") == 4 * H
    assert parse_duration("1h30m") == 1.5 * H
    assert parse_duration("2d") == 48 * H
    assert parse_duration("45m") == 0.75 * H
    for bad in ("", "4", "h", "4 hours", "-1h"):
        assert parse_duration(bad) is None


SLA_CONFIG = """
[[tenants]]
slug = "acme"
addresses = ["support@acme.test"]

[[tenants.queues]]
name = "billing"

[tenants.sla]
timezone = "Europe/Berlin"
hours = "08:30-18:00"
days = ["mon", "tue", "wed", "thu", "fri"]
holidays = [2026-12-25, "2026-12-26"]
first_response = "4h"
resolution = "2d"
warn_before = "30m"
digest_every = "1h"

[[tenants.sla.targets]]
priority = "urgent"
calendar = "24x7"
first_response = "1h"

[[tenants.sla.targets]]
queue = "billing"
resolution = "8h"

[tenants.reports]
monthly = true
recipients = ["boss@acme.test"]
timezone = "Europe/Berlin"
"""


def test_sla_config_per_tenant_queue_and_priority(tmp_path: Path) -> None:
    p = tmp_path / "gateway.toml"
    p.write_text(SLA_CONFIG, encoding="utf-8")
    cfg = load_config(p)
    sla = cfg.tenants[0].sla
    assert sla is not None
    d = sla.default
    assert d.calendar.tz == BERLIN and d.calendar.start == time(8, 30)
    assert date(2026, 12, 25) in d.calendar.holidays and date(2026, 12, 26) in d.calendar.holidays
    assert (d.first_response, d.resolution, d.warn_before) == (4 * H, 48 * H, 0.5 * H)
    urgent = sla.policy_for("default", "urgent")
    assert urgent.calendar.always and urgent.first_response == H and urgent.resolution == 48 * H
    billing = sla.policy_for("billing", "normal")
    assert billing.resolution == 8 * H and billing.calendar == d.calendar
    assert sla.policy_for("default", "normal") is d
    assert sla.digest_every == H
    assert cfg.tenants[0].reports.recipients == ("boss@acme.test",)


def test_sla_and_jobs_config_errors_name_their_lines(tmp_path: Path) -> None:
    p = tmp_path / "gateway.toml"
    p.write_text(
        """[gateway]
data_dir = "var"

[backup]
enabled = true
key_file = "var/backup.key"
keep = 0

[[tenants]]
slug = "acme"
addresses = ["support@acme.test"]

[tenants.sla]
timezone = "Mars/Olympus"
hours = "17:00-09:00"
first_response = "soon"

[[tenants.sla.targets]]
queue = "nope"
first_response = "1h"
digest_every = "1h"

[tenants.reports]
monthly = true
""",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        load_config(p)
    problems = info.value.problems
    expected = [
        f"{p}:4: backup.dir: required when backups are enabled",
        f"{p}:6: backup.key_file: must not be inside the data directory: keep it apart",
        f"{p}:7: backup.keep: must be 1 or more",
        f"{p}:14: tenants[0].sla.timezone: unknown time zone 'Mars/Olympus'",
        f"{p}:15: tenants[0].sla.hours: the end must come after the start (24:00 at most)",
        f"{p}:16: tenants[0].sla.first_response: expected a duration such as '4h', '30m', "
        "'1h30m' or '2d'",
        f"{p}:19: tenants[0].sla.targets[0].queue: unknown queue 'nope'",
        f"{p}:21: tenants[0].sla.targets[0].digest_every: unknown key",
        f"{p}:23: tenants[0].reports.recipients: monthly reports need at least one recipient",
    ]
    for line in expected:
        assert line in problems, (line, problems)
