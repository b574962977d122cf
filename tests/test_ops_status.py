"""``gateway status``: one screen for an operator, with the daemon running."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.daemon import Daemon, worker_pids
from tests.mail import make_mail


def test_one_screen(tmp_path: Path) -> None:
    clock = tmp_path / "clock"
    clock.write_text("0")
    keyfile = tmp_path / "backup.key"
    keyfile.write_text(base64.b64encode(os.urandom(32)).decode())
    d = Daemon(
        tmp_path / "gw",
        acme_extra='[tenants.sla]\ncalendar = "24x7"\nfirst_response = "1h"\n',
        extra=f'[backup]\nenabled = true\ndir = "{tmp_path / "bk"}"\nkey_file = "{keyfile}"\n',
        env={"GATEWAY_TEST_CLOCK_FILE": str(clock)},
    ).start()
    try:
        assert d.send(make_mail(subject="one"))[0] == 250
        assert d.send(make_mail(subject="two"))[0] == 250
        clock.write_text(str(2 * 3600))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            report = json.loads(d.cli("status", "--json").stdout)
            if (report["daemon"] or {}).get("ops", {}).get("last_backup"):
                break
            time.sleep(0.3)
        out = d.cli("status")
        screen = out.stdout.decode()
        print(screen)
        assert out.returncode == 69  # no scanner in this test: mail with attachments waits
        assert f"smtp     127.0.0.1:{d.port}  no TLS" in screen
        assert f"http     127.0.0.1:{d.http_port}" in screen
        assert re.search(
            r"^outbox   \d+ waiting \(oldest \S+\), \d+ sent, \d+ given up$", screen, re.M
        )
        assert "sla      acme: 2 open, 2 BREACHED, 0 at risk, 0 waiting on the client" in screen
        assert re.search(r"^backup   daily, 1 kept in \S+; last \S+ \(\S+ h ago", screen, re.M)
        assert re.search(r"^versions gateway 0\.1\.0, schema \d{4}, python 3", screen, re.M)
        assert re.search(r"^errors   ", screen, re.M)
        assert len(screen.splitlines()) <= 24  # one screen
        report = json.loads(d.cli("status", "--json").stdout)
        assert report["sla"]["acme"]["breached"] == 2 and report["backups"]["count"] == 1
    finally:
        d.stop()


def _workers_shown(d: Daemon, ok: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
    """The daemon's workers in ``gateway status --json`` once ``ok`` (it rewrites its
    status file every second)."""
    deadline = time.monotonic() + 30
    while True:
        shown = (json.loads(d.cli("status", "--json").stdout)["daemon"] or {}).get("workers")
        if shown and ok(shown):
            return shown
        assert time.monotonic() < deadline, shown
        time.sleep(0.3)


def test_the_worker_processes_are_on_the_screen(tmp_path: Path) -> None:
    """Parse workers and the send worker, one path for both: pid, alive, in flight, and
    a replacement after the send worker is killed; /status says the same."""
    d = Daemon(
        tmp_path / "gw", gateway_extra="parse_workers = 2\n", extra="[outbound]\nsend_workers = 1\n"
    ).start()
    try:
        assert d.proc is not None
        parse = set(worker_pids(d.proc.pid, "gateway.intake.parse_worker"))
        (send,) = worker_pids(d.proc.pid, "gateway.sending.worker")
        shown = _workers_shown(d, lambda ws: len(ws) == 3)
        assert {w["pid"] for w in shown if w["role"] == "parse"} == parse
        assert [w["pid"] for w in shown if w["role"] == "send"] == [send]
        assert all(w["alive"] and w["in_flight"] == 0 and w["replaced"] == 0 for w in shown)
        screen = d.cli("status").stdout.decode()
        pattern = r"^workers  parse (\d+), (\d+) \(0 in flight\); send (\d+) \(0 in flight\)$"
        line = re.search(pattern, screen, re.M)
        assert line is not None, screen
        assert {int(line[1]), int(line[2])} == parse and int(line[3]) == send
        url = f"http://127.0.0.1:{d.http_port}/status"
        with urllib.request.urlopen(url, timeout=10) as r:
            assert {w["pid"] for w in json.loads(r.read())["workers"]} == parse | {send}

        os.kill(send, signal.SIGKILL)
        shown = _workers_shown(
            d, lambda ws: any(w["role"] == "send" and w["replaced"] == 1 for w in ws)
        )
        (again,) = [w for w in shown if w["role"] == "send"]
        assert again["alive"] and again["pid"] != send
        assert again["pid"] in worker_pids(d.proc.pid, "gateway.sending.worker")
        assert f"send {again['pid']} (0 in flight, 1 replaced)" in d.cli("status").stdout.decode()
    finally:
        assert d.stop() == 0
