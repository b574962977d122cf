"""Figure 7: outbox delivery rate to a local sink, against a bare aiosmtplib loop.

A sink (bench/sink.py, its own process) counts what arrives. Per run, first a
bare loop sends N prebuilt mails through aiosmtplib with the worker's
concurrency (4 connections, one per mail, as the worker does); then N rows are
put in a fresh gateway's outbox (through the gateway's own repos, in one
transaction) and the daemon starts: its worker delivers them to a fresh sink.
The gateway's clock starts at its first delivered mail, so start-up is not
counted. The bare loop runs in this process, the gateway in its own.

A second ceiling, ``bare_reused``: the same 4 connections each kept open for
its share of the mails, as the worker does since issue 21 (a connection per
tenant account, reused); the headline ratio stays against the first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from bench.common import Sink, summary, workdir
from tests.daemon import Daemon

WORKER_CONCURRENCY = 4


def _mail(i: int) -> bytes:
    body = ("x" * 76 + "\r\n") * 20
    return (
        f"From: support@acme.test\r\nTo: c{i}@client.test\r\nSubject: [ACME-{i}] hi\r\n"
        f"Message-ID: <bench.{i}@gw.test>\r\nAuto-Submitted: auto-replied\r\n\r\n{body}"
    ).encode()


async def _bare(port: int, n: int, conc: int) -> None:
    import aiosmtplib

    sem = asyncio.Semaphore(conc)

    async def one(i: int) -> None:
        async with sem:
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, local_hostname="gw.test")
            async with client:
                await client.sendmail("", [f"c{i}@client.test"], _mail(i))

    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), 600)


async def _bare_reused(port: int, n: int, conc: int) -> None:
    import aiosmtplib

    async def lane(first: int) -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, local_hostname="gw.test")
        async with client:
            for i in range(first, n, conc):
                await client.sendmail("", [f"c{i}@client.test"], _mail(i))

    await asyncio.wait_for(asyncio.gather(*(lane(i) for i in range(conc))), 600)


def fill_outbox(d: Daemon, n: int) -> None:
    """N pending rows through the gateway's own store code, in one transaction."""
    from routing.config import load_config
    from store import repos
    from store.db import create_writer_engine

    config = load_config(d.config)
    engine = create_writer_engine(config.database_url)
    with engine.begin() as conn:
        repos.enqueue_many(
            conn,
            "acme",
            [
                ("ack", None, f"<bench.{i}@gw.test>", "", [f"c{i}@client.test"], _mail(i))
                for i in range(n)
            ],
        )
    engine.dispose()


def _bare_rate(loop: Callable[[int, int, int], Coroutine[Any, Any, None]], n: int) -> float:
    """Mails a second of one bare client loop into a fresh sink."""
    sink = Sink(count=True)
    try:
        t0 = time.perf_counter()
        asyncio.run(loop(sink.port, n, WORKER_CONCURRENCY))
        return n / (time.perf_counter() - t0)
    finally:
        sink.stop()


def fig7(n: int, runs: int) -> dict[str, Any]:
    raw = []
    with workdir("fig7") as tmp:
        for r in range(runs):
            bare = _bare_rate(_bare, n)
            bare_reused = _bare_rate(_bare_reused, n)
            sink = Sink(count=True)
            try:
                acct = (
                    f'[tenants.outbound]\nhost = "127.0.0.1"\nport = {sink.port}\n'
                    'security = "none"\n'
                )
                d = Daemon(Path(tmp) / f"gw-{r}", acme_extra=acct)
                d.start()  # creates the schema
                d.stop()
                fill_outbox(d, n)
                d.start()
                try:
                    sink.wait_count(1, 120)  # the worker's first mail: start the clock
                    secs = sink.wait_count(n, 600)
                finally:
                    d.stop()
            finally:
                sink.stop()
            gw = (n - 1) / secs
            raw.append(
                {
                    "bare_rate": bare,
                    "bare_reused_rate": bare_reused,
                    "rate": gw,
                    "ratio": gw / bare,
                    "ratio_reused": gw / bare_reused,
                }
            )
            print(
                f"  run {r + 1}: bare aiosmtplib {bare:.0f}/s (reused {bare_reused:.0f}/s), "
                f"gateway outbox {gw:.0f}/s",
                flush=True,
            )
    return {
        "mails": n,
        "concurrency": WORKER_CONCURRENCY,
        "rate": summary([x["rate"] for x in raw]),
        "bare_rate": summary([x["bare_rate"] for x in raw]),
        "ratio_gateway_bare": summary([x["ratio"] for x in raw]),
        "bare_reused_rate": summary([x["bare_reused_rate"] for x in raw]),
        "ratio_gateway_bare_reused": summary([x["ratio_reused"] for x in raw]),
        "raw": raw,
    }
