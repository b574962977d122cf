"""Ingest throughput of the gateway against a bare aiosmtpd sink, in one run.

Both servers run as their own processes on 127.0.0.1; the load generator is a
third process (a raw asyncio SMTP client, reused connections), so the client's
CPU is never the server's. Every load loop is bounded in count and time.
Prints a Markdown table and, with --write, appends it to BENCHMARKS.md.

    .venv/bin/python bench/smtp_ingest.py [--count 2000] [--concurrency 1,8,32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
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
    async def handle_DATA(self, server, session, envelope):
        return "250 2.0.0 OK"
async def main():
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(lambda: SMTP(H(), hostname="sink", decode_data=False),
                                   "127.0.0.1", 0)
    print(srv.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""

CLIENT = """
import asyncio, json, sys, time, uuid
port, count, conc, size = (int(x) for x in sys.argv[1:5])
body = ("x" * 76 + "\\r\\n") * (size // 78)
lat = []
async def session(n):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    async def cmd(line):
        if line is not None:
            w.write(line)
        while True:
            l = await r.readline()
            if l[3:4] != b"-":
                return l
    await cmd(None); await cmd(b"EHLO bench\\r\\n")
    for _ in range(n):
        t0 = time.perf_counter()
        mid = uuid.uuid4().hex
        await cmd(b"MAIL FROM:<load@bench.test>\\r\\n")
        await cmd(b"RCPT TO:<support@acme.test>\\r\\n")
        await cmd(b"DATA\\r\\n")
        msg = (f"From: load@bench.test\\r\\nTo: support@acme.test\\r\\nSubject: load {mid}\\r\\n"
               f"Message-ID: <{mid}@bench.test>\\r\\n\\r\\n{body}.\\r\\n").encode()
        reply = await cmd(msg)
        assert reply.startswith(b"250"), reply
        lat.append(time.perf_counter() - t0)
    await cmd(b"QUIT\\r\\n"); w.close()
async def main():
    t0 = time.perf_counter()
    per = count // conc
    await asyncio.wait_for(asyncio.gather(*(session(per) for _ in range(conc))), 600)
    el = time.perf_counter() - t0
    lat.sort()
    print(json.dumps({"n": per * conc, "secs": el, "p50": lat[len(lat)//2]*1000,
                      "p99": lat[int(len(lat)*0.99)]*1000}))
asyncio.run(main())
"""


def load(port: int, count: int, conc: int, size: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CLIENT, str(port), str(count), str(conc), str(size)],
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    r = json.loads(out.stdout)
    r["rate"] = r["n"] / r["secs"]
    return r


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--write", action="store_true", help="append the table to BENCHMARKS.md")
    args = ap.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]
    sink = subprocess.Popen([sys.executable, "-c", SINK], stdout=subprocess.PIPE, text=True)
    sink_port = int(sink.stdout.readline())  # type: ignore[union-attr]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        gw = Daemon(Path(tmp) / "gw").start()
        try:
            for k in levels:
                s = load(sink_port, args.count, k, args.size)
                g = load(gw.port, args.count, k, args.size)
                rows.append((k, s, g))
        finally:
            gw.stop()
            os.kill(sink.pid, signal.SIGTERM)
            sink.wait()
    stamp = time.strftime("%Y-%m-%d %H:%M")
    lines = [
        f"### SMTP ingest, {args.size} B plain messages, N={args.count} per cell ({stamp}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()})",
        "",
        "| K | bare aiosmtpd sink msg/s (p50/p99 ms) | gateway msg/s (p50/p99 ms) | ratio |",
        "|---|---|---|---|",
    ]
    for k, s, g in rows:
        lines.append(
            f"| {k} | {s['rate']:.0f} ({s['p50']:.1f}/{s['p99']:.1f}) | "
            f"{g['rate']:.0f} ({g['p50']:.1f}/{g['p99']:.1f}) | {g['rate'] / s['rate']:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        with open(ROOT / "BENCHMARKS.md", "a", encoding="utf-8") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
