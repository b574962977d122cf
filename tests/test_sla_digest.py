"""SLA without storms (issue 17): turning SLA on for a tenant with a backlog sends nothing
for the backlog, and many alerts come as one digest per agent per ``digest_every``.

A real daemon, time moved through $GATEWAY_TEST_CLOCK_FILE, never waited for.
"""

from __future__ import annotations

import email
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.web.desk_view import sla_of
from routing.config import load_config
from store import desk
from store.clocks import watched
from store.db import create_writer_engine
from store.desk import DeskFilter
from tests.daemon import Daemon
from tests.mail import make_mail

SLA = """
[[tenants.agents]]
address = "bob@acme.test"
name = "Bob Agent"

[tenants.sla]
calendar = "24x7"
first_response = "1h"
resolution = "8h"
warn_before = "30m"
"""


def _count(d: Daemon, sql: str) -> int:
    return int(d.query(sql)[0][0])


def _wait(d: Daemon, sql: str, want: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _count(d, sql) >= want:
            return
        time.sleep(0.2)
    raise AssertionError(f"{sql}: fewer than {want}\n{d.log_text()}")


def _rounds(d: Daemon, n: int = 2) -> None:
    """Let ``n`` SLA rounds pass (the status file's sla_checked_at moves on each)."""
    for _ in range(n):
        seen = _checked(d)
        deadline = time.monotonic() + 30
        while _checked(d) == seen and time.monotonic() < deadline:
            time.sleep(0.3)
        assert _checked(d) != seen, d.log_text()


def _checked(d: Daemon) -> object:
    return json.loads(d.cli("status", "--json").stdout)["daemon"]["ops"]["sla_checked_at"]


def _open(d: Daemon, n: int, tag: str) -> None:
    for i in range(n):
        mail = make_mail(subject=f"{tag} {i}", sender=f"c{i}.{tag}@client.test")
        assert d.send(mail, sender=f"c{i}.{tag}@client.test")[0] == 250


SLA_MAIL = "SELECT count(*) FROM outbox WHERE kind = 'sla'"


def test_turning_sla_on_with_a_backlog_alerts_nobody(tmp_path: Path) -> None:
    clock = tmp_path / "clock"
    clock.write_text("0")
    env = {"GATEWAY_TEST_CLOCK_FILE": str(clock)}
    d = Daemon(tmp_path / "gw", env=env).start()
    try:
        _open(d, 11, "old")  # eleven open tickets, no SLA yet
    finally:
        d.stop()
    # SLA is configured (the intake keeps the real clock: the shift below ages the backlog
    # in the watch's eyes only, as hours passing would).
    d = Daemon(tmp_path / "gw", acme_extra=SLA, env=env, database_url=d.database_url).start()
    try:
        clock.write_text(str(6 * 3600))  # every old ticket is hours past any target
        _rounds(d)
        assert _count(d, SLA_MAIL) == 0
        assert _count(d, "SELECT count(*) FROM audit_events WHERE action LIKE 'sla.%'") == 0
        # Mail that arrives under SLA has its clocks.
        _open(d, 1, "new")
        clock.write_text(str(6 * 3600 + 61 * 60))
        _wait(d, SLA_MAIL, 2)  # its breach, to each of the two agents
        _rounds(d)
        assert _count(d, SLA_MAIL) == 2
        tickets = d.query("SELECT DISTINCT ticket_id FROM audit_events WHERE action LIKE 'sla.%'")
        assert [r[0] for r in tickets] == [12]
        _the_backlog_shows_no_clock(d)
    finally:
        d.stop()


def _the_backlog_shows_no_clock(d: Daemon) -> None:
    """The CLI and the desk show clocks by the watch's rule (store.clocks.watched): the
    eleven tickets from before SLA began show none, though hours past any target."""
    listed = json.loads(d.cli("tickets", "list", "--json").stdout)
    sla = {r["ref"]: r["sla"] for r in listed}
    assert [ref for ref, s in sla.items() if s is not None] == ["ACME-12"], sla
    assert sla["ACME-12"]["state"] == "breached"
    for ref, want in (("ACME-1", None), ("ACME-12", "breached")):
        shown = json.loads(d.cli("tickets", "show", ref, "--json").stdout)
        assert (shown["sla"] or {}).get("state") == want, shown["sla"]
    status = json.loads(d.cli("status", "--json").stdout)
    assert status["sla"]["acme"]["open"] == 12 and status["sla"]["acme"]["breached"] == 1
    # The desk's list rows, as its pages read them.
    url = d.database_url
    if url.startswith("sqlite"):
        url = f"sqlite:///{d.home / 'var' / 'gateway.db'}"
    engine = create_writer_engine(url)
    try:
        with engine.connect() as conn:
            rows, _ = desk.desk_tickets(conn, "acme", DeskFilter())
            ticket = desk.desk_ticket(conn, "acme", "ACME-1")
    finally:
        engine.dispose()
    tenant = load_config(d.config).tenant("acme")
    assert tenant is not None
    now = datetime.now(UTC) + timedelta(hours=7)  # past every target, as the shifted clock
    shown = {r["ref"]: sla_of(tenant, r, now)["state"] for r in rows}
    assert [ref for ref, state in shown.items() if state] == ["ACME-12"], shown
    assert ticket is not None and not watched(ticket["ticket"])


def test_many_alerts_are_one_digest_per_agent(tmp_path: Path) -> None:
    clock = tmp_path / "clock"
    clock.write_text("0")
    d = Daemon(
        tmp_path / "gw", acme_extra=SLA, env={"GATEWAY_TEST_CLOCK_FILE": str(clock)}
    ).start()
    try:
        _open(d, 6, "burst")
        clock.write_text(str(35 * 60))  # all six within 30 minutes of their target
        _wait(d, SLA_MAIL, 2)
        _rounds(d)
        rows = d.query("SELECT rcpt_tos, body FROM outbox WHERE kind = 'sla' ORDER BY id")
        assert sorted(json.loads(r["rcpt_tos"])[0] for r in rows) == [
            "alice@acme.test",
            "bob@acme.test",
        ]
        for r in rows:
            msg = email.message_from_bytes(r["body"])
            assert msg["Subject"] == "SLA digest: 6 at risk"
            text = msg.get_payload(decode=True).decode()
            assert all(f"ACME-{n}" in text for n in range(1, 7)), text
        assert _count(d, "SELECT count(*) FROM audit_events WHERE action = 'sla.warning'") == 6

        # The next alerts, a period later: again one digest each. (The intake keeps the
        # real clock, so ACME-7 is as old as the others in the watch's eyes.)
        _open(d, 1, "late")
        clock.write_text(str(71 * 60))  # all seven past their first-response target
        _wait(d, SLA_MAIL, 4)
        _rounds(d)
        assert _count(d, SLA_MAIL) == 4  # one more digest each, not seven mails each
        last = email.message_from_bytes(
            d.query("SELECT body FROM outbox WHERE kind = 'sla' ORDER BY id DESC LIMIT 1")[0][0]
        )
        assert last["Subject"] == "SLA digest: 7 breached"
    finally:
        d.stop()


def test_a_held_alert_goes_out_when_the_period_ends(tmp_path: Path) -> None:
    clock = tmp_path / "clock"
    clock.write_text("0")
    extra = SLA.replace('warn_before = "30m"', 'warn_before = "30m"\ndigest_every = "1h"')
    d = Daemon(tmp_path / "gw", acme_extra=extra, env={"GATEWAY_TEST_CLOCK_FILE": str(clock)})
    d.start()
    try:
        _open(d, 1, "a")
        clock.write_text(str(31 * 60))
        _wait(d, SLA_MAIL, 2)  # the warning: a single alert is the ticket's own notice
        # The newest row by id: PostgreSQL returns rows in no set order (a row marked
        # sent moves in its heap), so the last row of an unordered SELECT may be another.
        last = d.query("SELECT body FROM outbox WHERE kind = 'sla' ORDER BY id DESC LIMIT 1")
        subject = email.message_from_bytes(last[0][0])["Subject"]
        assert subject.startswith("[ACME-1] SLA warning")
        clock.write_text(str(61 * 60))  # breached, but the hour since the last mail is not up
        _rounds(d)
        assert _count(d, SLA_MAIL) == 2
        assert _count(d, "SELECT count(*) FROM audit_events WHERE action = 'sla.breached'") == 0
        clock.write_text(str(92 * 60))
        _wait(d, SLA_MAIL, 4)
        assert _count(d, "SELECT count(*) FROM audit_events WHERE action = 'sla.breached'") == 1
    finally:
        d.stop()
