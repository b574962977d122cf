"""SLA clocks in a running daemon: the agents are warned before a target is missed and
told when it is, once each, with audit events; an agent's reply stops the first-response
clock and starts waiting on the client; a note does not. Time is moved through
$GATEWAY_TEST_CLOCK_FILE, never waited for."""

from __future__ import annotations

import email
import json
import re
import time
from pathlib import Path

from tests.daemon import Daemon
from tests.mail import make_mail

SLA = """
[tenants.sla]
calendar = "24x7"
first_response = "1h"
resolution = "8h"
warn_before = "30m"
"""


def _wait(d: Daemon, sql: str, want: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if d.query(sql)[0][0] >= want:
            return
        time.sleep(0.2)
    raise AssertionError(f"{sql}: fewer than {want} rows\n{d.log_text()}")


def _reply_to(d: Daemon, kind: str) -> str:
    body = d.query(f"SELECT body FROM outbox WHERE kind = '{kind}' ORDER BY id LIMIT 1")[0][0]
    return str(email.message_from_bytes(body)["Reply-To"])


def _ticket(d: Daemon) -> dict[str, object]:
    row = d.query(
        "SELECT first_response_at, first_response_by, resolved_at, sla_pauses, sla_notified, "
        "status FROM tickets ORDER BY id DESC LIMIT 1"
    )[0]
    return {k: row[k] for k in row.keys()}


def test_warning_then_breach_notices_once_each(tmp_path: Path) -> None:
    clock = tmp_path / "clock"
    clock.write_text("0")
    d = Daemon(tmp_path / "gw", acme_extra=SLA, env={"GATEWAY_TEST_CLOCK_FILE": str(clock)})
    d.start()
    try:
        assert d.send(make_mail(subject="Server down"))[0] == 250
        time.sleep(0)  # nothing is due yet: no audit events but the ticket's own
        clock.write_text(str(40 * 60))  # 40 minutes on: within 30 minutes of the 1 h target
        _wait(d, "SELECT count(*) FROM audit_events WHERE action = 'sla.warning'", 1)
        _wait(d, "SELECT count(*) FROM outbox WHERE kind = 'sla'", 1)
        clock.write_text(str(61 * 60))
        _wait(d, "SELECT count(*) FROM audit_events WHERE action = 'sla.breached'", 1)
        _wait(d, "SELECT count(*) FROM outbox WHERE kind = 'sla'", 2)
        rows = d.query("SELECT rcpt_tos, body FROM outbox WHERE kind = 'sla' ORDER BY id")
        assert [json.loads(r["rcpt_tos"]) for r in rows] == [["alice@acme.test"]] * 2
        warning = email.message_from_bytes(rows[0]["body"])
        breach = email.message_from_bytes(rows[1]["body"])
        assert warning["Subject"].startswith("[ACME-1] SLA warning")
        assert breach["Subject"].startswith("[ACME-1] SLA breached")
        assert warning["Auto-Submitted"] == "auto-generated"
        assert "first response" in breach.get_payload(decode=True).decode()
        detail = json.loads(
            d.query("SELECT detail FROM audit_events WHERE action = 'sla.breached'")[0][0]
        )
        assert detail["clock"] == "first_response" and detail["target_seconds"] == 3600
        assert sorted(json.loads(str(_ticket(d)["sla_notified"]))) == [
            "first_response:breached",
            "first_response:warning",
        ]
        # Rounds go on every few seconds; nothing is sent twice. Wait for one more
        # round to have happened (the status file's sla_checked_at moves on) and count.
        seen = json.loads(d.cli("status", "--json").stdout)["daemon"]["ops"]["sla_checked_at"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ops = json.loads(d.cli("status", "--json").stdout)["daemon"]["ops"]
            if ops["sla_checked_at"] != seen:
                break
            time.sleep(0.3)
        assert d.query("SELECT count(*) FROM outbox WHERE kind = 'sla'")[0][0] == 2
    finally:
        d.stop()


def test_agent_reply_stops_first_response_and_waits_on_the_client(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "gw", acme_extra=SLA).start()
    try:
        assert d.send(make_mail(subject="Printer", sender="carol@client.test"))[0] == 250
        agent_addr = _reply_to(d, "notice")
        assert re.match(r"support\+\S+@acme\.test", agent_addr)

        note = make_mail(sender="alice@acme.test", to=agent_addr, body="#note\nchecking logs")
        assert d.send(note, to=agent_addr, sender="alice@acme.test")[0] == 250
        t = _ticket(d)
        assert t["first_response_at"] is None and json.loads(str(t["sla_pauses"])) == []

        reply = make_mail(sender="alice@acme.test", to=agent_addr, body="Which model is it?")
        assert d.send(reply, to=agent_addr, sender="alice@acme.test")[0] == 250
        t = _ticket(d)
        assert t["first_response_at"] is not None and t["first_response_by"] == "alice@acme.test"
        (pause,) = json.loads(str(t["sla_pauses"]))
        assert pause[1] is None  # waiting on the client

        client_addr = _reply_to(d, "relay")
        answer = make_mail(sender="carol@client.test", to=client_addr, body="An HP 4050.")
        assert d.send(answer, to=client_addr, sender="carol@client.test")[0] == 250
        (pause,) = json.loads(str(_ticket(d)["sla_pauses"]))
        assert pause[1] is not None  # the client answered: the clock runs again

        close = make_mail(sender="alice@acme.test", to=agent_addr, body="#close\nFixed, toner.")
        assert d.send(close, to=agent_addr, sender="alice@acme.test")[0] == 250
        t = _ticket(d)
        assert t["status"] == "closed" and t["resolved_at"] is not None
        pauses = json.loads(str(t["sla_pauses"]))
        assert len(pauses) == 1  # a closing reply waits on no one
    finally:
        d.stop()
