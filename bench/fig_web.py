"""Figure 8: requests per second and p99 for a client's ticket page, wrk or aiohttp.

A fresh gateway gets one ticket over SMTP (a new message and three replies
from the client) and a web session created with the gateway's own store code
(store/access.py, as the magic-link login does), then the load generator
fetches /t/acme/tickets/<ref> with the session cookie on K keep-alive
connections. Every page view checks the session and writes an audit row
through the single writer, so this is a read *and* a write per request.
Beside it, in the same run, a bare aiohttp server (bench/web_ceiling.py)
serves a page of the same size: the ceiling of the HTTP layer.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import shutil
import subprocess
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.common import PY, ROOT, cpu_seconds, skipped_by_env, stop_pid, summary, workdir
from tests.daemon import Daemon

CLIENT = "carol@client.test"


def _seed(d: Daemon) -> tuple[str, str]:
    """One ticket with four messages from the client, and a session; (ref, cookie)."""
    root = "<web.1@client.test>"
    for i in range(4):
        head = f"In-Reply-To: {root}\r\nReferences: {root}\r\n" if i else ""
        data = (
            f"From: Carol Client <{CLIENT}>\r\nTo: support@acme.test\r\n"
            f"Subject: {'Re: ' if i else ''}The printer on floor 3 is jammed\r\n"
            f"Message-ID: <web.{i + 1}@client.test>\r\n{head}"
            "Date: Mon, 04 Mar 2024 08:06:00 +0000\r\n\r\n"
            + "It jams on every second page, and the display shows error 42. " * 6
            + "\r\n"
        ).encode()
        code, text = d.send(data, sender=CLIENT)
        if code != 250:
            raise RuntimeError(f"seed mail refused: {code} {text}")
    ref = str(d.query("SELECT ref FROM tickets WHERE tenant='acme' ORDER BY id LIMIT 1")[0][0])
    from routing.config import load_config
    from store import access, repos
    from store.db import create_writer_engine

    token = secrets.token_urlsafe(32)
    engine = create_writer_engine(load_config(d.config).database_url)
    with engine.begin() as conn:
        access.new_session(
            conn,
            "acme",
            CLIENT,
            hashlib.sha256(token.encode()).hexdigest(),
            repos.now(),
            timedelta(days=1),
        )
    engine.dispose()
    return ref, f"gw_session={token}"


def _wrk(url: str, cookie: str, conc: int, secs: float) -> dict[str, Any]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{conc}", f"-d{secs:g}s", "--latency", "-H", f"Cookie: {cookie}", url],
        capture_output=True,
        text=True,
        timeout=secs + 60,
        check=True,
    ).stdout

    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            raise RuntimeError(f"no {label} in wrk output: {out}")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad_m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    bad = int(bad_m.group(1)) if bad_m else 0
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return {
        "requests": total,
        "non_2xx": bad,
        "rate": rate * (total - bad) / max(total, 1),
        "p50_ms": ms("50%"),
        "p99_ms": ms("99%"),
        "generator": "wrk",
    }


def _load(url: str, cookie: str, conc: int, secs: float) -> dict[str, Any]:
    if shutil.which("wrk") and not skipped_by_env("wrk"):
        return _wrk(url, cookie, conc, secs)
    out = subprocess.run(
        [PY, str(ROOT / "bench" / "http_client.py"), url, cookie, str(conc), str(secs)],
        capture_output=True,
        text=True,
        timeout=secs + 90,
        check=True,
    )
    return dict(json.loads(out.stdout))


def fig8(conc: int, secs: float, runs: int) -> dict[str, Any]:
    raw = []
    with workdir("fig8") as tmp:
        for r in range(runs):
            d = Daemon(Path(tmp) / f"gw-{r}", http_extra="insecure_cookies = true").start()
            try:
                ref, cookie = _seed(d)
                url = f"http://127.0.0.1:{d.http_port}/t/acme/tickets/{ref}"
                req = urllib.request.Request(url, headers={"Cookie": cookie})
                with urllib.request.urlopen(req, timeout=30) as resp:
                    page = resp.read()
                    if resp.status != 200 or b"error 42" not in page:
                        raise RuntimeError(f"ticket page not served: {resp.status}")
                assert d.proc is not None
                cpu0 = cpu_seconds(d.proc.pid)
                gw = _load(url, cookie, conc, secs)
                # The daemon's CPU per answered page (the load generator's excluded).
                cpu = cpu_seconds(d.proc.pid) - cpu0
                gw["cpu_us_per_req"] = cpu * 1e6 / max(gw["requests"], 1)
                audited = "SELECT count(*) FROM audit_events WHERE action = 'web.ticket_viewed'"
            finally:
                d.stop()
            # Every view audited once, the buffered ones written at the stop (view_log.py).
            gw["audited"] = int(d.query(audited)[0][0]) - 1  # less the check above
            ceiling = subprocess.Popen(
                [PY, "-m", "bench.web_ceiling", str(len(page))],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                port = int(ceiling.stdout.readline())  # type: ignore[union-attr]
                bare = _load(f"http://127.0.0.1:{port}/t/acme/tickets/{ref}", cookie, conc, secs)
            finally:
                stop_pid(ceiling)
            raw.append(
                {
                    "gateway": gw,
                    "bare": bare,
                    "page_bytes": len(page),
                    "ratio": gw["rate"] / bare["rate"],
                }
            )
            print(
                f"  run {r + 1} ({gw['generator']}): ticket page {gw['rate']:.0f} req/s "
                f"p50 {gw['p50_ms']:.1f} p99 {gw['p99_ms']:.1f} ms (non-2xx {gw['non_2xx']}), "
                f"{gw['cpu_us_per_req']:.0f} µs CPU a page, {gw['audited']} views audited "
                f"of {gw['requests']}; "
                f"bare aiohttp {bare['rate']:.0f} req/s",
                flush=True,
            )
    return {
        "concurrency": conc,
        "seconds": secs,
        "generator": raw[0]["gateway"]["generator"] if raw else None,
        "page_bytes": raw[0]["page_bytes"] if raw else None,
        "rate": summary([x["gateway"]["rate"] for x in raw]),
        "p50_ms": summary([x["gateway"]["p50_ms"] for x in raw]),
        "p99_ms": summary([x["gateway"]["p99_ms"] for x in raw]),
        "non_2xx": sum(x["gateway"]["non_2xx"] for x in raw),
        "cpu_us_per_req": summary([x["gateway"]["cpu_us_per_req"] for x in raw]),
        "bare_rate": summary([x["bare"]["rate"] for x in raw]),
        "bare_p99_ms": summary([x["bare"]["p99_ms"] for x in raw]),
        "ratio_gateway_bare": summary([x["ratio"] for x in raw]),
        "raw": raw,
    }
