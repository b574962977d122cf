"""Figure 3: how an MTA hands mail over: the pipe (``gateway ingest``, one process per
message) and the LMTP listener, each against its ceiling.

An MTA's pipe transport starts one process per message, so the figure is
dominated by start-up: interpreter, imports, opening the store, migrations
check. The ceiling measured beside it in the same run is the bare interpreter
start (``python -c pass``) run the same number of times; their ratio says how
much of the per-message time is ours. Messages: the first M of the text-only
corpus mix, delivered one after the other (the MTA's default of one pipe at
a time per recipient), each into the same store.

LMTP (``fig3_lmtp``): the same text-only mail through the LMTP listener
([lmtp] listen) with one session (the MTA's one delivery agent at a time)
against SMTP K=1 to a gateway of the same config, each a fresh daemon and
store, the order alternating between runs; the ratio LMTP/SMTP is per run.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import PY, ROOT, corpus, count_rows, run_load, summary, workdir, write_load
from tests.daemon import Daemon


def _ingest_all(cfg: Path, home: Path, mails: list[Any]) -> tuple[float, Counter[int]]:
    codes: Counter[int] = Counter()
    t0 = time.perf_counter()
    for m in mails:
        out = subprocess.run(
            [
                PY,
                "-m",
                "gateway",
                "ingest",
                "--config",
                str(cfg),
                "--tenant-address",
                m.rcpt,
                "--sender",
                "load@bench.client.test",
            ],
            input=m.data,
            cwd=home,
            capture_output=True,
            timeout=120,
            check=False,
        )
        codes[out.returncode] += 1
    return time.perf_counter() - t0, codes


def _bare(n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        subprocess.run([PY, "-c", "pass"], cwd=ROOT, check=True, timeout=60)
    return time.perf_counter() - t0


def _precompile() -> None:
    """Byte-compile our packages as ``pip install .`` does on a real host: an editable
    checkout run with PYTHONDONTWRITEBYTECODE (as on these machines) would otherwise
    compile every module from source on every message."""
    packages = [str(ROOT / p) for p in ("gateway", "store", "routing", "parsers", "outbound")]
    subprocess.run([PY, "-m", "compileall", "-q", *packages], check=True, timeout=300)


def fig3(count: int, per_run: int, runs: int) -> dict[str, Any]:
    _precompile()
    with workdir("fig3") as tmp:
        mails = [m for m in corpus(count, tmp) if not m.scan]
        raw = []
        for r in range(runs):
            chunk = mails[(r * per_run) % len(mails) :][:per_run]
            bare = _bare(len(chunk))
            d = Daemon(tmp / f"gw-{r}")  # only its config and home; no daemon runs
            secs, codes = _ingest_all(d.config, d.home, chunk)
            rows = count_rows(d.home / "var" / "gateway.db")
            res = {
                "messages": len(chunk),
                "rate": codes.get(0, 0) / secs,
                "ms_per_msg": secs / len(chunk) * 1000,
                "bare_rate": len(chunk) / bare,
                "bare_ms": bare / len(chunk) * 1000,
                "exit_codes": {str(k): v for k, v in codes.items()},
                "rows": rows,
            }
            raw.append(res)
            print(
                f"  run {r + 1}: ingest {res['rate']:.1f} msg/s ({res['ms_per_msg']:.0f} ms), "
                f"python -c pass {res['bare_rate']:.1f}/s, exits {res['exit_codes']}",
                flush=True,
            )
    exits: Counter[str] = Counter()
    for x in raw:
        exits.update(x["exit_codes"])
    return {
        "rate": summary([x["rate"] for x in raw]),
        "ms_per_msg": summary([x["ms_per_msg"] for x in raw]),
        "bare_rate": summary([x["bare_rate"] for x in raw]),
        "bare_ms": summary([x["bare_ms"] for x in raw]),
        "ratio_ingest_bare": summary([x["rate"] / x["bare_rate"] for x in raw]),
        "exit_codes": dict(exits),
        "per_run": per_run,
        "raw": raw,
    }


def fig3_lmtp(count: int, runs: int) -> dict[str, Any]:
    """LMTP handoff (one session) / SMTP K=1, same mail, same run."""
    with workdir("fig3-lmtp") as tmp:
        mails = [m for m in corpus(count, tmp) if not m.scan]
        load = write_load(mails, tmp / "load.pkl")
        raw: list[dict[str, Any]] = []
        for r in range(runs):
            res: dict[str, Any] = {}
            order = ("smtp", "lmtp") if r % 2 == 0 else ("lmtp", "smtp")
            for way in order:
                d = Daemon(tmp / f"{way}-{r}", lmtp="127.0.0.1:0").start()
                try:
                    port = d.lmtp_port if way == "lmtp" else d.port
                    res[way] = run_load(port, load, 1, lmtp=way == "lmtp")
                finally:
                    d.stop()
            raw.append(res)
            print(
                f"  run {r + 1}: LMTP {res['lmtp']['rate']:.0f} msg/s, "
                f"SMTP K=1 {res['smtp']['rate']:.0f} msg/s, codes {res['lmtp']['codes']}",
                flush=True,
            )
    return {
        "messages": len(mails),
        "lmtp_rate": summary([x["lmtp"]["rate"] for x in raw]),
        "smtp_rate": summary([x["smtp"]["rate"] for x in raw]),
        "lmtp_p50_ms": summary([x["lmtp"]["p50_ms"] or 0 for x in raw]),
        "smtp_p50_ms": summary([x["smtp"]["p50_ms"] or 0 for x in raw]),
        "ratio_lmtp_smtp": summary([x["lmtp"]["rate"] / x["smtp"]["rate"] for x in raw]),
        "raw": raw,
    }
