"""A parse worker: raw messages in on stdin, ``ParsedMessage`` values out on stdout.

Run by ``gateway/intake/parse_pool.py`` as ``python -m gateway.intake.parse_worker``,
never by hand. It imports the parser, routing/language.py and the standard library
only: no store, no web side, so it costs what a parse costs and no more (figure 6
measures memory). One message at a time, answers in the order asked.

The language model (py3langid, ~100 MiB) is loaded only when the daemon's tenants may
need it (``--language``): then in a thread from the start, which says ``("warm", pid,
error)`` when done (the daemon opens its listeners after it); a message that needs it
sooner waits on that same load. A message asked to be told its language (the daemon
knows its tenants before it is parsed) comes back carrying it, and the daemon's
writer does not classify it again.

Frames: a request is ``!QIII?`` (length of the message, the three limits, whether to
tell its language) and the message's bytes; an answer (gateway/worker_io.py) is a pickle
of ``("ok", ParsedMessage)``, ``("refused", class name, text)`` for a ParseError,
or ``("fault", class name, text)`` for anything else. The first answer is
``("ready", pid)`` once the imports are done (the model may still be loading); the
``"warm"`` frame comes after it, between any two answers.

It ignores SIGINT and SIGTERM and stops when its stdin closes (gateway/worker_io.py).
"""

from __future__ import annotations

import os
import struct
import sys
import threading
from typing import BinaryIO

from gateway.worker_io import answer as _send
from gateway.worker_io import answers_out

REQUEST = struct.Struct("!QIII?")


def serve(inp: BinaryIO, out: BinaryIO, language: bool = False) -> None:
    """Answer requests until ``inp`` ends; ``language``: load the model meanwhile."""
    from parsers import Limits, ParseError, parse
    from routing.language import told

    _send(out, ("ready", os.getpid()))
    if language:
        threading.Thread(target=_warm, args=(out,), name="language-warm", daemon=True).start()
    while True:
        head = inp.read(REQUEST.size)
        if len(head) < REQUEST.size:
            return  # the daemon closed our stdin, or died
        size, max_header_bytes, max_mime_depth, max_parts, language = REQUEST.unpack(head)
        data = inp.read(size)
        if len(data) < size:
            return
        limits = Limits(
            max_header_bytes=max_header_bytes, max_mime_depth=max_mime_depth, max_parts=max_parts
        )
        answer: tuple[object, ...]
        try:
            parsed = parse(data, limits=limits)
            answer = ("ok", told(parsed) if language else parsed)
        except ParseError as exc:
            answer = ("refused", type(exc).__name__, str(exc)[:500])
        except Exception as exc:  # parse raises only ParseError; anything else is ours
            answer = ("fault", type(exc).__name__, str(exc)[:500])
        del data
        _send(out, answer)


def _warm(out: BinaryIO) -> None:
    """The model loaded beside the parses; said when done, failed or not (the first
    message that needs it then tries again, and fails with the reason)."""
    from routing.language import warm

    error = ""
    try:
        warm()
    except Exception as exc:
        error = repr(exc)[:500]
    _send(out, ("warm", os.getpid(), error))


def main() -> int:
    with answers_out() as out:
        serve(sys.stdin.buffer, out, language="--language" in sys.argv[1:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
