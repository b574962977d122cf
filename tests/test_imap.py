"""IMAP intake against a real Dovecot (issue 4's proof).

Each test gets a Dovecot and a gateway of its own; mail is placed with
``doveadm save``; the store is read afterwards. Nothing is faked: the
disconnects are ``doveadm kick`` and a stopped server, the crash is a
SIGKILL of the gateway between the commit and the MOVE.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.intake.imap_drain import FETCH_COUNT, MOVE_AFTER, MOVE_COUNT
from routing.secrets import load_keyring
from tests.clamd_harness import EICAR, Clamd
from tests.daemon import Daemon
from tests.dovecot_harness import Dovecot, dovecot_workdir
from tests.mail import make_mail

USER, PASSWORD = "support", "secret"


def _wait(pred: Callable[[], bool], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


@pytest.fixture
def imap(dovecot_factory) -> Dovecot:  # type: ignore[no-untyped-def]
    return dovecot_factory({USER: PASSWORD})


def _daemon(
    tmp_path: Path,
    server: Dovecot,
    *,
    scanner: str = "127.0.0.1:9",
    max_size: int = 10 * 1024 * 1024,
    **box: str,
) -> Daemon:
    home = tmp_path / "gw"
    secret = load_keyring(home / "var" / "keys.toml").encrypt(
        PASSWORD, tenant="acme", field="password"
    )
    box.setdefault("poll_interval", "1")
    extra = "".join(f"{k} = {v}\n" for k, v in box.items())
    block = f"""
