"""The send worker (``[outbound] send_workers``): the outbox's SMTP conversations in
a process of their own, and what its death costs: nothing but a second attempt.

Real daemon, real SMTP account (tests/smtp_sink.py, STARTTLS from a private CA,
AUTH), the worker killed by its pid while the account holds a mail's DATA.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon import Daemon, worker_pids
from tests.mail import make_mail
from tests.smtp_sink import Sink
from tests.test_outbound import FAST
from tests.test_parse_pool import _wait_gone

MODULE = "gateway.sending.worker"


@pytest.fixture
def account(tmp_path: Path) -> Iterator[Sink]:
    sink = Sink(tmp_path).start()
    yield sink
    sink.stop()


def _daemon(tmp_path: Path, sink: Sink, workers: int) -> Daemon:
    home = tmp_path / "gw"
    return Daemon(home, acme_extra=sink.account(home), extra=f"{FAST}send_workers = {workers}\n")


def _all_sent(d: Daemon, within: float = 60) -> list[dict[str, object]]:
    deadline = time.monotonic() + within
    while True:
        rows = d.query("SELECT kind, status, attempts, last_error FROM outbox")
        if rows and all(r["status"] == "sent" for r in rows):
            return rows
        assert time.monotonic() < deadline, f"not all sent: {rows}"
        time.sleep(0.1)


def _others_sent(d: Daemon, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while True:
        (total, sent), *_ = d.query(
            "SELECT count(*), sum(CASE WHEN status = 'sent' THEN 1 ELSE 0 END) FROM outbox"
        )
        if total >= 2 and sent == total - 1:
            return
        assert time.monotonic() < deadline, f"{sent} of {total} sent"
        time.sleep(0.05)


def _hold_a_mail(d: Daemon, account: Sink, who: str) -> int:
    """The send worker's pid once it waits for the reply to a DATA the account holds,
    every other mail sent and recorded (a mail whose 250 a dying worker had not
    passed on would go twice, as docs/config.md says)."""
    assert d.proc is not None
    (worker,) = worker_pids(d.proc.pid, MODULE)
    mail = make_mail(sender=f"Client <{who}>", subject="Scanner", body="It beeps.")
    assert d.send(mail, sender=who)[0] == 250
    assert account.holding.wait(30), "no mail reached the account"
    _others_sent(d)
    return worker


def test_a_send_worker_killed_mid_conversation_loses_no_mail(tmp_path: Path, account: Sink) -> None:
    account.data_script = ["hold"]  # the first DATA gets no reply until the client is gone
    d = _daemon(tmp_path, account, 1).start()
    try:
        assert d.proc is not None
        who = f"ida.{uuid.uuid4().hex[:6]}@client.test"
        worker = _hold_a_mail(d, account, who)
        os.kill(worker, signal.SIGKILL)  # mid-conversation: DATA sent, no reply yet
        assert _wait_gone(worker)
        rows = _all_sent(d)  # every mail goes out afterwards, through a new worker
        assert {r["kind"] for r in rows} >= {"ack"}
        assert sorted(r["attempts"] for r in rows)[-1] == 2  # the held one, tried again
        ids = [r.msg["Message-ID"] for r in account.received]
        assert len(ids) == len(set(ids)) == len(rows)  # each delivered once
        assert any(_to(r, who) for r in account.received)  # the client was acknowledged
        (replacement,) = worker_pids(d.proc.pid, MODULE)
        assert replacement != worker
        assert '"send_worker.died"' in d.log_text()
    finally:
        assert d.stop() == 0
    assert _wait_gone(replacement)  # stopped with the daemon, by its pid


def test_a_stop_mid_conversation_sends_each_mail_once_after_the_restart(
    tmp_path: Path, account: Sink
) -> None:
    account.data_script = ["hold"]
    d = _daemon(tmp_path, account, 1).start()
    try:
        worker = _hold_a_mail(d, account, f"kai.{uuid.uuid4().hex[:6]}@client.test")
    finally:
        assert d.stop() == 0  # the lane in flight stopped, the worker with it
    assert _wait_gone(worker)
    d.start()  # the claim left "sending" is released and sent again
    try:
        rows = _all_sent(d)
        ids = [r.msg["Message-ID"] for r in account.received]
        assert len(ids) == len(set(ids)) == len(rows)  # each once: none sent unrecorded
    finally:
        assert d.stop() == 0


def test_without_a_send_worker_the_daemon_sends_itself(tmp_path: Path, account: Sink) -> None:
    d = _daemon(tmp_path, account, 0).start()
    try:
        assert d.proc is not None
        assert worker_pids(d.proc.pid, MODULE) == []
        who = f"jon.{uuid.uuid4().hex[:6]}@client.test"
        mail = make_mail(sender=f"Jon <{who}>", subject="Fax", body="It faxes.")
        assert d.send(mail, sender=who)[0] == 250
        rows = _all_sent(d)
        assert len(account.received) == len(rows)
        assert any(_to(r, who) for r in account.received)
    finally:
        assert d.stop() == 0


@pytest.mark.parametrize("workers", [0, 1])
@pytest.mark.parametrize("kick", [False, True])
def test_a_connection_is_kept_from_lane_to_lane(
    tmp_path: Path, account: Sink, workers: int, kick: bool
) -> None:
    """Two mails far enough apart to go in separate lanes: the second's ack and notice
    go over the connections the first's opened (outbound/links.py), no new login,
    in the daemon and in the send worker alike. If the account closed them meanwhile
    (``kick``), the next lanes log in again, and the mails still go at the first try."""
    d = _daemon(tmp_path, account, workers).start()
    logins: list[int] = []
    try:
        for name in ["ann", "bob"]:
            rows = _mail_in_a_lane_of_its_own(d, account, name)
            logins.append(account.logins)
            if kick:
                account.kick()
        assert len(account.received) == len(rows)
        assert 1 <= logins[0] <= len(rows) // 2  # this mail's rows: one lane each at most
        assert logins[1] > logins[0] if kick else logins[1] == logins[0], logins
        assert [(r["attempts"], r["last_error"]) for r in rows] == [(1, None)] * len(rows)
    finally:
        assert d.stop() == 0


def _mail_in_a_lane_of_its_own(d: Daemon, account: Sink, name: str) -> list[dict[str, object]]:
    """A client's mail, then the outbox once its ack reached the account and every row
    is sent: the next mail's rows go in lanes of their own."""
    who = f"{name}.{uuid.uuid4().hex[:6]}@client.test"
    mail = make_mail(sender=f"Client <{who}>", subject="Toner", body="Empty again.")
    assert d.send(mail, sender=who)[0] == 250
    deadline = time.monotonic() + 60
    while not any(_to(r, who) for r in account.received):
        assert time.monotonic() < deadline, "no ack"
        time.sleep(0.05)
    return _all_sent(d)


def _to(received: object, who: str) -> bool:
    return who in [a.lower() for a in received.rcpt_tos]  # type: ignore[attr-defined]
