"""The worker's side of the daemon's worker processes (gateway/workers.py): frames out,
signals ignored, its own descriptor for answers.

Standard library only, so a worker that imports it (the parse worker: parser and
language model, nothing more, figure 6 measures its memory) pays for nothing else.

An answer is ``!Q`` (length) and a pickle of a tuple; the first a worker says is
``("ready", pid)`` once its imports are done.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import threading
from typing import BinaryIO

__all__ = ["FRAME", "answer", "answers_out", "frame"]

FRAME = struct.Struct("!Q")
_SENDING = threading.Lock()  # a worker's threads never interleave two answers


def frame(value: tuple[object, ...]) -> bytes:
    payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return FRAME.pack(len(payload)) + payload


def answer(out: BinaryIO, value: tuple[object, ...]) -> None:
    """One write per answer: one wake-up of the daemon's loop."""
    data = frame(value)
    with _SENDING:
        out.write(data)
        out.flush()


def answers_out() -> BinaryIO:
    """The answers' descriptor (a dup of stdout; a stray print then goes to stderr).

    SIGINT and SIGTERM are ignored: a Ctrl-C or systemd's stop reaches the whole
    process group, and the daemon still has work in flight to hear about; a worker
    stops when its stdin closes (the daemon closed it, or died)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    return out
