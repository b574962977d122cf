"""The smaller defects of issue #16, each reproduced against a running daemon.

Every test here is the attack as an outsider would run it (real SMTP, real
HTTP to ``gateway run``) and asserts that it no longer works.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from routing.secrets import load_keyring
from tests.daemon import Daemon


def _cleartext_account(home: Path, host: str) -> str:
    secret = load_keyring(home / "var" / "keys.toml").encrypt(
        "hunter2", tenant="acme", field="password"
    )
    return f"""
[tenants.outbound]
host = "{host}"
security = "none"
username = "acme"
password = "{secret}"
"""


def test_a_password_in_clear_to_another_host_is_refused(tmp_path: Path) -> None:
    """smtplib would send AUTH PLAIN (the password in base64) over plain TCP."""
    home = tmp_path / "gw"
    d = Daemon(home, acme_extra=_cleartext_account(home, "smtp.example.net"))
    check = subprocess.run(
        [sys.executable, "-m", "gateway", "config", "check", str(d.config)],
        capture_output=True,
        text=True,
        cwd=home,
    )
    assert check.returncode != 0
    assert "tenants[0].outbound.security" in check.stderr and "127.0.0.1" in check.stderr
    with pytest.raises(RuntimeError, match=r"outbound\.security"):
        d.start()
    assert d.proc is not None and d.proc.returncode != 0


def test_a_password_in_clear_to_loopback_stays_allowed(tmp_path: Path) -> None:
    home = tmp_path / "gw"
    d = Daemon(home, acme_extra=_cleartext_account(home, "127.0.0.1"))
    check = subprocess.run(
        [sys.executable, "-m", "gateway", "config", "check", str(d.config)],
        capture_output=True,
        text=True,
        cwd=home,
    )
    assert check.returncode == 0, check.stderr


def test_no_address_reaches_the_log_through_flanker(tmp_path: Path) -> None:
    """A From header only flanker's grammar reads: its lexer logs the rest of the
    header as its token, addresses and all."""
    d = Daemon(tmp_path / "gw").start()
    try:
        raw = (
            b"From: Zed Quux <quux.distinct@client.test> (c\x01 zeta.distinct@client.test)\r\n"
            b"To: support@acme.test\r\n"
            b"Cc: Yve <yve.distinct@client.test>, (x\x01 xan.distinct@client.test)\r\n"
            b"Subject: Hello\r\n"
            b"Message-ID: <flanker-1@client.test>\r\n"
            b"\r\n"
            b"Hello.\r\n"
        )
        code, _ = d.send(raw, sender="quux.distinct@client.test")
        assert code == 250
    finally:
        d.stop()
    log = d.log_path.read_text(encoding="utf-8", errors="replace")
    assert "pipeline" in log or "smtp" in log  # the daemon did log
    for who in ("quux.distinct", "zeta.distinct", "yve.distinct", "xan.distinct"):
        assert who not in log, who
