"""Figure 4: IMAP backlog drain and IDLE latency, real Dovecot; plus the IMAP half of figure 6.

Backlog: N corpus messages (the whole mix; a real clamd scans attachments) are
written straight into the mailbox's Maildir (what a delivery agent does; an
IMAP APPEND per message would take longer than the drain), a fresh gateway
starts, and the drain rate is counted from its first committed row to an
empty INBOX. Paired in the same run: the same messages over SMTP, one session
(K=1), to another fresh gateway: one sender's messages in order, as a
mailbox's are (issue 21 names it the ceiling; the drain commits in UID order too,
but a fetched batch goes through the pipeline at once, gateway/intake/in_order.py,
so it may pass it). Then, with the gateway in IDLE, M single messages
are APPENDed one at a time and the time from the APPEND's completion to the
committed row is measured.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import pwd
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import (
    Mail,
    corpus,
    count_rows,
    cpu_seconds,
    peak_rss,
    percentile,
    run_load,
    summary,
    workdir,
    write_load,
)
from routing.secrets import load_keyring
from tests.daemon import Daemon
from tests.dovecot_harness import MAIL_GROUP, MAIL_USER, Dovecot

USER, PASSWORD = "support", "secret"


def fill_maildir(server: Dovecot, user: str, datas: list[bytes]) -> float:
    """Write messages into the user's Maildir ``new/`` directly; seconds taken.

    Files are named as a delivery agent names them and belong to the mail user,
    so Dovecot indexes them on the first SELECT and may move and expunge them.
    """
    t0 = time.perf_counter()
    md = server.home(user) / "Maildir"
    pw = pwd.getpwnam(MAIL_USER)
    gid = pwd.getpwnam(MAIL_USER).pw_gid
    with contextlib.suppress(KeyError):
        import grp

        gid = grp.getgrnam(MAIL_GROUP).gr_gid
    for sub in ("", "new", "cur", "tmp"):
        (md / sub).mkdir(parents=True, exist_ok=True)
        os.chown(md / sub, pw.pw_uid, gid)
    base = int(time.time())
    for i, data in enumerate(datas):
        path = md / "new" / f"{base}.M{i}P{os.getpid()}.bench"
        with open(path, "wb") as f:
            f.write(data.replace(b"\r\n", b"\n"))
        os.chown(path, pw.pw_uid, gid)
    return time.perf_counter() - t0


def imap_gateway(home: Path, server: Dovecot, scanner: str, poll: float = 1.0) -> Daemon:
    """A gateway whose tenant acme reads ``support``'s INBOX on ``server``."""
    secret = load_keyring(home / "var" / "keys.toml").encrypt(
        PASSWORD, tenant="acme", field="password"
    )
    block = (
        f'[[tenants.imap]]\nhost = "127.0.0.1"\nport = {server.port}\nsecurity = "none"\n'
        f'username = "{USER}"\npassword = "{secret}"\npoll_interval = {poll}\ntimeout = 30\n'
    )
    return Daemon(home, acme_extra=block, scanner=scanner)


def _wait_first_row(db: Path, deadline: float) -> None:
    while count_rows(db) == 0 and time.monotonic() < deadline:
        time.sleep(0.01)


def _drain_run(
    tmp: Path, mails: list[Mail], scanner: str, latency: int, timeout: float
) -> dict[str, Any]:
    server = Dovecot(tmp / "dovecot", {USER: PASSWORD})
    server.start()
    try:
        fill_maildir(server, USER, [m.data for m in mails])
        d = imap_gateway(tmp / "gw", server, scanner)
        db = d.home / "var" / "gateway.db"
        d.start()
        try:
            deadline = time.monotonic() + timeout
            _wait_first_row(db, deadline)
            t0 = time.perf_counter()
            left = len(mails)
            # The folder is asked (a doveadm process) only when no row came in the last
            # 0.05 s: one every 0.2 s took a share of the 2 cores the drain runs on.
            rows = -1
            while time.monotonic() < deadline:
                now = count_rows(db)
                if now == rows:
                    left = server.count(USER)
                    if left == 0:
                        break
                rows = now
                time.sleep(0.05)
            drain = time.perf_counter() - t0
            rows = count_rows(db)
            lat = _idle_latency(server, db, latency)
            assert d.proc is not None
            rss = peak_rss(d.proc.pid)
        finally:
            d.stop()
        bare = _bare_idle(server, latency)
    finally:
        server.stop()
    done = len(mails) - left
    return {
        "messages": len(mails),
        "drained": done,
        "rows": rows,
        "secs": drain,
        "rate": done / drain if drain else 0.0,
        "idle_ms": lat,
        "bare_idle_ms": bare,
        "peak_rss": rss,
    }


