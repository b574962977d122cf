"""A private Postfix on 127.0.0.1: smtpd -> queue (cleanup fsyncs) -> ``discard:``,
or to ``relay`` (tests/test_postfix_lmtp.py: the gateway's LMTP listener).

The reference for "how fast does a real MTA durably queue this mail here":
Postfix's cleanup writes and fsyncs each message into its queue before
smtpd answers 250, the same promise the gateway makes. Everything lives
under ``workdir`` (config, queue, data, log); the system's Postfix is never
configured or started. The master runs in the foreground as our child
(``postfix start-fg``) and is stopped by its pid. Needs root (Postfix drops
to its ``postfix`` user) and Debian's ``postfix`` package (``make bench``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from bench.common import skipped_by_env, stop_pid
from tests.ports import free_port

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"


def available() -> str | None:
    """None when Postfix can be run here, else why not."""
    if not Path(POSTFIX).exists() or skipped_by_env("postfix"):
        return "postfix absent or BENCH_SKIP (make bench installs Debian's postfix)"
    if os.geteuid() != 0:
        return "postfix needs root to run a private instance"
    return None


class Postfix:
    def __init__(self, workdir: Path, relay: str = "discard:") -> None:
        """``relay``: the transport for acme.test and globex.test (``discard:``, or
        ``lmtp:inet:127.0.0.1:<port>``)."""
        self.dir = workdir
        self.port = free_port()
        self.conf = workdir / "conf"
        self.proc: subprocess.Popen[bytes] | None = None
        for d in ("conf", "queue", "data"):
            (workdir / d).mkdir(parents=True, exist_ok=True)
        shutil.chown(workdir / "data", "postfix")
        master = Path("/etc/postfix/master.cf").read_text()
        lines = []
        for line in master.splitlines():
            if line.startswith("smtp      inet"):
                line = f"127.0.0.1:{self.port} inet n - n - - smtpd"
            elif line.startswith("lmtp      unix"):
                line = "lmtp unix - - n - - lmtp"  # not chrooted in our private queue
            lines.append(line)
        (self.conf / "master.cf").write_text("\n".join(lines) + "\n")
        (self.conf / "main.cf").write_text(
            f"""\
compatibility_level = 3.6
config_directory = {self.conf}
queue_directory = {workdir / "queue"}
data_directory = {workdir / "data"}
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix.bench.test
mydestination =
mynetworks = 127.0.0.0/8
relay_domains = acme.test globex.test
default_transport = discard:
relay_transport = {relay}
local_transport = discard:
smtpd_recipient_restrictions = permit_mynetworks, reject
message_size_limit = 52428800
maillog_file_prefixes = {workdir}
maillog_file = {workdir / "maillog"}
"""
        )

    def start(self, timeout: float = 30) -> Postfix:
        log = open(self.dir / "postfix.out", "ab")
        self.proc = subprocess.Popen(
            [POSTFIX, "-c", str(self.conf), "start-fg"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"220"):
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"postfix did not start: {self.log()}")

    def log(self) -> str:
        text = ""
        for name in ("postfix.out", "maillog"):
            p = self.dir / name
            if p.exists():
                text += p.read_text(errors="replace")[-2000:]
        return text

    def stop(self) -> None:
        """SIGTERM the master by the pid in its pid file (``start-fg`` runs it under a
        shell we started), then wait for that shell, our child."""
        if self.proc is None:
            return
        pidfile = self.dir / "queue" / "pid" / "master.pid"
        with contextlib.suppress(OSError, ValueError, ProcessLookupError):
            os.kill(int(pidfile.read_text().split()[0]), signal.SIGTERM)
        stop_pid(self.proc, timeout=20)
        self.proc = None
