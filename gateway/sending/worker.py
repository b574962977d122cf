"""The send worker: the outbox's SMTP conversations, off the daemon's GIL.

Run by ``gateway/sending/pool.py`` as ``python -m gateway.sending.worker``, never by
hand. It holds one ``AccountConnection`` (outbound/sender.py, aiosmtplib) per
link of the daemon's outbox worker (a lane's, kept for the next lane to the same
account until the daemon says ``close``: outbound/links.py) and says what each
mail came to; the daemon keeps the claims, the marks, the retries and every other
write (outbound/delivery.py).
It imports the sender and the config's types only: no store, no web side.

Requests (pickled, framed as the answers are, gateway/worker_io.py):
``("lane", seq, link, account, hostname, timeout, start_by, mails)`` (each mail:
mail_from, rcpt_tos, body; ``account`` with its password decrypted) sends a
lane's mails one after the other over the link's connection, opened first if
need be, none started after ``start_by`` (``AccountConnection.deliver``);
``("cancel", seq)`` stops a lane the daemon gave up waiting for (it is stopping:
what the lane sent next would be recorded by nobody, and sent again after the
restart); ``("close", link)`` says QUIT on it. Answers: ``("attempt", seq, i, Attempt,
opened)`` as each mail is done (``opened``: connections it opened), then
``("end", seq)``. The daemon sends a lane's mails in one frame, so the next
goes out without waiting for its loop to read the last answer. Several lanes go
at once. At the end of stdin (the daemon stopped or died) it stops the lanes in
flight, as the daemon's own lanes stop when it does, says QUIT on every
connection and ends.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import sys
from typing import Any, BinaryIO

from gateway.loop import run_on
from gateway.worker_io import FRAME, answer, answers_out
from outbound.sender import AccountConnection


async def serve(out: BinaryIO) -> None:
    """Answer requests until stdin ends; then QUIT every connection."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    links: dict[int, AccountConnection] = {}
    lanes: dict[int, asyncio.Task[None]] = {}  # by seq, to be cancelled
    running: set[asyncio.Task[None]] = set()

    def start(coro: Any) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        running.add(task)
        task.add_done_callback(running.discard)
        return task

    answer(out, ("ready", os.getpid()))
    while True:
        try:
            (size,) = FRAME.unpack(await reader.readexactly(FRAME.size))
            request = pickle.loads(await reader.readexactly(size))
        except asyncio.IncompleteReadError:
            break
        if request[0] == "lane":
            _, seq, key, account, hostname, timeout, start_by, mails = request
            link = links.get(key)
            if link is None:
                link = links[key] = AccountConnection(account, hostname, timeout)
            lanes[seq] = start(_lane(out, seq, link, mails, start_by))
            lanes[seq].add_done_callback(lambda _t, seq=seq: lanes.pop(seq, None))
        elif request[0] == "cancel" and request[1] in lanes:
            lanes[request[1]].cancel()
        elif request[0] == "close":
            link = links.pop(request[1], None)
            if link is not None:
                start(link.close())
    for task in list(lanes.values()):  # nobody would record what they send now
        task.cancel()
    while running:
        await asyncio.gather(*running, return_exceptions=True)
    await asyncio.gather(*(link.close() for link in links.values()), return_exceptions=True)


async def _lane(
    out: BinaryIO, seq: int, link: AccountConnection, mails: list[dict[str, Any]], start_by: float
) -> None:
    try:
        before = link.opened
        async for i, attempt in link.deliver(mails, start_by):
            answer(out, ("attempt", seq, i, attempt, link.opened - before))
            before = link.opened
    finally:
        answer(out, ("end", seq))


def main() -> int:
    """``--loop CHOICE``: the daemon's ``[gateway] loop`` (uvloop's cheaper sockets here too)."""
    argv = sys.argv[1:]
    choice = argv[argv.index("--loop") + 1] if "--loop" in argv else "asyncio"
    with answers_out() as out:
        try:
            run_on(choice, lambda: serve(out))
        except BrokenPipeError:  # the daemon is gone: nobody to answer
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