def _idle_latency(server: Dovecot, db: Path, n: int) -> list[float]:
    """APPEND one message at a time; ms from the APPEND's OK to the committed row."""
    out: list[float] = []
    client = imaplib.IMAP4("127.0.0.1", server.port, timeout=30)
    client.login(USER, PASSWORD)
    try:
        for i in range(n):
            before = count_rows(db)
            _append_one(client, i)
            t = time.perf_counter()
            limit = time.monotonic() + 30
            while count_rows(db) <= before and time.monotonic() < limit:
                time.sleep(0.002)
            out.append((time.perf_counter() - t) * 1000)
            time.sleep(0.05)  # let the gateway go back to IDLE
    finally:
        with contextlib.suppress(Exception):
            client.logout()
    return out


def _append_one(client: imaplib.IMAP4, i: int) -> None:
    data = (
        f"From: lat{i}@client.test\r\nTo: support@acme.test\r\n"
        f"Subject: latency {i}\r\nMessage-ID: <{uuid.uuid4().hex}@client.test>\r\n"
        "Date: Mon, 04 Mar 2024 08:06:00 +0000\r\n\r\nIs this fast?\r\n"
    ).encode()
    client.append("INBOX", None, None, data)


def _bare_idle(server: Dovecot, n: int) -> list[float]:
    """The ceiling for IDLE latency: a bare client in IDLE, ms from an APPEND's OK (on
    another connection) to the ``* n EXISTS`` push. Dovecot batches mailbox change
    notifications (NOTIFY_DELAY_MSECS, 500 ms, in its mailbox-watch.c)."""
    out: list[float] = []
    watcher = imaplib.IMAP4("127.0.0.1", server.port, timeout=30)
    appender = imaplib.IMAP4("127.0.0.1", server.port, timeout=30)
    try:
        watcher.login(USER, PASSWORD)
        watcher.select("INBOX")
        appender.login(USER, PASSWORD)
        watcher.send(b"B1 IDLE\r\n")
        if not watcher.readline().startswith(b"+"):
            raise RuntimeError("no IDLE continuation")
        for i in range(n):
            _append_one(appender, i)
            t = time.perf_counter()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if watcher.readline().rstrip().endswith(b"EXISTS"):
                    break
            out.append((time.perf_counter() - t) * 1000)
            time.sleep(0.05)
        watcher.send(b"DONE\r\n")
        while not watcher.readline().startswith(b"B1 "):
            pass
    finally:
        for c in (watcher, appender):
            with contextlib.suppress(Exception):
                c.logout()
    return out


