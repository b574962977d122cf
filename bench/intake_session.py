"""The SMTP intake alone: CPU per message of our aiosmtpd protocol side, nothing behind it.

Why: figure 1's CPU per message mixes the protocol with parsing, the writer and the
outbox; a change to ``gateway/intake/smtp.py`` is worth a few per cent of that, within
its noise. Here the listener is the daemon's own (``start_smtp``, ``IntakeHandler``)
but the pipeline is a stub that answers 250 at once (in this bench only, never in
tests), and the load is bench/smtp_client.py's in its own process, so this process's
CPU (user + system) is the intake's: EHLO once per session, then MAIL, RCPT, DATA.

    .venv/bin/python -m bench.intake_session [messages] [sessions]

prints one JSON line. To compare another checkout, copy this file and smtp_client.py
to a folder and run the copy with ``PYTHONPATH`` set to that checkout.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from gateway.intake.replies import queue_id
from gateway.intake.smtp import IntakeHandler, start_smtp
from parsers.types import RawMessage
from routing.verdicts import Accepted

CLIENT = Path(__file__).with_name("smtp_client.py")
_BODY = (
    b"From: Alice <alice@example.org>\r\nTo: help@acme.test\r\nSubject: printer\r\n"
    b"Message-ID: <m@example.org>\r\nDate: Wed, 02 Dec 2026 10:00:00 +0000\r\n\r\n"
    + b"The printer on the third floor says PC LOAD LETTER again.\r\n" * 16
    + b".a line that starts with a dot\r\n.\r\n"  # dot-stuffed below
)


class _StubPipeline:
    """Every recipient known, every message accepted at once: the bench's stub."""

    index = SimpleNamespace(lookup=lambda address: address)

    async def process(self, raw: RawMessage, helo: str = "") -> Accepted:
        return Accepted((), queue_id())


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _run(messages: int, sessions: int, load: Path) -> dict[str, Any]:
    handler = IntakeHandler(_StubPipeline())  # type: ignore[arg-type]
    server = await start_smtp(handler, "127.0.0.1", 0, hostname="bench.test", max_size=10**7)
    port = server.sockets[0].getsockname()[1]
    cpu0 = _cpu()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(CLIENT), str(port), str(load), str(sessions),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 300)
    finally:
        if proc.returncode is None:
            proc.kill()
        server.close()
    cpu = _cpu() - cpu0
    if proc.returncode != 0:
        raise RuntimeError(f"load client failed: {err.decode()[-2000:]}")
    result = json.loads(out)
    n = max(1, result["accepted"])
    return {
        "messages": messages,
        "sessions": sessions,
        "accepted": result["accepted"],
        "rate": round(result["rate"], 1),
        "cpu_us_per_msg": round(cpu / n * 1e6, 1),
    }


def main() -> int:
    messages = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    sessions = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    payload = _BODY.replace(b"\r\n.a line", b"\r\n..a line")
    with tempfile.TemporaryDirectory(prefix="bench-intake-") as tmp:
        load = Path(tmp) / "load.pkl"
        with open(load, "wb") as f:
            pickle.dump([[("help@acme.test", payload)] * messages], f)
        print(json.dumps(asyncio.run(_run(messages, sessions, load))))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
