"""What parsing costs the daemon's process, in it and through the parse pool.

    python -m bench.parse_cost [--corpus 2000] [--k 32] [--rounds 3] [--no-language]

Figure 1's text-only mix, parsed K at a time: ``inline`` calls ``parsers.parse``
on the loop (what ``parse_workers = 0`` does with mail under 256 KiB);
``pool`` awaits ``ParsePool.parse`` with one worker. Both tell the language too
(``routing.language.told``, as figure 1's tenants ask), unless ``--no-language``.
CPU is user+system of this process (loop and threads) and, for the pool, of its worker apart:
CPU time, not wall time, so it reads through a loaded machine better than the
rates do. Alternating rounds; one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from bench.common import corpus, cpu_seconds, summary, workdir
from gateway.intake.parse_pool import ParsePool
from parsers import Limits, parse
from routing.language import told, warm


async def _inline(datas: list[bytes], k: int, language: bool) -> None:
    async def one(d: bytes) -> None:
        parsed = parse(d, limits=Limits())
        if language:
            told(parsed)
        await asyncio.sleep(0)

    for i in range(0, len(datas), k):
        await asyncio.gather(*(one(d) for d in datas[i : i + k]))


async def _pooled(pool: ParsePool, datas: list[bytes], k: int, language: bool) -> None:
    for i in range(0, len(datas), k):
        batch = datas[i : i + k]
        await asyncio.gather(*(pool.parse(d, Limits(), language=language) for d in batch))


async def _round(datas: list[bytes], k: int, language: bool) -> dict[str, Any]:
    n = len(datas)
    t0, c0 = time.perf_counter(), time.process_time()
    await _inline(datas, k, language)
    inline = {"cpu_us": (time.process_time() - c0) / n * 1e6, "secs": time.perf_counter() - t0}
    pool = ParsePool(1, language=language)
    await pool.start()
    try:
        (pid,) = pool.pids
        await pool.warmed()  # the model's load is no message's cost
        await _pooled(pool, datas[:50], k, language)  # nor the worker's first imports
        w0, t0, c0 = cpu_seconds(pid), time.perf_counter(), time.process_time()
        await _pooled(pool, datas, k, language)
        pooled = {
            "cpu_us": (time.process_time() - c0) / n * 1e6,
            "worker_cpu_us": (cpu_seconds(pid) - w0) / n * 1e6,
            "secs": time.perf_counter() - t0,
        }
    finally:
        await pool.close()
    return {"inline": inline, "pool": pooled}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.parse_cost")
    ap.add_argument("--corpus", type=int, default=2000)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-language", dest="language", action="store_false")
    args = ap.parse_args(argv)
    with workdir("parse-cost") as tmp:
        datas = [m.data for m in corpus(args.corpus, tmp) if not m.scan]
    for d in datas[:50]:
        parse(d)  # warm the imports and caches
    if args.language:
        warm()
    rounds = [asyncio.run(_round(datas, args.k, args.language)) for _ in range(args.rounds)]
    out = {
        "messages": len(datas),
        "k": args.k,
        "language": args.language,
        "inline_cpu_us": summary([r["inline"]["cpu_us"] for r in rounds]),
        "pool_daemon_cpu_us": summary([r["pool"]["cpu_us"] for r in rounds]),
        "pool_worker_cpu_us": summary([r["pool"]["worker_cpu_us"] for r in rounds]),
        "inline_secs": summary([r["inline"]["secs"] for r in rounds]),
        "pool_secs": summary([r["pool"]["secs"] for r in rounds]),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
