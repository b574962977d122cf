"""Micro-bench: the send side's CPU per mail when each lane of ``--lane`` mails opens
its own connection (and says QUIT), against one connection kept from lane to lane
(outbound/links.py). The client's CPU (this process: what the send worker pays) per
mail; the sink is its own process (bench/sink.py). Bounded by ``--n`` and a timeout.

    python -m bench.lane_reuse --n 600 --lane 2 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from bench.ack_cost import compose
from bench.common import Sink
from outbound.sender import AccountConnection
from routing.config import OutboundAccount


async def _lanes(port: int, rows: list[dict[str, object]], lane: int, reuse: bool) -> float:
    account = OutboundAccount(host="127.0.0.1", port=port, security="none")
    kept = AccountConnection(account, "gw.test", 30)
    t0 = time.process_time()
    async with asyncio.timeout(300):
        for i in range(0, len(rows), lane):
            link = kept if reuse else AccountConnection(account, "gw.test", 30)
            async for _i, attempt in link.deliver(rows[i : i + lane], time.monotonic() + 60):
                assert attempt.result == "sent", attempt
            if not reuse:
                await link.close()
    await kept.close()
    return (time.process_time() - t0) / len(rows) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--lane", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    _, mails = compose(args.n)
    rows = [{"mail_from": m.mail_from, "rcpt_tos": m.rcpt_tos, "body": m.body} for m in mails]
    out: dict[str, list[float]] = {"per_lane": [], "reused": []}
    for _ in range(args.runs):  # alternating, a fresh sink each
        for way in out:
            sink = Sink()
            try:
                out[way].append(asyncio.run(_lanes(sink.port, rows, args.lane, way == "reused")))
            finally:
                sink.stop()
    print(json.dumps({"lane": args.lane, "n": args.n, "client_cpu_us_per_mail": out}))


if __name__ == "__main__":
    main()
