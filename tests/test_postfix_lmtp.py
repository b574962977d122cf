"""A real Postfix hands mail to the LMTP listener, as docs/deploy.md tells operators to.

Postfix's LMTP client pipelines when LHLO offers PIPELINING (RFC 2033 requires it of
the server) and reads one reply per accepted recipient after the data (RFC 2033 4.2):
the one a rule refuses after DATA and the unknown one refused at RCPT are Postfix's to
bounce, the other is delivered once. The private instance is bench/postfix.py's
(Debian's ``postfix``, installed by ``make test`` with "No configuration"; run as root).
"""

from __future__ import annotations

import re
import smtplib
import time
from pathlib import Path

import pytest

from bench.common import workdir
from bench.postfix import Postfix, available
from tests.daemon import Daemon
from tests.mail import make_mail
from tests.test_lmtp import GLOBEX_REFUSES

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))


def _outcomes(pf: Postfix, rcpts: list[str], within: float = 60) -> dict[str, str]:
    """Each recipient's delivery line in Postfix's log, once all have one."""
    deadline = time.monotonic() + within
    found: dict[str, str] = {}
    while time.monotonic() < deadline:
        log = (
            (pf.dir / "maillog").read_text(errors="replace")
            if (pf.dir / "maillog").exists()
            else ""
        )
        for r in rcpts:
            m = re.search(rf"to=<{re.escape(r)}>,.*? status=(\w+) \((.*)\)", log)
            if m:
                found[r] = f"{m.group(1)}: {m.group(2)}"
        if len(found) == len(rcpts):
            return found
        time.sleep(0.2)
    raise AssertionError(f"not every recipient has an outcome: {found}\n{pf.log()}")


def test_postfix_delivers_over_lmtp_with_a_reply_per_recipient(tmp_path: Path) -> None:
    rcpts = ["support@acme.test", "help@globex.test", "nobody@acme.test"]
    mail = make_mail(sender="carol@client.test", subject="Via Postfix over LMTP")
    gw = Daemon(tmp_path / "gw", lmtp="127.0.0.1:0", extra=GLOBEX_REFUSES).start()
    try:
        # Postfix's own user must reach its queue: pytest's tmp_path is root's alone.
        with workdir("pf") as where:
            pf = Postfix(where, relay=f"lmtp:inet:127.0.0.1:{gw.lmtp_port}")
            with (pf.conf / "main.cf").open("a") as conf:  # each command and reply logged
                conf.write("debug_peer_list = 127.0.0.1\n")
            pf.start()
            try:
                with smtplib.SMTP("127.0.0.1", pf.port, timeout=30) as s:
                    s.sendmail("carol@client.test", rcpts, mail)
                got = _outcomes(pf, rcpts)
                log = (where / "maillog").read_text(errors="replace")
                talk = [
                    line.partition(": ")[2]
                    for line in log.splitlines()
                    if re.search(r"postfix/lmtp\[\d+\]: [<>] ", line)
                ]
                piped = "Using LMTP PIPELINING" in log
            finally:
                pf.stop()
        rows = gw.query("SELECT tenant, source, subject FROM messages")
    finally:
        gw.stop()
    # Postfix pipelined: MAIL, the three RCPTs and DATA went before it read a reply.
    assert piped, talk
    sent = [t.split(": ", 1)[1].split()[0] for t in talk]
    mail_at = sent.index("MAIL")
    assert sent[mail_at : mail_at + 5] == ["MAIL", "RCPT", "RCPT", "RCPT", "DATA"], talk
    assert all(t.startswith("> ") for t in talk[mail_at : mail_at + 5]), talk
    assert got["support@acme.test"].startswith("sent: 250 2.0.0"), got
    assert got["help@globex.test"].startswith("bounced"), got
    assert "550 5.7.1 Globex takes no mail" in got["help@globex.test"], got
    assert "end of DATA" in got["help@globex.test"], got  # one reply per recipient
    assert got["nobody@acme.test"].startswith("bounced"), got
    assert "RCPT TO" in got["nobody@acme.test"], got
    assert [tuple(r) for r in rows] == [("acme", "lmtp", "Via Postfix over LMTP")]
