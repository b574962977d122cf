"""``gateway status``: one screen for an operator, with the daemon running."""

from __future__ import annotations

import base64
import json
import os
import re
import time
from pathlib import Path

from tests.daemon import Daemon
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