[[tenants.imap]]
host = "127.0.0.1"
port = {server.port}
security = "none"
username = "{USER}"
password = "{secret}"
timeout = 5
{extra}"""
    return Daemon(home, acme_extra=block, scanner=scanner, scan_deadline=5, max_size=max_size)


@pytest.fixture
def gateway(tmp_path: Path, imap: Dovecot) -> Iterator[Daemon]:
    d = _daemon(tmp_path, imap)
    yield d
    d.kill()


def _idling(d: Daemon) -> bool:
    import json

    try:
        status = json.loads((d.home / "var" / "status.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(status["mailboxes"] and status["mailboxes"][0]["idling"])


def _messages(d: Daemon) -> int:
    try:
        return d.query("SELECT count(*) FROM messages")[0][0]
    except Exception:  # the schema may not exist yet
        return 0


@pytest.fixture
def idle_gateway(tmp_path: Path, imap: Dovecot) -> Iterator[Daemon]:
    # A minute between polls: under IDLE the folder is re-read only after 30 s of
    # quiet, so mail taken well before that came at the server's word (EXISTS).
    d = _daemon(tmp_path, imap, poll_interval="60")
    yield d
    d.kill()


def test_new_mail_while_idling_is_taken_at_the_servers_word_not_by_a_poll(
    idle_gateway: Daemon, imap: Dovecot
) -> None:
    # How fast is figure 4's to say (bench/fig_imap.py), not a test's.
    gateway = idle_gateway
    gateway.start()
    assert _wait(lambda: _idling(gateway)), gateway.log_text()
    imap.save(USER, make_mail(sender="carol@client.test"))
    assert _wait(lambda: _messages(gateway) == 1, timeout=20.0), gateway.log_text()
    (row,) = gateway.query(
        "SELECT m.source, t.ref FROM messages m JOIN tickets t ON t.id = m.ticket_id"
    )
    assert row["source"] == "imap" and row["ref"] == "ACME-1"
    assert _wait(lambda: imap.count(USER, "Processed") == 1 and imap.count(USER) == 0)


def test_backlog_drains_once_and_survives_kicks(gateway: Daemon, imap: Dovecot) -> None:
    n = 60
    for i in range(n):
        imap.save(USER, make_mail(sender=f"c{i}@client.test", subject=f"backlog {i}"))
    gateway.start()
    kicks = 0
    deadline = time.monotonic() + 30
    while _messages(gateway) < n and kicks < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
        # a real disconnect in the middle of the drain (68: no session at that moment)
        kicks += imap.doveadm("kick", USER).returncode == 0
    assert kicks >= 1, "the drain was never interrupted"
    assert _wait(lambda: _messages(gateway) == n and imap.count(USER) == 0, timeout=60), (
        gateway.log_text()
    )
    assert gateway.query("SELECT count(*) FROM tickets")[0][0] == n
    assert imap.count(USER, "Processed") == n


def test_kill_between_commit_and_move_loses_nothing_and_duplicates_nothing(
    gateway: Daemon, imap: Dovecot
) -> None:
    # More than one batch: the kill comes after the first batch's commits, before its MOVE.
    n = FETCH_COUNT + 8
    for i in range(n):
        imap.save(USER, make_mail(sender=f"k{i}@client.test", subject=f"crash {i}"))
    gateway.start(env={"GATEWAY_TEST_CRASH_AT": "imap_after_commit_before_move"})
    assert _wait(lambda: gateway.proc is not None and gateway.proc.poll() is not None)
    # The first batch committed at least (committed messages are moved out together:
    # MOVE_COUNT, MOVE_AFTER); nothing moved.
    committed = _messages(gateway)
    assert FETCH_COUNT <= committed <= n
    assert imap.count(USER) == n and imap.count(USER, "Processed") == 0
    gateway.start(env={"GATEWAY_TEST_CRASH_AT": ""})
    assert _wait(lambda: imap.count(USER) == 0, timeout=30), gateway.log_text()
    assert _messages(gateway) == n
    assert gateway.query("SELECT count(*) FROM tickets")[0][0] == n
    assert imap.count(USER, "Processed") == n
    # what was committed before the kill was offered twice and recognised the second time
    log = gateway.log_path.read_text()
    dupes = [line for line in log.splitlines() if '"duplicate":[true]' in line]
    assert len(dupes) == committed, (len(dupes), committed)


def _status(d: Daemon) -> dict[str, Any]:
    try:
        status = json.loads((d.home / "var" / "status.json").read_text())
    except (OSError, ValueError):
        return {}
    return status["mailboxes"][0] if status.get("mailboxes") else {}


def _moves_to_processed(d: Daemon) -> int:
    """How many moves to the processed folder the first drain may have made: one for all
    of it (fewer than MOVE_COUNT here), and one more for each MOVE_AFTER seconds it took,
    on a machine slow enough to need them (its ``imap.drained`` line says how long)."""
    for line in d.log_path.read_text().splitlines():
        if '"imap.drained"' in line:
            return 1 + int(json.loads(line)["secs"] // MOVE_AFTER)
    raise AssertionError("no imap.drained line")


def test_backlog_drains_with_a_fetch_per_batch_and_moves_committed_mail_together(
    tmp_path: Path, imap: Dovecot
) -> None:
    """A backlog of n costs about n / FETCH_COUNT body FETCHes, not n, and one MOVE for
    up to MOVE_COUNT committed messages; a message over the size limit is never fetched
    and goes to quarantine."""
    n = 2 * FETCH_COUNT + 6
    for i in range(n):
        imap.save(USER, make_mail(sender=f"b{i}@client.test", subject=f"batch {i}"))
    imap.save(USER, make_mail(sender="big@client.test", body="x" * 8000))
    d = _daemon(tmp_path, imap, max_size=6000)
    try:
        d.start()
        assert _wait(
            lambda: _status(d).get("committed") == n and _status(d).get("quarantined") == 1,
            timeout=60,
        ), (_status(d), d.log_text()[-3000:])
        assert _messages(d) == n and imap.count(USER) == 0
        assert imap.count(USER, "Processed") == n and imap.count(USER, "Quarantine") == 1
        commands = _status(d)["commands"]
        batches = -(-n // FETCH_COUNT)  # 3: 32, 32, 6 and the big one (not fetched)
        assert commands["FETCH BODY"] == batches, commands
        assert commands["FETCH SIZE"] == 1, commands
        # one MOVE to Processed for all (fewer than MOVE_COUNT; see _moves_to_processed),
        # one for the quarantined message: not one a batch
        assert n < MOVE_COUNT
        assert commands["UID MOVE"] == _moves_to_processed(d) + 1, commands
    finally:
        d.kill()


def test_a_thread_drained_in_one_batch_commits_in_folder_order(
    tmp_path: Path,
    imap: Dovecot,
    clamd_factory,  # type: ignore[no-untyped-def]
) -> None:
    """A batch's messages go through the pipeline at once (gateway/intake/imap_drain.py),
    but commit in UID order: a reply behind an original that takes longer (a big
    attachment, parsed in a worker and scanned by clamd) still finds the original's
    ticket, and the reply to the reply finds it too. Between them, others' mail."""
    scanner: Clamd = clamd_factory()
    pdf = b"%PDF-1.4 " + uuid.uuid4().bytes * 100_000  # 1.6 MB
    thread = [
        make_mail(
            sender="carol@client.test",
            subject="Scanner broken",
            message_id="<root-7@client.test>",
            attachments=[("scan.pdf", "application/pdf", pdf)],
        ),
        make_mail(
            sender="carol@client.test",
            subject="Re: Scanner broken",
            body="It smokes now.",
            message_id="<re-7@client.test>",
            headers={"In-Reply-To": "<root-7@client.test>"},
        ),
        make_mail(
            sender="carol@client.test",
            subject="Re: Re: Scanner broken",
            body="And it stopped.",
            message_id="<rere-7@client.test>",
            headers={"In-Reply-To": "<re-7@client.test>"},
        ),
    ]
    for i, mail in enumerate(thread):
        imap.save(USER, mail)
        imap.save(USER, make_mail(sender=f"o{i}@client.test", subject=f"other {i}"))
    d = _daemon(tmp_path, imap, scanner=scanner.address)
    try:
        d.start()
        assert _wait(
            lambda: _status(d).get("committed") == 6 and imap.count(USER, "Processed") == 6,
            timeout=60,
        ), d.log_text()
        rows = d.query(
            "SELECT m.message_id, t.ref FROM messages m JOIN tickets t ON t.id = m.ticket_id "
            "WHERE m.from_addr = 'carol@client.test' ORDER BY m.id"
        )
        assert [r[0] for r in rows] == ["<root-7@client.test>", "<re-7@client.test>",
                                        "<rere-7@client.test>"]  # fmt: skip
        assert len({r[1] for r in rows}) == 1, rows
        assert d.query("SELECT count(*) FROM tickets")[0][0] == 4
        assert _status(d)["commands"]["FETCH BODY"] == 1  # one batch
    finally:
        d.kill()


