"""The README's tour does what it says: its smtplib snippet, run as printed against
a real gateway, prints the 250 answer to DATA, whose queued id finds the new ticket."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.daemon import Daemon

README = Path(__file__).resolve().parent.parent / "README.md"


def _snippet() -> str:
    text = README.read_text(encoding="utf-8")
    found = re.search(r"python3 - <<'PY'\n(.*?)\n    PY\n", text, re.S)
    assert found, "the README has no smtplib snippet"
    return textwrap.dedent(found.group(1))


def test_the_readme_smtplib_snippet_prints_the_250_with_the_queued_id(
    fresh_daemon: Daemon,
) -> None:
    code = _snippet()
    assert '"127.0.0.1", 2525' in code  # the address `make run` listens on
    d = fresh_daemon.start()
    out = subprocess.run(
        [sys.executable, "-c", code.replace('"127.0.0.1", 2525', f'"127.0.0.1", {d.port}')],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r"250 2\.0\.0 OK queued as [0-9a-f]{16}\n", out.stdout), out.stdout
    # The answer names no ticket, but the message it names was committed before it,
    # and `gateway tickets show <id>` finds its ticket as the README says.
    (ref,) = d.refs(out.stdout)
    queued = out.stdout.split()[-1]
    shown = d.cli("tickets", "show", queued)
    assert shown.returncode == 0 and shown.stdout.decode().startswith(ref), shown
    assert f"queued as:  {queued}" in shown.stdout.decode()  # shown with its message
