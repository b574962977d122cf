"""Before and after a change, in one run: figures 1 (K=1, K=32), 3 (LMTP) and 7.

    python -m bench.ab --base /tmp/base-checkout [--runs 3] [--corpus 1000] [--mails 500]
    python -m bench.ab --base /tmp/base-checkout --only fig4,fig6b   # the IMAP figures

The machine is shared, so figures from two separate runs say little: this runs
the gateway of ``--base`` (another checkout, e.g. ``git archive main | tar -x``)
and this checkout's in alternating order, each time beside its own ceiling (the
bare aiosmtpd sink, the bare aiosmtplib loop), and reports each side's ratio to
that ceiling per round. The harness (load client, sinks, outbox fill) is this
checkout's for both sides; only the gateway's code differs (``PYTHONPATH``).
``--loops`` also measures this checkout on each event loop (asyncio, uvloop).
Writes one JSON to stdout's last line and bench/results/ab.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from bench import fig_imap, fig_memory, fig_outbox, fig_pipe, fig_smtp
from bench.common import ROOT, corpus, machine, summary, workdir, write_load


def _side(root: Path | None, loop: str | None = None, parse_workers: str | None = None) -> None:
    """Point the daemons this process starts at ``root``'s code (None: this checkout);
    ``parse_workers``: their ``[gateway] parse_workers`` (None: the default)."""
    if root is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = str(root)
    if loop is None:
        os.environ.pop("GATEWAY_TEST_LOOP", None)
    else:
        os.environ["GATEWAY_TEST_LOOP"] = loop
    if parse_workers is None:
        os.environ.pop("GATEWAY_TEST_PARSE_WORKERS", None)
    else:
        os.environ["GATEWAY_TEST_PARSE_WORKERS"] = parse_workers


def _fig1(load: Path, levels: list[int], tmp: Path) -> dict[str, Any]:
    out = fig_smtp._cells(load, levels, 1, ["sink", "gateway"], None, tmp)["cells"]
    cells = {}
    for k, cell in out.items():
        gw = cell["gateway"]
        cells[k] = {
            "gateway_rate": gw["rate"]["median"],
            "sink_rate": cell["sink"]["rate"]["median"],
            "ratio": cell["ratio_gateway_sink"]["median"],
            "cpu_us": (gw.get("server_cpu_us_per_msg") or {}).get("median"),
            # the daemon process alone; cpu_us less this is its parse workers'
            "daemon_cpu_us": (gw.get("daemon_cpu_us_per_msg") or {}).get("median"),
            # of which its event loop's (the rest: the writer thread)
            "loop_cpu_us": (gw.get("loop_cpu_us_per_msg") or {}).get("median"),
            "sink_cpu_us": (cell["sink"].get("server_cpu_us_per_msg") or {}).get("median"),
            "outbox_at_end": gw["outbox_at_end"][0],
        }
    return cells


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ab")
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--corpus", type=int, default=1000)
    ap.add_argument("--mails", type=int, default=500)
    ap.add_argument("--levels", default="1,32")
    ap.add_argument("--loops", action="store_true")
    ap.add_argument(
        "--inproc", action="store_true", help="also this checkout with parse_workers = 0"
    )
    ap.add_argument(
        "--parse-workers",
        default="",
        help="also this checkout with each of these [gateway] parse_workers (comma-separated)",
    )
    ap.add_argument(
        "--only",
        default="fig1,fig3,fig7",
        help="figures to compare, of fig1, fig3 (LMTP, after only), fig4 (IMAP drain), "
        "fig6 (peak RSS, 32 x ~10 MB messages), fig6b (IMAP backlog memory)",
    )
    ap.add_argument("--backlog", type=int, default=50_000, help="fig6b's backlog")
    args = ap.parse_args(argv)
    levels = [int(k) for k in args.levels.split(",")]
    only = set(args.only.split(","))
    sides: list[tuple[str, Path | None, str | None, str | None]] = [
        ("before", args.base.resolve(), None, None),
        ("after", None, None, None),
    ]
    if args.loops:
        sides += [("after-asyncio", None, "asyncio", None), ("after-uvloop", None, "uvloop", None)]
    if args.inproc:
        sides += [("after-inproc", None, None, "0")]
    for n in filter(None, args.parse_workers.split(",")):
        sides += [(f"after-workers{int(n)}", None, None, str(int(n)))]
    rounds: list[dict[str, Any]] = []
    with workdir("ab") as tmp:
        mails = [m for m in corpus(args.corpus, tmp) if not m.scan]
        load = write_load(mails, tmp / "load.pkl")
        for r in range(args.runs):
            order = sides if r % 2 == 0 else list(reversed(sides))
            rnd: dict[str, Any] = {}
            for name, root, loop, workers in order:
                _side(root, loop, workers)
                print(f"== round {r + 1}: {name}", flush=True)
                res: dict[str, Any] = {}
                if "fig1" in only:
                    res["fig1"] = _fig1(load, levels, tmp / f"{name}-{r}")
                if "fig7" in only:
                    res["fig7"] = fig_outbox.fig7(args.mails, 1)
                if "fig3" in only and name == "after":  # the LMTP listener exists only after
                    res["fig3_lmtp"] = fig_pipe.fig3_lmtp(min(args.corpus, 600), 1)
                if "fig4" in only:
                    res["fig4"] = fig_imap.fig4(args.corpus, 20, 1)
                if "fig6" in only:
                    res["fig6"] = fig_memory.fig6a(32, 7 * 2**20, 1)
                if "fig6b" in only:
                    res["fig6b"] = fig_imap.backlog_memory(args.backlog, 20.0, 1)
                rnd[name] = res
            rounds.append(rnd)
            _side(None)
    doc = {
        "command": shlex.join(["python", "-m", "bench.ab", *(argv or sys.argv[1:])]),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine(),
        "messages": len(mails),
        "rounds": rounds,
        "medians": medians(rounds),
    }
    path = ROOT / "bench" / "results" / "ab.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(doc["medians"]))
    return 0


def medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per side, each figure's summary (median, min, max) over the rounds."""
    out: dict[str, Any] = {}
    for side in rounds[0]:
        rs = [r[side] for r in rounds]
        s: dict[str, Any] = {}
        for k in rs[0].get("fig1", {}):
            for key in (
                "gateway_rate",
                "sink_rate",
                "ratio",
                "cpu_us",
                "daemon_cpu_us",
                "loop_cpu_us",
                "sink_cpu_us",
            ):
                s[f"fig1_k{k}_{key}"] = _summary([x["fig1"][k].get(key) for x in rs])
            s[f"fig1_k{k}_outbox_backlog"] = [x["fig1"][k]["outbox_at_end"] for x in rs]
        if "fig7" in rs[0]:
            s["fig7_rate"] = _summary([x["fig7"]["rate"]["median"] for x in rs])
            s["fig7_ratio"] = _summary([x["fig7"]["ratio_gateway_bare"]["median"] for x in rs])
            s["fig7_ratio_reused"] = _summary(
                [x["fig7"]["ratio_gateway_bare_reused"]["median"] for x in rs]
            )
        if "fig4" in rs[0]:
            for key in ("rate", "smtp_rate", "ratio_imap_smtp", "idle_p50_ms", "idle_p99_ms"):
                s[f"fig4_{key}"] = _summary([x["fig4"][key]["median"] for x in rs])
        if "fig6" in rs[0]:
            for key in ("peak_rss", "peak_rss_daemon_alone", "sink_peak_rss", "ratio_gateway_sink"):
                s[f"fig6_{key}"] = _summary([x["fig6"][key]["median"] for x in rs])
        if "fig6b" in rs[0]:
            for key in ("peak_rss", "first_commit_s", "drained_in_window"):
                s[f"fig6b_{key}"] = _summary([x["fig6b"][key]["median"] for x in rs])
            s["fig6b_cores"] = _summary(
                [x["fig6b"]["gateway_cores_in_window"]["median"] for x in rs]
            )
        if "fig3_lmtp" in rs[0]:
            for key in ("lmtp_rate", "smtp_rate", "ratio_lmtp_smtp"):
                s[f"fig3_{key}"] = _summary([x["fig3_lmtp"][key]["median"] for x in rs])
        out[side] = s
    return out


def _summary(values: list[float | None]) -> dict[str, Any] | None:
    vals = [v for v in values if v is not None]
    return summary(vals) if vals else None


if __name__ == "__main__":
    raise SystemExit(main())
