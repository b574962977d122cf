"""Before and after a change, in one run: figure 8 (a client's ticket page).

    python -m bench.ab_web --base /tmp/base-checkout [--runs 3] [--secs 10] [--conc 8]

As bench/ab.py does for figures 1, 3 and 7: the gateway of ``--base`` (another
checkout) and this checkout's, in alternating order, each beside its own bare
aiohttp page of the same size in the same round. Only the gateway's code
differs (``PYTHONPATH``); the harness is this checkout's. Writes one JSON to
stdout's last line and bench/results/ab_web.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from bench import fig_web
from bench.ab import _side
from bench.common import ROOT, machine, summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ab_web")
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--secs", type=float, default=10.0)
    ap.add_argument("--conc", type=int, default=8)
    args = ap.parse_args(argv)
    sides: list[tuple[str, Path | None]] = [("before", args.base.resolve()), ("after", None)]
    rounds: list[dict[str, Any]] = []
    for r in range(args.runs):
        rnd: dict[str, Any] = {}
        for name, root in sides if r % 2 == 0 else list(reversed(sides)):
            _side(root)
            print(f"== round {r + 1}: {name}", flush=True)
            rnd[name] = fig_web.fig8(args.conc, args.secs, 1)
        rounds.append(rnd)
        _side(None)
    keys = ("rate", "p50_ms", "p99_ms", "bare_rate", "ratio_gateway_bare", "cpu_us_per_req")
    medians = {
        side: {k: summary([rnd[side][k]["median"] for rnd in rounds]) for k in keys}
        for side in ("before", "after")
    }
    doc = {
        "command": shlex.join(["python", "-m", "bench.ab_web", *(argv or sys.argv[1:])]),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine(),
        "rounds": rounds,
        "medians": medians,
    }
    path = ROOT / "bench" / "results" / "ab_web.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(medians))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
