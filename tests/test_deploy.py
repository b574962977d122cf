"""The systemd unit in deploy/: systemd itself checks it (``systemd-analyze verify``, no
warnings), its hardening scores low exposure offline, and the settings the deployment
guide promises are there."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "helpdesk-gateway.service"
INSTALLED = "/opt/helpdesk-gateway/.venv/bin/gateway"


@pytest.fixture
def unit(tmp_path: Path) -> Path:
    """The unit as installed, pointing at this checkout's gateway (verify checks that
    ExecStart exists and is executable)."""
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze missing: make system-deps installs Debian's systemd")
    gateway = Path(sys.executable).with_name("gateway")
    assert gateway.exists()
    out = tmp_path / UNIT.name
    out.write_text(UNIT.read_text().replace(INSTALLED, str(gateway)))
    return out


def _settings(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_systemd_verifies_the_unit_without_warnings(unit: Path) -> None:
    run = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr.strip() == "", run.stderr  # unknown keys are warnings, not errors


def test_verify_would_catch_a_mistake(unit: Path) -> None:
    """The check above can fail: a misspelt hardening key is reported."""
    broken = unit.with_name("broken.service")
    broken.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtectSistem=strict"))
    run = subprocess.run(
        ["systemd-analyze", "verify", str(broken)], capture_output=True, text=True, timeout=60
    )
    assert "Unknown key 'ProtectSistem'" in run.stderr


def test_hardening_exposure_is_low(unit: Path) -> None:
    run = subprocess.run(
        # The threshold counts tenths: 30 is an overall exposure of 3.0 ("OK" is below 5).
        ["systemd-analyze", "security", "--offline=true", "--threshold=30", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d)", run.stdout)
    assert m is not None and float(m.group(1)) < 3.0, run.stdout[-500:]


def test_the_promised_settings() -> None:
    s = _settings(UNIT)
    assert s["User"] == ["helpdesk-gateway"] and s["Group"] == ["helpdesk-gateway"]
    assert s["ProtectSystem"] == ["strict"] and s["NoNewPrivileges"] == ["yes"]
    assert "/var/lib/helpdesk-gateway" in s["ReadWritePaths"][0].split()
    # Port 25 is the only reason for a capability, and it is the only one.
    assert s["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert s["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]  # SIGHUP reloads gateway.toml
    assert s["ExecStart"] == [f"{INSTALLED} run"]