def fig4(count: int, latency: int, runs: int, timeout: float = 1800) -> dict[str, Any]:
    from tests.clamd_harness import running_clamd

    raw = []
    with workdir("fig4") as tmp, running_clamd(tmp / "clamd") as clamd:
        mails = corpus(count, tmp)
        load = write_load(mails, tmp / "load.pkl")
        for r in range(runs):
            imap = _drain_run(tmp / f"imap-{r}", mails, clamd.address, latency, timeout)
            smtp_gw = Daemon(tmp / f"smtp-{r}", scanner=clamd.address).start()
            try:
                smtp = run_load(smtp_gw.port, load, 1)
            finally:
                smtp_gw.stop()
            lat = sorted(imap["idle_ms"])
            res = {
                **imap,
                "smtp_rate": smtp["sent"] / smtp["secs"],
                "smtp_codes": smtp["codes"],
                "ratio": (imap["rate"] / (smtp["sent"] / smtp["secs"])),
                "idle_p50_ms": percentile(lat, 0.5),
                "idle_p99_ms": percentile(lat, 0.99),
                "bare_idle_p50_ms": percentile(sorted(imap["bare_idle_ms"]), 0.5),
                "bare_idle_p99_ms": percentile(sorted(imap["bare_idle_ms"]), 0.99),
            }
            raw.append(res)
            print(
                f"  run {r + 1}: drain {res['rate']:.0f} msg/s ({res['drained']}/{len(mails)}), "
                f"SMTP K=1 {res['smtp_rate']:.0f} msg/s, IDLE p50 {res['idle_p50_ms']:.0f} "
                f"p99 {res['idle_p99_ms']:.0f} ms "
                f"(bare IDLE client p50 {res['bare_idle_p50_ms']:.0f})",
                flush=True,
            )
    return {
        "messages": len(mails),
        "rate": summary([x["rate"] for x in raw]),
        "smtp_rate": summary([x["smtp_rate"] for x in raw]),
        "ratio_imap_smtp": summary([x["ratio"] for x in raw]),
        "idle_p50_ms": summary([x["idle_p50_ms"] for x in raw]),
        "idle_p99_ms": summary([x["idle_p99_ms"] for x in raw]),
        "bare_idle_p50_ms": summary([x["bare_idle_p50_ms"] for x in raw]),
        "bare_idle_p99_ms": summary([x["bare_idle_p99_ms"] for x in raw]),
        "latency_samples_per_run": latency,
        "raw": raw,
    }


def backlog_memory(count: int, window: float, runs: int) -> dict[str, Any]:
    """Figure 6b: peak RSS of the daemon facing a ``count``-message IMAP backlog.

    Plain small messages (no scanner needed), written straight into the Maildir;
    the daemon runs for ``window`` seconds after its first commit (the risk is
    at the start: listing and fetching the backlog), then VmHWM is read.
    """
    raw = []
    with workdir("fig6b") as tmp:
        datas = [
            (
                f"From: Client {i} <c{i}@client.test>\r\nTo: support@acme.test\r\n"
                f"Subject: backlog {i}\r\nMessage-ID: <backlog.{i}.{uuid.uuid4().hex}@client.test>"
                "\r\nDate: Mon, 04 Mar 2024 08:06:00 +0000\r\n\r\n"
                + "The printer on floor 3 is jammed again. " * 20
                + "\r\n"
            ).encode()
            for i in range(count)
        ]
        for r in range(runs):
            server = Dovecot(tmp / f"dovecot-{r}", {USER: PASSWORD})
            server.start()
            try:
                fill_secs = fill_maildir(server, USER, datas)
                d = imap_gateway(tmp / f"gw-{r}", server, "127.0.0.1:9")
                db = d.home / "var" / "gateway.db"
                t0 = time.monotonic()
                d.start()
                assert d.proc is not None
                try:
                    start_rss = peak_rss(d.proc.pid)
                    _wait_first_row(db, t0 + 600)
                    first = time.monotonic() - t0
                    cpu0 = cpu_seconds(d.proc.pid)
                    time.sleep(window)
                    rss = peak_rss(d.proc.pid)
                    cpu = (cpu_seconds(d.proc.pid) - cpu0) / window
                    rows = count_rows(db)
                finally:
                    d.stop()
            finally:
                server.stop()
            res = {
                "backlog": count,
                "fill_secs": fill_secs,
                "peak_rss": rss,
                "rss_after_start": start_rss,
                "first_commit_s": first,
                "drained_in_window": rows,
                "gateway_cores_in_window": cpu,
            }
            raw.append(res)
            print(
                f"  run {r + 1}: IMAP backlog {count}: peak RSS {rss / 2**20:.0f} MiB "
                f"(after start {start_rss / 2**20:.0f}), first commit after {first:.1f} s, "
                f"{rows} drained in {window:g} s",
                flush=True,
            )
    return {
        "backlog": count,
        "window_s": window,
        "peak_rss": summary([x["peak_rss"] for x in raw]),
        "rss_after_start": summary([x["rss_after_start"] for x in raw]),
        "first_commit_s": summary([x["first_commit_s"] for x in raw]),
        "drained_in_window": summary([x["drained_in_window"] for x in raw]),
        "gateway_cores_in_window": summary([x["gateway_cores_in_window"] for x in raw]),
        "raw": raw,
    }
