"""Ingest throughput of the gateway against a bare aiosmtpd sink, in one run.

Both servers run as their own processes on 127.0.0.1; the load generator is a
third process (a raw asyncio SMTP client, reused connections), so the client's
CPU is never the server's. Every load loop is bounded in count and time.
Prints a Markdown table and, with --write, appends it to BENCHMARKS.md.

    .venv/bin/python bench/smtp_ingest.py [--count 2000] [--concurrency 1,8,32] [--write]
    .venv/bin/python bench/smtp_ingest.py --scan [--count 400] [--write]

``--scan`` starts a real clamd (tests/clamd_harness.py) and compares, through
the same gateway in one run, plain mail against the same mail carrying a
100 KB attachment (random bytes per message, base64), which clamd scans.
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
import base64, os
port, count, conc, size, attach = (int(x) for x in sys.argv[1:6])
body = ("x" * 76 + "\\r\\n") * (size // 78)
def payload():
    if not attach:
        return body
    data = base64.encodebytes(os.urandom(attach)).decode().replace("\\n", "\\r\\n")
    return ("MIME-Version: 1.0\\r\\nContent-Type: multipart/mixed; boundary=b\\r\\n\\r\\n"
            "--b\\r\\nContent-Type: text/plain\\r\\n\\r\\n" + body +
            "--b\\r\\nContent-Type: application/octet-stream\\r\\n"
            "Content-Disposition: attachment; filename=data.bin\\r\\n"
            "Content-Transfer-Encoding: base64\\r\\n\\r\\n" + data + "--b--\\r\\n")
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
        text = payload()
        sep = "" if attach else "\\r\\n"
        msg = (f"From: load@bench.test\\r\\nTo: support@acme.test\\r\\nSubject: load {mid}\\r\\n"
               f"Message-ID: <{mid}@bench.test>\\r\\n{sep}{text}.\\r\\n").encode()
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


def load(port: int, count: int, conc: int, size: int, attach: int = 0) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CLIENT, str(port), str(count), str(conc), str(size), str(attach)],
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
    ap.add_argument("--scan", action="store_true", help="attachment vs plain through clamd")
    ap.add_argument("--attachment", type=int, default=100 * 1024, help="bytes, with --scan")
    args = ap.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]
    text = scan_table(args, levels) if args.scan else sink_table(args, levels)
    print(text)
    if args.write:
        with open(ROOT / "BENCHMARKS.md", "a", encoding="utf-8") as f:
            f.write("\n" + text)
    return 0


def _heading(what: str, args: argparse.Namespace) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M")
    return (
        f"### {what}, N={args.count} per cell ({stamp}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()})"
    )


def scan_table(args: argparse.Namespace, levels: list[int]) -> str:
    from tests.clamd_harness import running_clamd

    rows = []
    with tempfile.TemporaryDirectory() as tmp, running_clamd() as clamd:
        gw = Daemon(Path(tmp) / "gw", scanner=clamd.address).start()
        try:
            for k in levels:
                plain = load(gw.port, args.count, k, args.size)
                att = load(gw.port, args.count, k, args.size, args.attachment)
                rows.append((k, plain, att))
        finally:
            gw.stop()
    lines = [
        _heading(
            f"Scanning: {args.size} B mail with and without a {args.attachment // 1024} KB "
            "attachment, real clamd",
            args,
        ),
        "",
        "| K | plain msg/s (p50/p99 ms) | with attachment msg/s (p50/p99 ms) | ratio |",
        "|---|---|---|---|",
    ]
    for k, p, a in rows:
        lines.append(
            f"| {k} | {p['rate']:.0f} ({p['p50']:.1f}/{p['p99']:.1f}) | "
            f"{a['rate']:.0f} ({a['p50']:.1f}/{a['p99']:.1f}) | {a['rate'] / p['rate']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def sink_table(args: argparse.Namespace, levels: list[int]) -> str:
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
    lines = [
        _heading(f"SMTP ingest, {args.size} B plain messages", args),
        "",
        "| K | bare aiosmtpd sink msg/s (p50/p99 ms) | gateway msg/s (p50/p99 ms) | ratio |",
        "|---|---|---|---|",
    ]
    for k, s, g in rows:
        lines.append(
            f"| {k} | {s['rate']:.0f} ({s['p50']:.1f}/{s['p99']:.1f}) | "
            f"{g['rate']:.0f} ({g['p50']:.1f}/{g['p99']:.1f}) | {g['rate'] / s['rate']:.2f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
