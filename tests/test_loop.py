"""``[gateway] loop``: the daemon runs on the loop the config names, and takes mail on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.loop import loop_name
from routing.config import parse_config
from tests.daemon import Daemon

MAIL = b"From: c@x.test\r\nTo: support@acme.test\r\nSubject: loop\r\n\r\nhello\r\n"


@pytest.mark.parametrize("choice", ["asyncio", "uvloop"])
def test_daemon_runs_on_the_named_loop(tmp_path: Path, choice: str) -> None:
    d = Daemon(tmp_path / "gw", gateway_extra=f'loop = "{choice}"').start()
    try:
        code, text = d.send(MAIL)
        assert code == 250, text
    finally:
        assert d.stop() == 0
    assert f'"loop":"{choice}"' in d.log_text()


def test_auto_takes_uvloop_when_installed() -> None:
    # uvloop is in the test extras, so "auto" means it here
    assert loop_name("auto") == "uvloop"
    assert loop_name("asyncio") == "asyncio"


def test_bad_loop_names_key_and_line() -> None:
    parsed = parse_config(Path("/x.toml"), '[gateway]\nloop = "trio"\n')
    assert parsed.checker.problems == [
        "/x.toml:2: gateway.loop: must be 'auto', 'asyncio' or 'uvloop'"
    ]
