"""The logs keep the privacy policy: no bodies, no secrets, addresses only where a tenant allows."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from gateway.logs import set_log_privacy, setup_logging
from routing.config import load_config
from store.redact import pseudonym

CAROL = "carol@client.test"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def logged(tmp_path: Path) -> Iterator[object]:
    p = tmp_path / "gateway.toml"
    p.write_text(
        '[[tenants]]\nslug = "acme"\naddresses = ["support@acme.test"]\n'
        '[[tenants]]\nslug = "open"\naddresses = ["help@open.test"]\nlog_addresses = true\n',
        encoding="utf-8",
    )
    config = load_config(p)
    setup_logging("json", logging.INFO)
    set_log_privacy(config)
    out = io.StringIO()  # the daemon's processors and renderer, written here instead of stderr
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=out))

    def events() -> list[dict[str, object]]:
        return [json.loads(line) for line in out.getvalue().splitlines()]

    yield config, events
    structlog.reset_defaults()


def test_bodies_and_secrets_never_reach_the_log(logged: object) -> None:
    config, events = logged  # type: ignore[misc]
    log = structlog.get_logger("t")
    log.info(
        "message",
        tenant="acme",
        body="Dear support, my PIN is 1234",
        text="the text",
        html="<p>x</p>",
        password="hunter2",
        session_id="abc",
        cookie="gw_session=xyz",
        detail="login with enc:v1:k1:QUJDREVGRw== failed",
        url="https://h/t/acme/login?s=0123abcd&v=verifier-secret-value",
        to="support+t12-abcdef0123456789@acme.test",
        error="user carol@client.test refused",
    )
    (e,) = events()
    out = json.dumps(e)
    for secret in ("PIN", "the text", "<p>", "hunter2", "abc\"", "xyz", "QUJDREVGRw",
                   "0123abcd", "verifier-secret-value", "abcdef0123456789", CAROL):  # fmt: skip
        assert secret not in out, secret
    assert e["password"] == e["session_id"] == e["cookie"] == "[redacted]"
    assert "body" not in e and "text" not in e and "html" not in e
    assert e["to"] == "support+[redacted]@acme.test"  # our own address stays readable
    assert e["error"] == f"user {pseudonym(config.secret, CAROL)} refused"
    assert e["detail"] == "login with enc:[redacted] failed"


def test_addresses_only_where_every_tenant_named_allows_them(logged: object) -> None:
    _config, events = logged  # type: ignore[misc]
    log = structlog.get_logger("t")
    log.info("a", tenant="open", who=CAROL)
    log.info("b", tenants=["open", "acme"], who=[CAROL])
    log.info("c", who=CAROL)  # no tenant named: hashed
    try:
        raise ValueError(f"cannot deliver to {CAROL}")
    except ValueError:
        log.exception("d", tenant="acme")
    a, b, c, d = events()
    assert a["who"] == CAROL
    assert CAROL not in json.dumps(b) and CAROL not in json.dumps(c)
    assert "ValueError" in str(d["exception"]) and CAROL not in str(d["exception"])


class _CountedFile(io.StringIO):
    """stderr as the daemon has it, counting the writes that reach it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, s: str) -> int:
        self.writes.append(s)
        return super().write(s)


@pytest.fixture
def lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[_CountedFile]:
    out = _CountedFile()
    monkeypatch.setattr(sys, "stderr", out)
    setup_logging("json", logging.INFO)
    yield out
    structlog.reset_defaults()


def _events(text: str) -> list[str]:
    return [json.loads(line)["event"] for line in text.splitlines()]


def test_info_lines_of_one_loop_iteration_go_out_in_one_write_warnings_at_once(
    lines: _CountedFile,
) -> None:
    log = structlog.get_logger("t")

    async def one_iteration() -> list[str]:
        log.info("a")
        log.info("b")
        before_warning = list(lines.writes)
        log.warning("w")  # at once, after the lines waiting: the order holds
        log.info("c")
        log.info("d")
        waiting = list(lines.writes)
        await asyncio.sleep(0)  # the iteration ends: c and d go out together
        assert before_warning == [] and len(waiting) == 1
        return _events(waiting[0])

    first_write = asyncio.run(one_iteration())
    assert first_write == ["a", "b", "w"]
    assert [_events(w) for w in lines.writes] == [["a", "b", "w"], ["c", "d"]]


def test_lines_off_the_loop_go_at_once_and_a_stopped_loop_owes_nothing(
    lines: _CountedFile,
) -> None:
    log = structlog.get_logger("t")
    log.info("no loop")
    assert [_events(w) for w in lines.writes] == [["no loop"]]

    loop = asyncio.new_event_loop()
    loop.call_soon(lambda: (log.info("stopped before its flush"), loop.stop()))
    loop.run_forever()  # stops at the end of this iteration: its flush never runs
    loop.close()
    assert len(lines.writes) == 1

    async def next_run() -> None:
        log.info("next run")  # another loop: a flush is asked of this one too
        await asyncio.sleep(0)

    asyncio.run(next_run())
    assert [_events(w) for w in lines.writes][1:] == [["stopped before its flush", "next run"]]

    done = threading.Event()
    threading.Thread(target=lambda: (log.info("a thread"), done.set())).start()
    assert done.wait(5) and _events(lines.writes[-1]) == ["a thread"]


def test_a_daemon_that_exits_writes_the_lines_still_waiting(tmp_path: Path) -> None:
    """A process that ends while its loop still owes lines writes them at exit."""
    code = (
        "import asyncio, logging, sys, structlog\n"
        "from gateway.logs import setup_logging\n"
        "setup_logging('json', logging.INFO)\n"
        "def last() -> None:\n"
        "    structlog.get_logger('t').info('last words')\n"
        "    sys.exit(3)  # out of the loop at once: the flush it asked for never runs\n"
        "loop = asyncio.new_event_loop()\n"
        "loop.call_soon(last)\n"
        "loop.run_forever()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 3
    assert _events(done.stderr) == ["last words"]
