"""HTTP load generator when ``wrk`` is absent: aiohttp, K keep-alive loops, its own process.

    python bench/http_client.py URL COOKIE K SECONDS

Prints one JSON object: requests, non-2xx, rate, p50/p99 ms. Costs far more
CPU per request than wrk, so figures from it are lower; the output says
which generator ran.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import aiohttp


async def run(url: str, cookie: str, conc: int, secs: float) -> dict[str, object]:
    lat: list[float] = []
    bad = 0
    stop = time.perf_counter() + secs

    async def loop(session: aiohttp.ClientSession) -> None:
        nonlocal bad
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            async with session.get(url, headers={"Cookie": cookie}, allow_redirects=False) as r:
                await r.read()
                if r.status >= 300:
                    bad += 1
            lat.append(time.perf_counter() - t0)

    conn = aiohttp.TCPConnector(limit=conc)
    t0 = time.perf_counter()
    async with aiohttp.ClientSession(connector=conn) as session:
        await asyncio.wait_for(asyncio.gather(*(loop(session) for _ in range(conc))), secs + 60)
    el = time.perf_counter() - t0
    lat.sort()

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, max(0, round(q * len(lat) + 0.5) - 1))] * 1000

    return {
        "requests": len(lat),
        "non_2xx": bad,
        "rate": (len(lat) - bad) / el,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "generator": "aiohttp",
    }


if __name__ == "__main__":
    url, cookie, k, secs = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    print(json.dumps(asyncio.run(run(url, cookie, k, secs))))
