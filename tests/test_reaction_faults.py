"""A fault while reacting to a mail never turns its intake into a 4xx (issue 19).

The mail commits; the failed reaction is undone alone, recorded as the audit
event ``reaction.failed`` on the ticket (``tickets show`` prints it) and
logged, and the other reactions still happen. The failures are injected with
``GATEWAY_TEST_FAIL_REACTION`` (store/faults.py, a test-only hook read by
``outbound/guard.py``), except the first test's: a tenant's template
that really raises.
"""

from __future__ import annotations

import json
import uuid
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import pytest

from tests.daemon import Daemon
from tests.mail import make_mail


def _new_ticket(d: Daemon) -> tuple[str, str]:
    who = f"carol.{uuid.uuid4().hex[:6]}@client.test"
    code, text = d.send(make_mail(sender=f"Carol <{who}>"), sender=who)
    assert code == 250, text  # never a 4xx for our own fault
    return who, d.ref(text)


def _kinds(d: Daemon, ref: str) -> list[str]:
    rows = d.query(
        "SELECT o.kind FROM outbox o JOIN tickets t ON t.id = o.ticket_id WHERE t.ref = ? "
        "ORDER BY o.id",
        ref,
    )
    return [r[0] for r in rows]


def _failures(d: Daemon, ref: str) -> list[dict[str, str]]:
    rows = d.query(
        "SELECT a.detail FROM audit_events a JOIN tickets t ON t.id = a.ticket_id "
        "WHERE t.ref = ? AND a.action = 'reaction.failed' ORDER BY a.id",
        ref,
    )
    return [json.loads(r[0]) if isinstance(r[0], str) else r[0] for r in rows]


def _shown(d: Daemon, ref: str) -> str:
    out = d.cli("tickets", "show", ref)
    assert out.returncode == 0, out.stderr
    return out.stdout.decode()


def test_a_template_that_raises_costs_the_acknowledgement_only(tmp_path: Path) -> None:
    folder = tmp_path / "templates"
    (folder / "acme").mkdir(parents=True)
    (folder / "acme" / "ack.txt.j2").write_text("Hello {{ no_such_variable() }}\n")
    d = Daemon(tmp_path / "gw", extra=f'[outbound]\ntemplates = "{folder}"\n').start()
    try:
        assert "reaction none failed in the last 24 h" in d.cli("status").stdout.decode()
        _, ref = _new_ticket(d)
        assert _kinds(d, ref) == ["notice"]  # the agents still hear of it
        (failure,) = _failures(d, ref)
        assert failure["reaction"] == "acknowledgement" and "Undefined" in failure["error"]
        assert "reaction.failed (acknowledgement)" in _shown(d, ref)
        assert "reaction.failed" in d.log_text()
    finally:
        d.stop()


@pytest.mark.parametrize(
    ("reaction", "left"),
    [
        ("acknowledgement", ["notice"]),
        ("notice", ["ack"]),
        ("clock", ["ack", "notice"]),
        ("reactions", []),  # the whole mail reaction: its rows go, the message stays
    ],
)
def test_a_failing_reaction_of_a_new_ticket(tmp_path: Path, reaction: str, left: list[str]) -> None:
    d = Daemon(tmp_path / "gw", env={"GATEWAY_TEST_FAIL_REACTION": reaction}).start()
    try:
        _, ref = _new_ticket(d)
        assert d.query("SELECT count(*) FROM messages")[0][0] == 1
        assert _kinds(d, ref) == left
        assert [f["reaction"] for f in _failures(d, ref)] == [reaction]
        assert f"reaction.failed ({reaction})" in _shown(d, ref)
        # The next mail is not held up by the last one's failure either.
        _, second = _new_ticket(d)
        assert second != ref
    finally:
        d.stop()


def test_a_failing_relay_keeps_the_agents_reply(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "gw", env={"GATEWAY_TEST_FAIL_REACTION": "relay"}).start()
    try:
        _, ref = _new_ticket(d)
        (row,) = d.query("SELECT body FROM outbox WHERE kind = 'notice'")
        notice = message_from_bytes(row["body"], policy=default)
        reply_to = str(notice["Reply-To"])
        answer = make_mail(
            sender="Alice Agent <alice@acme.test>",
            to=reply_to,
            subject=f"Re: {notice['Subject']}",
            body="The tray was loose; fixed.",
            headers={"In-Reply-To": str(notice["Message-ID"])},
        )
        code, text = d.send(answer, to=reply_to, sender="alice@acme.test")
        assert code == 250 and d.ref(text) == ref, text
        assert d.query("SELECT count(*) FROM messages")[0][0] == 2
        assert "relay" not in _kinds(d, ref)
        assert [f["reaction"] for f in _failures(d, ref)] == ["relay"]
        # The admin sees it without opening the ticket: `gateway status`, per tenant.
        screen = d.cli("status").stdout.decode()
        assert "reaction acme: 1 FAILED in the last 24 h; last relay" in screen, screen
        report = json.loads(d.cli("status", "--json").stdout)
        assert report["reactions"]["acme"]["count"] == 1
        assert report["reactions"]["acme"]["last"]["reaction"] == "relay"
        assert "globex" not in report["reactions"]
    finally:
        d.stop()
