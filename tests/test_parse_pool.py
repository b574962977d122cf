"""Parsing in worker processes ([gateway] parse_workers): the same answers as parsing
in the daemon, and a worker killed with -9 costs no message: what it held is a 451
the sender retries, a new worker takes its place, and none outlives the daemon."""

from __future__ import annotations

import array
import asyncio
import dataclasses
import fcntl
import os
import signal
import smtplib
import subprocess
import termios
import threading
import time
from pathlib import Path

import pytest

from gateway.intake.parse_pool import ParsePool, ParseWorkerLost, parse_pool
from gateway.intake.pipeline import _LONE_PARSE_BYTES
from parsers import HeaderTooLarge, Limits, StructureTooDeep, Unreadable, parse
from routing.language import detect
from tests.daemon import Daemon, worker_pids
from tests.mail import make_mail, message_id_of
from tests.parser_fixtures import deep_nest


def _pids_of_children(pid: int) -> list[int]:
    return worker_pids(pid, "gateway.intake.parse_worker")


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # reaped, even between the open and the read (ESRCH)
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pid: int, within: float = 20.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _bytes_waiting_on_stdin(pid: int) -> int:
    """What sits unread where a process reads its requests, nothing consumed: a pipe
    (asyncio's subprocesses) by FIONREAD on a second descriptor of it, a socket pair
    (uvloop's) by its receive queue as ``ss`` shows it."""
    link = os.readlink(f"/proc/{pid}/fd/0")
    if link.startswith("socket:["):
        inode = link[len("socket:[") : -1]
        out = subprocess.run(["ss", "-xn"], capture_output=True, text=True, check=True).stdout
        for row in out.splitlines()[1:]:
            cols = row.split()
            if len(cols) >= 6 and cols[5] == inode:
                return int(cols[2])
        raise AssertionError(f"no socket {inode} in ss -xn")
    fd = os.open(f"/proc/{pid}/fd/0", os.O_RDONLY | os.O_NONBLOCK)
    try:
        buf = array.array("i", [0])
        fcntl.ioctl(fd, termios.FIONREAD, buf)
        return buf[0]
    finally:
        os.close(fd)


