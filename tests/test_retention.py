"""Retention per tenant: the config keys, ``gateway purge [--dry-run]`` and the daemon's own purge.

The store is filled through real SMTP (attachments scanned by a real clamd);
time is moved with $GATEWAY_TEST_CLOCK_FILE, which the daemon and the
commands read, because a year cannot be waited for.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from routing.config import Retention, load_config
from routing.errors import ConfigError
from tests.clamd_harness import Clamd
from tests.daemon import Daemon
from tests.mail import make_mail
from tests.test_privacy import _agent_reply_address, _ref, _send
from tests.test_web_client import Browser, _request_link

DAY = 86400
RETENTION = """
[tenants.retention]
closed_tickets_days = 30
raw_messages_days = 7
"""
FILE = b"erin's contract, to be kept only while the ticket is\n" * 10


def _config(tmp_path: Path, tenant_extra: str) -> Path:
    p = tmp_path / "gateway.toml"
    p.write_text(
        f'[[tenants]]\nslug = "acme"\naddresses = ["support@acme.test"]\n{tenant_extra}\n',
        encoding="utf-8",
    )
    return p


def test_retention_keys_defaults_and_errors(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path, ""))
    assert cfg.tenants[0].retention == Retention(365, 90, 365)
    assert cfg.tenants[0].log_addresses is False
    cfg = load_config(
        _config(tmp_path, "log_addresses = true\n[tenants.retention]\nraw_messages_days = 0\n")
    )
    assert cfg.tenants[0].retention.raw_messages_days == 0 and cfg.tenants[0].log_addresses
    p = _config(
        tmp_path,
        'log_addresses = "yes"\n[tenants.retention]\nclosed_tickets_days = -1\n'
        'audit_days = "1y"\nforever = true\n',
    )
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert sorted(info.value.problems) == sorted(
        [
            f"{p}:4: tenants[0].log_addresses: expected bool",
            f"{p}:6: tenants[0].retention.closed_tickets_days: must be 0 (keep for ever) "
            "or a number of days",
            f"{p}:7: tenants[0].retention.audit_days: expected int",
            f"{p}:8: tenants[0].retention.forever: unknown key",
        ]
    )


def _count(d: Daemon, sql: str, *params: object) -> int:
    return int(d.query(sql, *params)[0][0])


def _raw_files(d: Daemon, tenant: str) -> list[bool]:
    rows = d.query("SELECT raw_sha256 FROM messages WHERE tenant = ? ORDER BY id", tenant)
    return [d.blob(r[0]) is not None for r in rows]


def _purge_logged(d: Daemon, tenant: str) -> bool:
    for line in d.log_path.read_bytes().splitlines():
        if b'"retention.purged"' in line and tenant in json.loads(line).get("purged", {}):
            return True
    return False


@pytest.mark.parametrize("blobs", ["files", "database"])
def test_purge_dry_run_daemon_and_command(tmp_path: Path, clamd: Clamd, blobs: str) -> None:
    clock = tmp_path / "clock"
    clock.write_text("0")
    d = Daemon(
        tmp_path / "gw",
        blobs=blobs,
        scanner=clamd.address,
        acme_extra=RETENTION,
        http_extra="insecure_cookies = true",
        env={"GATEWAY_TEST_CLOCK_FILE": str(clock)},
    ).start()
    try:
        erin, frank = "erin@client.test", "frank@client.test"
        closed = _ref(
        d,
            _send(
                d,
                make_mail(sender=erin, attachments=[("c.pdf", "application/pdf", FILE)]),
                erin,
            )
        )
        kept = _ref(d, _send(d, make_mail(sender=frank, subject="Still open"), frank))
        _send(d, make_mail(sender="gina@client.test", to="help@globex.test"),
              "gina@client.test", "help@globex.test")  # fmt: skip
        to = _agent_reply_address(d, closed)
        _send(d, make_mail(sender="alice@acme.test", to=to, body="#close\nDone."),
              "alice@acme.test", to)  # fmt: skip
        assert _request_link(Browser(d), erin)[0] == 200
        file_sha = hashlib.sha256(FILE).hexdigest()
        before = {
            t: _count(d, f"SELECT count(*) FROM {t}")
            for t in ("tickets", "messages", "attachments", "audit_events", "link_tokens")
        }
        assert _raw_files(d, "acme") == [True, True, True]

        # +10 days, dry: acme's raw mail (7 days) and the expired link would go; globex's not.
        clock.write_text(str(10 * DAY))
        res = d.cli("purge", "--dry-run")
        assert res.returncode == 0, res.stderr
        lines = res.stdout.decode().splitlines()
        assert lines[0].startswith(
            "acme: would delete 0 closed tickets, 3 raw messages, 0 sent mails, "
            "0 audit entries, 1 expired links"
        )
        assert lines[1].startswith("globex: would delete 0 closed tickets, 0 raw messages")
        after = {t: _count(d, f"SELECT count(*) FROM {t}") for t in before}
        assert after == before and _raw_files(d, "acme") == [True, True, True]

        # The daemon purges once at start: restarted at +10 days, it does what the dry run said.
        d.stop()
        d.start()
        deadline = time.monotonic() + 60
        while not _purge_logged(d, "acme"):  # logged once its blobs are collected too
            assert time.monotonic() < deadline, d.log_text()
            time.sleep(0.1)
        row = d.query("SELECT actor, detail FROM audit_events WHERE action = 'retention.purged'")
        assert row[0][0] == "gateway" and json.loads(row[0][1])["raw_messages"] == 3
        assert _raw_files(d, "acme") == [False, False, False]
        assert _raw_files(d, "globex") == [True]
        assert d.blob(file_sha) == FILE  # the ticket is still here, so is its file
        assert _count(d, "SELECT count(*) FROM link_tokens") == 0

        # +40 days: the closed ticket goes with its messages and file; the open one stays.
        clock.write_text(str(40 * DAY))
        res = d.cli("purge")
        assert res.returncode == 0, res.stderr
        assert res.stdout.decode().startswith(f"acme: deleted 1 closed tickets ({closed})")
        refs = [r[0] for r in d.query("SELECT ref FROM tickets WHERE tenant = 'acme'")]
        assert refs == [kept]
        assert _count(d, "SELECT count(*) FROM attachments") == 0 and d.blob(file_sha) is None

        # +400 days: the audit log keeps a year; what is left is this purge's own entry.
        clock.write_text(str(400 * DAY))
        assert d.cli("purge").returncode == 0
        rows = d.query("SELECT tenant, action, actor FROM audit_events ORDER BY tenant")
        assert [(r[0], r[1], r[2].startswith("admin")) for r in rows] == [
            ("acme", "retention.purged", True),
            ("globex", "retention.purged", True),
        ]
        assert _raw_files(d, "globex") == [False]  # its own 90 days have passed too
    finally:
        d.stop()
