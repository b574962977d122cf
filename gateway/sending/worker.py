"""The send worker: the outbox's SMTP conversations, off the daemon's GIL.

Run by ``gateway/sending/pool.py`` as ``python -m gateway.sending.worker``, never by
hand. It holds one ``AccountConnection`` (outbound/sender.py, aiosmtplib) per lane
of the daemon's outbox worker and says what each mail came to; the daemon keeps
the claims, the marks, the retries and every other write (outbound/delivery.py).
It imports the sender and the config's types only: no store, no web side.

Requests (pickled, framed as the answers are, gateway/worker_io.py):
``("send", seq, link, account, hostname, timeout, row)`` (``row``: mail_from,
rcpt_tos, body; ``account`` with its password decrypted) sends one mail over the
link's connection, opened first if need be; ``("close", link)`` says QUIT on it.
Answers: ``("attempt", seq, Attempt, opened)``, ``opened`` 1 when this mail
opened a connection. The mails of several links go at once; of one link, one
after the other (the daemon waits for each answer). At the end of stdin it
finishes the mails in flight, says QUIT on every connection and ends.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import sys
from typing import Any, BinaryIO

from gateway.worker_io import FRAME, answer, answers_out
from outbound.sender import AccountConnection, Attempt


async def serve(out: BinaryIO) -> None:
    """Answer requests until stdin ends; then QUIT every connection."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    links: dict[int, AccountConnection] = {}
    running: set[asyncio.Task[None]] = set()

    def start(coro: Any) -> None:
        task = asyncio.create_task(coro)
        running.add(task)
        task.add_done_callback(running.discard)

    answer(out, ("ready", os.getpid()))
    while True:
        try:
            (size,) = FRAME.unpack(await reader.readexactly(FRAME.size))
            request = pickle.loads(await reader.readexactly(size))
        except asyncio.IncompleteReadError:
            break
        if request[0] == "send":
            _, seq, key, account, hostname, timeout, row = request
            link = links.get(key)
            if link is None:
                link = links[key] = AccountConnection(account, hostname, timeout)
            start(_send(out, seq, link, row))
        elif request[0] == "close":
            link = links.pop(request[1], None)
            if link is not None:
                start(link.close())
    while running:
        await asyncio.gather(*running, return_exceptions=True)
    await asyncio.gather(*(link.close() for link in links.values()), return_exceptions=True)


async def _send(out: BinaryIO, seq: int, link: AccountConnection, row: dict[str, Any]) -> None:
    before = link.opened
    try:
        attempt = await link.send(row)
    except Exception as exc:  # send raises nothing but cancellation; a bug is a retry
        attempt = Attempt("retry", f"internal error: {type(exc).__name__}")
    answer(out, ("attempt", seq, attempt, link.opened - before))


def main() -> int:
    with answers_out() as out:
        try:
            asyncio.run(serve(out))
        except BrokenPipeError:  # the daemon is gone: nobody to answer
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
