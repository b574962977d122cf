"""One figure-1 gateway run at K sessions, its figures as one JSON line (pipe21's A/B).

    cd CHECKOUT && PYTHONPATH=CHECKOUT python bench/results/pipe21/one_run.py K

The text-only mix of ``--count 2000``, outbound accounts on a bare sink, the language
model loaded before (as bench/fig_smtp.py runs each gateway); ab.sh alternates two
checkouts.
"""

from __future__ import annotations

import json
import sys

from bench.common import Sink, corpus, cpu_seconds, run_load, settle, workdir, write_load
from bench.fig_smtp import _warm
from tests.daemon import Daemon


def main(k: int) -> None:
    with workdir("pipe21") as tmp:
        mails = corpus(2000, tmp)
        load = write_load([m for m in mails if not m.scan], tmp / "load.pkl")
        sink = Sink()
        account = f'[tenants.outbound]\nhost = "127.0.0.1"\nport = {sink.port}\nsecurity = "none"\n'
        gw = Daemon(tmp / "w", scanner="127.0.0.1:9", acme_extra=account, extra=account).start()
        try:
            assert gw.proc is not None
            pid = gw.proc.pid
            settle(pid)
            _warm(gw)
            own0, all0 = cpu_seconds(pid, own=True), cpu_seconds(pid)
            res = run_load(gw.port, load, k)
            own1, all1 = cpu_seconds(pid, own=True), cpu_seconds(pid)
        finally:
            gw.stop()
            sink.stop()
    n = res["accepted"]
    print(
        json.dumps(
            {
                "k": k,
                "rate": round(res["rate"]),
                "p50": round(res["p50_ms"], 2),
                "tx_p50": round(res["tx_p50_ms"], 2),
                "daemon_us": round((own1 - own0) / n * 1e6),
                "all_us": round((all1 - all0) / n * 1e6),
                "pipelined": res.get("pipelined"),
                "n": n,
            }
        )
    )


if __name__ == "__main__":
    main(int(sys.argv[1]))
