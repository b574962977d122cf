"""Outbox delivery rate: the gateway's worker against a bare aiosmtplib loop, in one run.

A sink (aiosmtpd, its own process, 127.0.0.1) counts what arrives. First a
bare loop sends N prebuilt mails through aiosmtplib with the worker's
concurrency (4 connections, one per mail, as the worker does); then N rows
are put in a gateway's outbox (through the gateway's own repos, in one
transaction) and the daemon is started: its worker delivers them to the same
sink. Bounded in count and time. Prints a Markdown table; --write appends it
to BENCHMARKS.md.

    .venv/bin/python bench/outbox.py [--count 1000] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.daemon import Daemon  # noqa: E402

SINK = """
import asyncio, sys
from aiosmtpd.smtp import SMTP
class H:
    n = 0
    async def handle_DATA(self, server, session, envelope):
        H.n += 1
        return "250 2.0.0 OK"
async def report():
    while True:
        await asyncio.sleep(0.02)
        print(H.n, flush=True)
async def main():
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(lambda: SMTP(H(), hostname="sink", decode_data=False),
                                   "127.0.0.1", 0)
    print(srv.sockets[0].getsockname()[1], flush=True)
    await report()
asyncio.run(main())
"""


class SinkProc:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SINK], stdout=subprocess.PIPE, text=True
        )
        self.port = int(self.proc.stdout.readline())  # type: ignore[union-attr]

    def wait_count(self, n: int, timeout: float) -> float:
        """Seconds until the sink has counted ``n`` mails (from now)."""
        t0 = time.perf_counter()
        deadline = t0 + timeout
        for line in self.proc.stdout:  # type: ignore[union-attr]
            if int(line) >= n:
                return time.perf_counter() - t0
            if time.perf_counter() > deadline:
                raise TimeoutError(f"sink got {line.strip()} of {n}")
        raise RuntimeError("sink died")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _mail(i: int) -> bytes:
    body = ("x" * 76 + "\r\n") * 20
    return (
        f"From: support@acme.test\r\nTo: c{i}@client.test\r\nSubject: [ACME-{i}] hi\r\n"
        f"Message-ID: <bench.{i}@gw.test>\r\nAuto-Submitted: auto-replied\r\n\r\n{body}"
    ).encode()


async def bare(port: int, n: int, conc: int) -> None:
    import aiosmtplib

    sem = asyncio.Semaphore(conc)

    async def one(i: int) -> None:
        async with sem:
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, local_hostname="gw.test")
            async with client:
                await client.sendmail("", [f"c{i}@client.test"], _mail(i))

    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), 600)


def fill_outbox(d: Daemon, n: int) -> None:
    """N pending rows through the gateway's own store code, in one transaction."""
    from routing.config import load_config
    from store import repos
    from store.db import create_writer_engine

    config = load_config(d.config)
    engine = create_writer_engine(config.database_url)
    with engine.begin() as conn:
        for i in range(n):
            repos.enqueue_outbox(
                conn,
                "acme",
                kind="ack",
                ticket_id=None,
                message_id=f"<bench.{i}@gw.test>",
                mail_from="",
                rcpt_tos=[f"c{i}@client.test"],
                body=_mail(i),
            )
    engine.dispose()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    n = args.count
    sink = SinkProc()
    try:
        t0 = time.perf_counter()
        asyncio.run(bare(sink.port, n, 4))
        bare_secs = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as tmp:
            acct = (
                f'[tenants.outbound]\nhost = "127.0.0.1"\nport = {sink.port}\n'
                'security = "none"\n'
            )
            d = Daemon(Path(tmp) / "gw", acme_extra=acct)
            d.start()  # creates the schema
            d.stop()
            fill_outbox(d, n)
            d.start()
            try:
                sink.wait_count(n + 1, 120)  # the worker's first mail: start the clock
                gw_secs = sink.wait_count(2 * n, 600) * n / (n - 1)
            finally:
                d.stop()
    finally:
        sink.stop()
    stamp = time.strftime("%Y-%m-%d %H:%M")
    text = (
        f"### Outbox delivery to a local aiosmtpd sink, N={n} ({stamp}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()})\n\n"
        "| sender | mails/s | ratio |\n|---|---|---|\n"
        "| bare aiosmtplib loop, 4 concurrent, a connection per mail | "
        f"{n / bare_secs:.0f} | 1.00 |\n"
        f"| gateway outbox worker (claim, send, mark sent), from its first mail | "
        f"{n / gw_secs:.0f} | {bare_secs / gw_secs:.2f} |\n"
    )
    print(text)
    if args.write:
        with open(ROOT / "BENCHMARKS.md", "a", encoding="utf-8") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
