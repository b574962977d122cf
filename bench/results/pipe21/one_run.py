import sys, time, json
from pathlib import Path
from bench.common import workdir, corpus, write_load, Sink, settle, cpu_seconds, run_load, worker_cpu_seconds
from bench.fig_smtp import _warm
from tests.daemon import Daemon
k = int(sys.argv[1])
with workdir("k1") as tmp:
    mails = corpus(2000, tmp)
    load = write_load([m for m in mails if not m.scan], tmp / "load.pkl")
    sink = Sink()
    account = f'[tenants.outbound]\nhost = "127.0.0.1"\nport = {sink.port}\nsecurity = "none"\n'
    gw = Daemon(tmp/"w", scanner="127.0.0.1:9", acme_extra=account, extra=account).start()
    try:
        settle(gw.proc.pid); _warm(gw)
        pid = gw.proc.pid
        c0 = cpu_seconds(pid, own=True); a0 = cpu_seconds(pid)
        res = run_load(gw.port, load, k)
        c1 = cpu_seconds(pid, own=True); a1 = cpu_seconds(pid)
        n = res["accepted"]
        print(json.dumps({"k": k, "rate": round(res["rate"]), "p50": round(res["p50_ms"],2), "tx_p50": round(res["tx_p50_ms"],2),
              "daemon_us": round((c1-c0)/n*1e6), "all_us": round((a1-a0)/n*1e6), "pipelined": res.get("pipelined"), "n": n}))
    finally:
        gw.stop(); sink.stop()