def test_uidvalidity_change_resyncs_without_duplicates(gateway: Daemon, imap: Dovecot) -> None:
    imap.save(USER, make_mail(sender="u1@client.test"))
    gateway.start()
    assert _wait(lambda: imap.count(USER, "Processed") == 1)
    gateway.stop()
    # The same message is back in the folder under a new UIDVALIDITY (a restored mailbox).
    again = make_mail(sender="u2@client.test")
    imap.save(USER, again)
    imap.save(USER, again)
    imap.set_uidvalidity(USER, "INBOX", 4242)
    gateway.start()
    # All three moved: an empty INBOX alone is not enough, since doveadm's status can
    # read 0 while Dovecot re-reads the folder after the UIDVALIDITY change (seen: the
    # wait passed with both copies of u2 still in the INBOX a moment later).
    assert _wait(
        lambda: imap.count(USER) == 0 and imap.count(USER, "Processed") == 3, timeout=30
    ), gateway.log_text()
    stored = _messages(gateway)
    assert stored == 2, (  # u1 once, u2 once
        stored,
        {f: imap.count(USER, f) for f in ("INBOX", "Processed", "Quarantine")},
        gateway.query("SELECT action, detail FROM audit_events ORDER BY id"),
        gateway.log_text()[-4000:],
    )
    audit = gateway.query(
        "SELECT count(*) FROM audit_events WHERE action = 'imap.uidvalidity_changed'"
    )
    assert audit[0][0] == 1


def test_server_down_for_a_while_then_catches_up(gateway: Daemon, imap: Dovecot) -> None:
    gateway.start()
    assert _wait(lambda: _idling(gateway))
    imap.stop()
    time.sleep(2)
    imap.start()
    for i in range(5):
        imap.save(USER, make_mail(sender=f"d{i}@client.test", subject=f"after outage {i}"))
    assert _wait(lambda: _messages(gateway) == 5, timeout=60), gateway.log_text()
    assert _wait(lambda: imap.count(USER) == 0)


def test_infected_goes_to_quarantine_and_scanner_down_leaves_it_in_place(
    tmp_path: Path,
    imap: Dovecot,
    clamd_factory,  # type: ignore[no-untyped-def]
) -> None:
    scanner: Clamd = clamd_factory()
    d = _daemon(tmp_path, imap, scanner=scanner.address)
    try:
        bad = make_mail(
            sender="x@client.test", attachments=[("e.com", "application/octet-stream", EICAR)]
        )
        imap.save(USER, bad)
        d.start()
        assert _wait(lambda: imap.count(USER, "Quarantine") == 1, timeout=30), d.log_text()
        assert _messages(d) == 0

        def actions() -> set[str]:
            return {r[0] for r in d.query("SELECT action FROM audit_events")}

        # the audit event follows the MOVE (it records a move that happened)
        assert _wait(lambda: {"message.infected", "imap.quarantined"} <= actions()), actions()

        scanner.stop()
        pdf = b"%PDF-1.4 " + uuid.uuid4().bytes * 100
        good = make_mail(sender="y@client.test", attachments=[("a.pdf", "application/pdf", pdf)])
        imap.save(USER, good)
        time.sleep(3)
        assert imap.count(USER) == 1 and _messages(d) == 0  # deferred: left where it was
        scanner.start()
        assert _wait(lambda: _messages(d) == 1 and imap.count(USER) == 0, timeout=30), d.log_text()
    finally:
        d.kill()


