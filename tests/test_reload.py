"""Live reload: a bad file never takes the gateway down; a good one acts on the next mail."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.daemon import Daemon

NEW_RULE = """
[[tenants.rules]]
name = "reloaded rule"
when = { subject = "after reload" }
then = { tags = ["reloaded"], priority = "urgent" }
"""


def _mail(subject: str, to: str = "support@acme.test") -> bytes:
    return (
        f"From: c@x.test\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}.{time.monotonic_ns()}@x.test>\r\n\r\nhello\r\n"
    ).encode()


def _status(d: Daemon) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{d.http_port}/status", timeout=10) as r:
        return json.loads(r.read())


def _wait(d: Daemon, pred: Any, what: str, timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = _status(d)
        if pred(s):
            return s
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}: {_status(d)}")


def _tags(d: Daemon, subject: str) -> tuple[str, str]:
    (row,) = d.query("SELECT tags, priority FROM tickets WHERE subject = ?", subject)
    return row["tags"], row["priority"]


def test_sighup_refuses_a_bad_file_and_applies_a_good_one(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "gw")
    good = d.config.read_text().replace(
        'log_format = "json"', 'log_format = "json"\nwatch_config = false'
    )
    d.config.write_text(good)
    d.start()
    try:
        pid = d.proc.pid  # type: ignore[union-attr]
        assert d.send(_mail("before"))[0] == 250
        assert d.send(_mail("globex mail", "help@globex.test"), "help@globex.test")[0] == 250
        s = _status(d)
        assert (s["config_generation"], s["last_config_error"]) == (1, None)

        # 1. a syntax error
        d.config.write_text(good + "\n[[tenants\n")
        os.kill(pid, signal.SIGHUP)
        s = _wait(d, lambda s: s["last_config_error"], "the syntax error")
        assert "syntax" in s["last_config_error"] and s["pid"] == pid
        assert s["config_generation"] == 1
        assert d.send(_mail("during syntax error"))[0] == 250

        # 2. valid TOML, an unknown key: named with its line
        bad = good.replace('name = "Acme Support"', 'name = "Acme Support"\ncolour = "red"')
        d.config.write_text(bad)
        line = bad.splitlines().index('colour = "red"') + 1
        os.kill(pid, signal.SIGHUP)
        s = _wait(d, lambda s: "colour" in (s["last_config_error"] or ""), "the unknown key")
        assert f":{line}: tenants[0].colour: unknown key" in s["last_config_error"]
        assert d.proc.poll() is None and s["config_generation"] == 1  # type: ignore[union-attr]
        assert d.send(_mail("after reload, but refused"))[0] == 250
        assert _tags(d, "after reload, but refused") == ("[]", "normal")  # the old rules

        # 3. fixed, with a new rule; and globex removed from the file
        head, _, _ = good.partition('[[tenants]]\nslug = "globex"')
        d.config.write_text(
            head.replace('name = "Alice Agent"', 'name = "Alice Agent"\n' + NEW_RULE)
        )
        os.kill(pid, signal.SIGHUP)
        s = _wait(d, lambda s: s["config_generation"] == 2, "generation 2")
        assert s["last_config_error"] is None and s["pid"] == pid
        assert d.send(_mail("after reload"))[0] == 250
        assert _tags(d, "after reload") == ('["reloaded"]', "urgent")
        code, text = d.send(_mail("to a removed tenant", "help@globex.test"), "help@globex.test")
        assert code == 550 and text.startswith("5.1.1")
    finally:
        d.stop()
    # removing a tenant from the file never deletes its data
    assert len(d.query("SELECT 1 FROM tickets WHERE tenant = 'globex'")) == 1
    assert len(d.query("SELECT 1 FROM messages WHERE tenant = 'globex'")) == 1


def test_a_change_of_the_file_reloads_without_a_signal(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "gw").start()
    try:
        good = d.config.read_text()
        # an editor's save: write a temporary file, then rename it over the config
        tmp = d.config.with_name(".gateway.toml.swp")
        tmp.write_text(good + "\n[[tenants\n")
        os.replace(tmp, d.config)
        s = _wait(d, lambda s: s["last_config_error"], "the refused reload")
        assert "syntax" in s["last_config_error"] and s["config_generation"] == 1
        d.config.write_text(
            good.replace('name = "Alice Agent"', 'name = "Alice Agent"\n' + NEW_RULE)
        )
        s = _wait(d, lambda s: s["config_generation"] == 2, "generation 2")
        assert s["last_config_error"] is None
        assert d.send(_mail("after reload"))[0] == 250
        assert _tags(d, "after reload") == ('["reloaded"]', "urgent")
        # touching the file with the same bytes is not a new generation
        os.utime(d.config)
        time.sleep(2)
        assert _status(d)["config_generation"] == 2
    finally:
        d.stop()
    log = d.log_text()
    assert '"trigger":"watch"' in log and "config.reload_refused" in log
