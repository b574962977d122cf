"""A bare aiosmtpd server whose handler only answers 250: the SMTP layer's ceiling.

Its own process on 127.0.0.1, port 0; prints the port, then (with --count)
the number of messages received every 20 ms, for the outbox figure. Stopped
by its parent with SIGTERM. ``--loop uvloop``: the same server on the loop the
gateway runs when uvloop is installed (gateway/loop.py), so figure 1 can set the
gateway beside a sink on its own loop too; aiosmtpd's default is asyncio's.
"""

from __future__ import annotations

import argparse
import asyncio

from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway.loop import run_on


class Handler:
    """Accepts everything; counts DATA."""

    received = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        Handler.received += 1
        return "250 2.0.0 OK"


async def _report() -> None:
    while True:
        await asyncio.sleep(0.02)
        print(Handler.received, flush=True)


async def main(count: bool) -> None:
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(
        lambda: SMTP(Handler(), hostname="sink.bench.test", decode_data=False),
        "127.0.0.1",
        0,
    )
    print(srv.sockets[0].getsockname()[1], flush=True)
    if count:
        await _report()
    await asyncio.Event().wait()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", action="store_true")
    ap.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = ap.parse_args()
    run_on(args.loop, lambda: main(args.count))
