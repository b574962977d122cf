"""Where a lone sender's time goes: figure 1 at K=1, one stage at a time.

    python -m bench.fig_timeline [--corpus 500] [--runs 1] [--base CHECKOUT] [--out FILE.json]

The gateway runs with GATEWAY_TIMELINE=1, which puts on each ``message`` log line
the time (ms since the pipeline took the message) at which each stage ended
(gateway/intake/pipeline.py): parsed, auth, staged, then the writer's batch
(its BEGIN, the unit's start and end in the writer thread, its COMMIT), and the
moment the pipeline resumed on the loop. The load is figure 1's text-only mix at
K=1 (bench/smtp_client.py). Reported: the median of each stage's duration (the
step from the stage before), the pipeline's own ms, and the client's p50 from
the end of DATA to the 250, whose difference from the pipeline is the SMTP
side (reading the data, writing the reply, the loop's turns). With ``--base`` (a
checkout that has this instrumentation) each run has the base's gateway and this
one's in turn, alternating which goes first (``PYTHONPATH``, as bench/ab.py does).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path
from typing import Any

from bench.common import Sink, corpus, run_load, settle, workdir, write_load
from bench.fig_smtp import _warm
from tests.daemon import Daemon

ORDER = [
    "parsed",
    "scanned",
    "auth",
    "model",
    "staged",
    "turn",
    "batch_begin",
    "work_start",
    "work_end",
    "committed",
    "resumed",
]


def _steps(stages: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    last = 0.0
    for name in ORDER:
        if name in stages:
            out[name] = stages[name] - last
            last = stages[name]
    return out


def one_run(load: Path, work: Path, k: int = 1) -> dict[str, Any]:
    """One fresh gateway as figure 1 runs it (acknowledgements to a bare sink)."""
    outbox_sink = Sink()
    account = (
        f'[tenants.outbound]\nhost = "127.0.0.1"\nport = {outbox_sink.port}\nsecurity = "none"\n'
    )
    gw = Daemon(work, env={"GATEWAY_TIMELINE": "1"}, acme_extra=account, extra=account)
    try:
        gw.start()
        assert gw.proc is not None
        settle(gw.proc.pid)
        _warm(gw)
        offset = gw.log_path.stat().st_size
        res = run_load(gw.port, load, k)
    finally:
        gw.stop()
        outbox_sink.stop()
    steps: dict[str, list[float]] = {}
    total: list[float] = []
    for line in gw.log_path.read_bytes()[offset:].splitlines():
        if b'"message"' not in line:
            continue
        rec = json.loads(line)
        if rec.get("event") != "message" or rec.get("result") != "accepted":
            continue
        total.append(rec["ms"])
        for name, ms in _steps(rec.get("stages") or {}).items():
            steps.setdefault(name, []).append(ms)
    med = {name: round(statistics.median(v), 3) for name, v in steps.items()}
    mean = {name: round(statistics.fmean(v), 3) for name, v in steps.items()}
    return {
        "rate": res["rate"],
        "client_p50_ms": res["p50_ms"],
        "client_tx_p50_ms": res["tx_p50_ms"],
        "pipeline_ms_p50": statistics.median(total) if total else None,
        "pipeline_ms_mean": statistics.fmean(total) if total else None,
        "wall_ms_per_msg": 1000 / res["rate"] if res["rate"] else None,
        "stage_ms_p50": {n: med[n] for n in ORDER if n in med},
        "stage_ms_mean": {n: mean[n] for n in ORDER if n in mean},
        "messages": len(total),
        "codes": res["codes"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", type=int, default=500)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--base", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    sides: list[tuple[str, Path | None]] = [("after", None)]
    if args.base is not None:
        sides.insert(0, ("before", args.base.resolve()))
    runs: list[dict[str, Any]] = []
    with workdir("timeline") as tmp:
        mails = [m for m in corpus(args.corpus, tmp) if not m.scan]
        load = write_load(mails, tmp / "load.pkl")
        for r in range(args.runs):
            for name, root in sides if r % 2 == 0 else sides[::-1]:
                if root is None:
                    os.environ.pop("PYTHONPATH", None)
                else:
                    os.environ["PYTHONPATH"] = str(root)
                res = {"side": name, "run": r + 1} | one_run(load, tmp / f"{name}-{r}", args.k)
                print(json.dumps(res), flush=True)
                runs.append(res)
        os.environ.pop("PYTHONPATH", None)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(runs, indent=1) + "\n")


if __name__ == "__main__":
    main()