def test_corpus_through_imap_scores_as_through_smtp(
    tmp_path: Path,
    dovecot_factory,
    clamd: Clamd,  # type: ignore[no-untyped-def]
) -> None:
    """200 generated messages, wave by wave, into each tenant's own mailbox."""
    from tests.corpus import generate
    from tests.test_corpus import TAG, assert_every_class_right

    out = tmp_path / "corpus"
    exp = generate(out, count=200, seed=3)
    server = dovecot_factory({"support": PASSWORD, "help": PASSWORD})
    keys = load_keyring(tmp_path / "gw" / "var" / "keys.toml")
    box = (
        '[[tenants.imap]]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
        'username = "{user}"\npassword = "{pw}"\npoll_interval = 1\ntimeout = 10\n'
    )
    d = Daemon(
        tmp_path / "gw",
        scanner=clamd.address,
        acme_extra=box.format(
            port=server.port,
            user="support",
            pw=keys.encrypt(PASSWORD, tenant="acme", field="password"),
        ),
        extra=box.format(
            port=server.port,
            user="help",
            pw=keys.encrypt(PASSWORD, tenant="globex", field="password"),
        ),
    )
    user_of = {"support@acme.test": "support", "help@globex.test": "help"}
    by_file = {m["file"]: m for m in exp["messages"]}
    root_thread = {t["root_file"]: tid for tid, t in exp["threads"].items()}
    thread_ref: dict[str, str] = {}
    sent: dict[str, bytes] = {}
    try:
        d.start()
        for wave in range(exp["waves"]):
            names = sorted(f for f in by_file if f.startswith(f"w{wave:02d}-"))
            for name in names:
                raw = (out / name).read_bytes()
                raw = TAG.sub(lambda g: thread_ref.get(g.group(1).decode(), "x").encode(), raw)
                sent[name] = raw
                server.save(user_of[by_file[name]["to"]], raw)
            assert _wait(
                lambda: server.count("support") == 0 and server.count("help") == 0, timeout=120
            ), d.log_text()
            for name in names:
                if name in root_thread:
                    sha = hashlib.sha256(sent[name]).hexdigest()
                    rows = d.query(
                        "SELECT t.ref FROM messages m JOIN tickets t ON t.id = m.ticket_id "
                        "WHERE m.raw_sha256 = ?",
                        sha,
                    )
                    if rows:
                        thread_ref[root_thread[name]] = rows[0][0]
        assert server.count("support", "Quarantine") + server.count("help", "Quarantine") == 0
        assert_every_class_right(d, exp, sent)
    finally:
        d.kill()


def test_wire_reads_bodies_whichever_side_the_uid_stands_and_folds_uid_runs() -> None:
    """Dovecot puts the UID first; RFC 3501 lets a server put it after the body."""
    from aioimaplib import Response

    from gateway.intake.imap_wire import bodies, uid_set

    resp = Response(
        "OK",
        [
            b"1 FETCH (UID 7 BODY[] {3}",
            bytearray(b"abc"),
            b")",
            b"2 FETCH (BODY[] {2}",
            bytearray(b"de"),
            b" UID 9)",
            b"3 FETCH (UID 10 FLAGS (\\Seen))",  # no body: nothing for UID 10
            b"Fetch completed.",
        ],
    )
    assert bodies(resp) == {7: b"abc", 9: b"de"}
    assert uid_set([9, 1, 2, 3, 7, 10, 5]) == "1:3,5,7,9:10"


class _DovecotWithoutMove(Dovecot):
    """A Dovecot that does not list MOVE (RFC 6851), as some servers still do not."""

    def config_text(self) -> str:
        return super().config_text() + "imap_capability = IMAP4rev1 IDLE UIDPLUS\n"


def test_without_move_committed_mail_leaves_by_copy_store_and_one_uid_expunge(
    tmp_path: Path,
) -> None:
    # Its own folder under /tmp, as the harness's fixtures do: pytest resets
    # /tmp/pytest-of-<user> to 0700 when another session starts, and Dovecot's mail
    # process (nobody) must traverse the path.
    workdir = dovecot_workdir()
    server = _DovecotWithoutMove(workdir, {USER: PASSWORD}, tls=False)
    server.start()
    n = FETCH_COUNT + 4
    try:
        for i in range(n):
            server.save(USER, make_mail(sender=f"m{i}@client.test", subject=f"no move {i}"))
        d = _daemon(tmp_path, server)
        try:
            d.start()
            assert _wait(lambda: _status(d).get("committed") == n, timeout=60), d.log_text()
            assert server.count(USER) == 0 and server.count(USER, "Processed") == n
            commands = _status(d)["commands"]
            assert "UID MOVE" not in commands, commands
            for kind in ("UID COPY", "UID STORE", "UID EXPUNGE"):
                assert commands[kind] == _moves_to_processed(d), commands  # not one a batch
            assert _messages(d) == n
        finally:
            d.kill()
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
