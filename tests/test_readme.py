"""The README's tour does what it says: its smtplib snippet, run as printed against
a real gateway, prints the 250 answer to DATA, whose queued id finds the new ticket."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.clamd_harness import Clamd
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


def test_the_readme_agent_answers_with_a_file(tmp_path: Path, clamd: Clamd) -> None:
    """The tour's second snippet, run as printed with the notice's Reply-To: the
    client's relay carries guide.pdf."""
    text = README.read_text(encoding="utf-8")
    found = re.search(r"python3 - '[^']+' <<'PY'\n(.*?)\n    PY\n", text, re.S)
    assert found, "the README has no agent's answer"
    code = textwrap.dedent(found.group(1)).replace("agent@acme.test", "alice@acme.test")
    d = Daemon(tmp_path / "gw", scanner=clamd.address).start()
    try:
        first = subprocess.run(
            [sys.executable, "-c", _snippet().replace("2525", str(d.port))],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert first.stdout.startswith("250"), first.stderr
        body = d.query("SELECT body FROM outbox WHERE kind = 'notice'")[0][0]
        reply_to = re.search(rb"Reply-To: (support\+\S+@acme\.test)", bytes(body)).group(1)  # type: ignore[union-attr]
        out = subprocess.run(
            [sys.executable, "-c", code.replace("2525", str(d.port)), reply_to.decode()],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert re.fullmatch(r"250 2\.0\.0 OK queued as [0-9a-f]{16}\n", out.stdout), out.stderr
        relay = bytes(d.query("SELECT body FROM outbox WHERE kind = 'relay'")[0][0])
        assert b'filename="guide.pdf"' in relay
        assert b"please follow the attached guide" in relay
    finally:
        d.stop()
