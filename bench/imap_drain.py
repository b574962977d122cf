"""IMAP intake: backlog drain rate and APPEND-to-ticket latency under IDLE, real Dovecot.

1. N corpus messages (../shared/corpus, attachments scanned by a real clamd)
   are APPENDed to a Dovecot mailbox; the gateway starts and drains them.
   Reported: messages per second from the first commit to an empty folder,
   next to the same messages delivered over SMTP to a fresh gateway (K=1),
   measured in the same run.
2. With the gateway idling, M single messages are APPENDed one at a time;
   the time from the APPEND's completion to the committed row is measured.
Bounded in count and time. --write appends the tables to BENCHMARKS.md.

    .venv/bin/python bench/imap_drain.py [--count 5000] [--latency 100] [--write]
"""

from __future__ import annotations

import argparse
import imaplib
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from routing.secrets import load_keyring  # noqa: E402
from tests.clamd_harness import running_clamd  # noqa: E402
from tests.daemon import Daemon  # noqa: E402
from tests.dovecot_harness import Dovecot  # noqa: E402
from tests.mail import make_mail  # noqa: E402

USER, PASSWORD = "support", "secret"


def corpus(n: int, folder: Path) -> list[bytes]:
    gen = ROOT.parent / "shared" / "corpus" / "gen_corpus.py"
    subprocess.run(
        [sys.executable, str(gen), "--count", str(n), "--seed", "11", str(folder)],
        check=True,
        capture_output=True,
    )
    return [p.read_bytes() for p in sorted(folder.glob("w*.eml"))][:n]


def count(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
            return int(c.execute("SELECT count(*) FROM messages").fetchone()[0])
    except sqlite3.Error:
        return 0


def gateway(home: Path, server: Dovecot, scanner: str) -> Daemon:
    secret = load_keyring(home / "var" / "keys.toml").encrypt(
        PASSWORD, tenant="acme", field="password"
    )
    block = (
        f'[[tenants.imap]]\nhost = "127.0.0.1"\nport = {server.port}\nsecurity = "none"\n'
        f'username = "{USER}"\npassword = "{secret}"\npoll_interval = 1\ntimeout = 30\n'
    )
    return Daemon(home, acme_extra=block, scanner=scanner)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--latency", type=int, default=100)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, running_clamd() as clamd:
        tmpd = Path(tmp)
        mails = corpus(args.count, tmpd / "corpus")
        n = len(mails)
        work = Path(tempfile.mkdtemp(dir="/tmp"))
        server = Dovecot(work / "dovecot", {USER: PASSWORD})
        server.start()
        try:
            client = imaplib.IMAP4("127.0.0.1", server.port)
            client.login(USER, PASSWORD)
            for data in mails:
                client.append("INBOX", None, None, data)
            client.logout()

            d = gateway(tmpd / "gw", server, clamd.address)
            db = d.home / "var" / "gateway.db"
            d.start()
            deadline = time.monotonic() + 1800
            while count(db) == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            t0 = time.perf_counter()
            while server.count(USER) > 0 and time.monotonic() < deadline:
                time.sleep(0.2)
            drain = time.perf_counter() - t0
            stored = count(db)

            # latency under IDLE, one APPEND at a time
            lat: list[float] = []
            client = imaplib.IMAP4("127.0.0.1", server.port)
            client.login(USER, PASSWORD)
            for i in range(args.latency):
                before = count(db)
                data = make_mail(sender=f"lat{i}@client.test", subject=f"latency {i}")
                client.append("INBOX", None, None, data)
                t = time.perf_counter()
                limit = time.monotonic() + 30
                while count(db) <= before and time.monotonic() < limit:
                    time.sleep(0.002)
                lat.append((time.perf_counter() - t) * 1000)
            client.logout()
            d.stop()

            # the same corpus over SMTP to a fresh gateway, one sender (K=1), same run
            s = Daemon(tmpd / "smtp", scanner=clamd.address).start()
            t0 = time.perf_counter()
            with s.smtp() as conn:
                for data in mails:
                    try:
                        conn.sendmail("bench@client.test", ["support@acme.test"], data)
                    except Exception:  # a refused message counts as handled, as over IMAP
                        conn.rset()
            smtp_secs = time.perf_counter() - t0
            s.stop()
        finally:
            server.stop()
    lat.sort()
    stamp = time.strftime("%Y-%m-%d %H:%M")
    p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    text = (
        f"### IMAP intake from a real Dovecot, corpus N={n} ({stamp}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()})\n\n"
        "| what | figure |\n|---|---|\n"
        f"| backlog drain (IMAP, one mailbox) | {n / drain:.0f} msg/s ({stored} rows from {n}) |\n"
        f"| the same messages over SMTP, one session | {n / smtp_secs:.0f} msg/s |\n"
        f"| ratio IMAP / SMTP | {smtp_secs / drain:.2f} |\n"
        f"| APPEND to committed row under IDLE, {len(lat)} single messages | "
        f"p50 {p50:.0f} ms, p99 {p99:.0f} ms |\n"
    )
    print(text)
    if args.write:
        with open(ROOT / "BENCHMARKS.md", "a", encoding="utf-8") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