def _wait_for_stdin(pid: int, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while _bytes_waiting_on_stdin(pid) == 0:
        assert time.monotonic() < deadline, "the message never reached the parse worker"
        time.sleep(0.02)


# Over the size a message alone is parsed in the daemon (gateway/intake/pipeline.py):
# this one goes to a worker even when it is the only one in flight.
BIG_BODY = "A line of a long complaint about the printer on the third floor.\n" * 400

MAILS = [
    make_mail(),
    make_mail(subject="Grüße, Drucker kaputt", body="Schöne Grüße\n\n> old quote\n"),
    make_mail(attachments=[("report.pdf", "application/pdf", b"%PDF-1.4 " + os.urandom(3000))]),
    make_mail(headers={"In-Reply-To": "<a@b.test>", "Auto-Submitted": "auto-replied"}),
]


def test_a_worker_answers_what_parse_answers() -> None:
    async def go() -> None:
        async with parse_pool(1) as pool:
            assert pool is not None
            for data in MAILS:
                got = await pool.parse(data, Limits())
                want = parse(data)
                assert got == want
                assert [a.data for a in got.attachments] == [a.data for a in want.attachments]
            with pytest.raises(Unreadable):
                await pool.parse(b"\r\n\r\n", Limits())
            with pytest.raises(HeaderTooLarge):
                await pool.parse(MAILS[0], Limits(max_header_bytes=50))
            with pytest.raises(StructureTooDeep):
                await pool.parse(deep_nest(100), Limits(max_mime_depth=10))
            # concurrent messages, more than a worker is sent at once, answered in kind
            many = await asyncio.gather(*(pool.parse(d, Limits()) for d in MAILS * 5))
            assert [m.subject for m in many] == [parse(d).subject for d in MAILS * 5]

    asyncio.run(go())


GERMAN = make_mail(
    body="Guten Tag, unser Drucker im dritten Stock druckt seit heute Morgen nur noch "
    "leere Seiten. Können Sie bitte jemanden vorbeischicken?"
)


def _model_loaded(pid: int) -> bool:
    """numpy (py3langid's tables) mapped into the process: the language model is loaded."""
    return "numpy" in Path(f"/proc/{pid}/maps").read_text()


def test_a_worker_asked_tells_the_language_as_the_daemon_would() -> None:
    """The same value ``parse`` gives, carrying what ``detect`` says of it (declared
    Content-Language first), so the writer reads it instead of classifying; unasked,
    nothing is told. A pool made without ``language`` never loads the model unasked."""
    declared = b"Content-Language: tr\r\n" + GERMAN

    async def go() -> None:
        async with parse_pool(1, language=True) as pool:
            assert pool is not None
            for data in (GERMAN, declared, MAILS[0], MAILS[1]):
                got = await pool.parse(data, Limits(), language=True)
                assert got == dataclasses.replace(parse(data), language=detect(parse(data)))
            assert (await pool.parse(GERMAN, Limits(), language=True)).language == "de"
            assert (await pool.parse(declared, Limits(), language=True)).language == "tr"
            assert (await pool.parse(GERMAN, Limits())).language is None
            assert detect(await pool.parse(GERMAN, Limits())) == "de"
        async with parse_pool(1) as pool:
            assert pool is not None
            assert (await pool.parse(GERMAN, Limits())).language is None
            assert not _model_loaded(pool.pids[0])

    asyncio.run(go())


def test_none_without_workers() -> None:
    async def go() -> None:
        async with parse_pool(0) as pool:
            assert pool is None

    asyncio.run(go())


def test_a_killed_worker_fails_what_it_held_and_is_replaced() -> None:
    async def go() -> None:
        pool = ParsePool(1)
        await pool.start()
        try:
            (first,) = pool.pids
            os.kill(first, signal.SIGSTOP)  # it holds the message unparsed
            held = asyncio.ensure_future(pool.parse(MAILS[0], Limits()))
            await asyncio.to_thread(_wait_for_stdin, first)
            os.kill(first, signal.SIGKILL)
            with pytest.raises(ParseWorkerLost):
                await held
            # the next message waits for the new worker, and is parsed
            parsed = await asyncio.wait_for(pool.parse(MAILS[1], Limits()), 60)
            assert parsed == parse(MAILS[1])
            (second,) = pool.pids
            assert second != first and pool.replaced == 1
        finally:
            pids = pool.pids
            await pool.close()
        assert pids and not any(_alive(p) for p in pids)

    asyncio.run(go())


def _sent_while_its_worker_dies(d: Daemon, worker: int, data: bytes) -> tuple[int, str]:
    """The reply to ``data``, sent while ``worker`` (stopped) holds it and is killed -9."""
    os.kill(worker, signal.SIGSTOP)  # it holds the message unparsed
    replies: list[tuple[int, str]] = []
    sender = threading.Thread(target=lambda: replies.append(d.send(data)))
    sender.start()
    _wait_for_stdin(worker)
    os.kill(worker, signal.SIGKILL)
    sender.join(60)
    assert replies, "no reply"
    return replies[0]


def test_a_killed_parse_worker_costs_no_message(tmp_path: Path) -> None:
    """Real daemon, real SMTP: the message the worker held gets 451, its retry 250;
    each stored once; the replacement parses what follows; stopped with the daemon."""
    d = Daemon(tmp_path / "gw", gateway_extra="parse_workers = 1").start()
    try:
        (worker,) = _pids_of_children(d.proc.pid)  # type: ignore[union-attr]
        assert d.send(MAILS[0])[0] == 250
        held = make_mail(subject="held by the worker that dies", body=BIG_BODY)
        assert len(held) > _LONE_PARSE_BYTES  # a lone small one would be parsed here
        code, reply = _sent_while_its_worker_dies(d, worker, held)
        assert code == 451 and reply.startswith("4.3.0"), reply
        assert _wait_gone(worker)
        code, reply = d.send(held)  # the sender's retry
        assert code == 250, reply
        assert d.kept(f"{code} {reply}") == 1
        after = make_mail(subject="after the replacement")
        assert d.send(after)[0] == 250
        for data in (MAILS[0], held, after):
            rows = d.query("SELECT count(*) FROM messages WHERE message_id = ?",
                           message_id_of(data))  # fmt: skip
            assert rows[0][0] == 1
        (replacement,) = _pids_of_children(d.proc.pid)  # type: ignore[union-attr]
        assert replacement != worker
        assert '"parse_worker.died"' in d.log_text()
    finally:
        assert d.stop() == 0
    assert _wait_gone(replacement)


def test_a_worker_killed_while_telling_a_language_costs_no_message(tmp_path: Path) -> None:
    """The message the worker held to parse and tell its language gets 451, its retry
    250 and its language from the replacement (which loads the model at its start) or,
    once it has loaded the model too, the daemon; stored once."""
    d = Daemon(tmp_path / "gw", gateway_extra="parse_workers = 1").start()
    try:
        assert d.proc is not None
        (worker,) = _pids_of_children(d.proc.pid)
        code, reply = _sent_while_its_worker_dies(d, worker, GERMAN)
        assert code == 451 and reply.startswith("4.3.0"), reply
        assert _wait_gone(worker)
        code, reply = d.send(GERMAN)  # the sender's retry
        assert code == 250, reply
        rows = d.query(
            "SELECT t.client_language FROM messages m JOIN tickets t ON t.id = m.ticket_id "
            "WHERE m.message_id = ?",
            message_id_of(GERMAN),
        )
        assert [tuple(r) for r in rows] == [("de",)]
        (replacement,) = _pids_of_children(d.proc.pid)
        assert replacement != worker and _model_loaded(replacement)
    finally:
        assert d.stop() == 0


def test_a_small_message_alone_is_parsed_in_the_daemon(tmp_path: Path) -> None:
    """A lone sender's small mail skips the worker's round trip (no language to tell
    here: the daemon never loads the model): with the only worker stopped it is still
    answered 250; a big one still waits for the worker."""
    one = 'languages = ["en"]'
    d = Daemon(
        tmp_path / "gw", acme_settings=one, extra=one, gateway_extra="parse_workers = 1"
    ).start()
    try:
        (worker,) = _pids_of_children(d.proc.pid)  # type: ignore[union-attr]
        os.kill(worker, signal.SIGSTOP)
        try:
            small = make_mail(subject="small and alone")
            assert len(small) <= _LONE_PARSE_BYTES
            assert d.send(small)[0] == 250
            big = make_mail(subject="big and alone", body=BIG_BODY)
            replies: list[tuple[int, str]] = []
            sender = threading.Thread(target=lambda: replies.append(d.send(big)))
            sender.start()
            _wait_for_stdin(worker)  # it went to the stopped worker
            assert not replies
        finally:
            os.kill(worker, signal.SIGCONT)
        sender.join(60)
        assert replies and replies[0][0] == 250, replies
        assert not _model_loaded(d.proc.pid)  # type: ignore[union-attr]
    finally:
        assert d.stop() == 0


def test_a_small_message_alone_whose_language_is_told_is_parsed_in_the_daemon(
    tmp_path: Path,
) -> None:
    """With languages to tell, the first lone small message goes to the worker and starts
    the model's load in the daemon (it does not wait on it); once loaded, a lone small
    message is parsed in the daemon and its language told there: answered 250 with
    the only worker stopped, and its ticket speaks German."""
    d = Daemon(tmp_path / "gw", gateway_extra="parse_workers = 1").start()
    try:
        assert d.proc is not None
        (worker,) = _pids_of_children(d.proc.pid)
        assert not _model_loaded(d.proc.pid)  # the worker tells languages
        assert d.send(MAILS[0])[0] == 250
        deadline = time.monotonic() + 60
        while '"language.loaded"' not in d.log_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _model_loaded(d.proc.pid)
        os.kill(worker, signal.SIGSTOP)
        try:
            assert len(GERMAN) <= _LONE_PARSE_BYTES
            assert d.send(GERMAN)[0] == 250
        finally:
            os.kill(worker, signal.SIGCONT)
        rows = d.query(
            "SELECT t.client_language FROM messages m JOIN tickets t ON t.id = m.ticket_id "
            "WHERE m.message_id = ?",
            message_id_of(GERMAN),
        )
        assert [tuple(r) for r in rows] == [("de",)]
    finally:
        assert d.stop() == 0


def test_no_parse_worker_outlives_a_killed_daemon(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "gw", gateway_extra="parse_workers = 2").start()
    try:
        workers = _pids_of_children(d.proc.pid)  # type: ignore[union-attr]
        assert len(workers) == 2
        with smtplib.SMTP("127.0.0.1", d.port, timeout=60) as s:
            assert s.sendmail("c@x.test", ["support@acme.test"], MAILS[1]) == {}
    finally:
        d.kill()
    assert all(_wait_gone(w) for w in workers)


def test_parse_workers_zero_parses_in_the_daemon(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "gw", gateway_extra="parse_workers = 0").start()
    try:
        assert _pids_of_children(d.proc.pid) == []  # type: ignore[union-attr]
        assert d.send(MAILS[1])[0] == 250
    finally:
        assert d.stop() == 0
