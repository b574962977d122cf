"""Figure 8 under py-spy: where a ticket page's CPU goes (GIL held), as collapsed stacks.

    python -m bench.profile_web OUT.collapsed.txt [--secs 10] [--conc 8]

One gateway, seeded as figure 8 seeds it (bench/fig_web.py), loaded with wrk on
K keep-alive connections; py-spy samples the daemon (``record --gil``: only the
thread holding the GIL, i.e. CPU) over the middle of the load. Prints the rate,
the CPU per page and the top inclusive frames.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from bench.common import PY, cpu_seconds
from bench.fig_web import _load, _seed
from tests.daemon import Daemon


def top(path: Path, n: int = 40) -> list[str]:
    """Inclusive share of the samples per frame (line numbers dropped)."""
    total, incl = 0, collections.Counter[str]()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        total += int(count)
        for frame in {re.sub(r":\d+\)$", ")", f) for f in stack.split(";")}:
            incl[frame] += int(count)
    return [f"{100 * v / max(total, 1):5.1f} {k}" for k, v in incl.most_common(n)]


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.profile_web")
    ap.add_argument("out", type=lambda p: Path(p).resolve())
    ap.add_argument("--secs", type=float, default=10.0)
    ap.add_argument("--conc", type=int, default=8)
    args = ap.parse_args()
    spy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
    with tempfile.TemporaryDirectory() as tmp:
        d = Daemon(Path(tmp) / "gw", http_extra="insecure_cookies = true").start()
        try:
            ref, cookie = _seed(d)
            url = f"http://127.0.0.1:{d.http_port}/t/acme/tickets/{ref}"
            assert d.proc is not None
            result: dict[str, dict[str, float]] = {}
            cpu0 = cpu_seconds(d.proc.pid)
            load = threading.Thread(
                target=lambda: result.setdefault("gw", _load(url, cookie, args.conc, args.secs))
            )
            load.start()
            subprocess.run(
                [spy, "record", "--gil", "--threads", "--rate", "250", "--format", "raw",
                 "--duration", str(max(int(args.secs) - 3, 1)), "--pid", str(d.proc.pid),
                 "--output", str(args.out),],
                check=True, timeout=args.secs + 60, cwd=tmp,
            )  # fmt: skip
            load.join(args.secs + 120)
            cpu = cpu_seconds(d.proc.pid) - cpu0
        finally:
            d.stop()
    gw = result["gw"]
    print(
        f"{gw['rate']:.0f} req/s, p50 {gw['p50_ms']:.1f} ms, p99 {gw['p99_ms']:.1f} ms, "
        f"{cpu * 1e6 / max(gw['requests'], 1):.0f} µs CPU a page (py-spy attached)"
    )
    print("\n".join(top(args.out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
