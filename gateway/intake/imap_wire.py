"""Reading aioimaplib's answers: status checks and the few values the IMAP intake needs.

aioimaplib hands back raw lines; these helpers turn them into values or a
:class:`SessionLost`, which ends the session (the intake reconnects).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

__all__ = [
    "SessionLost",
    "bodies",
    "consume",
    "literal",
    "ok",
    "sizes",
    "uid_set",
    "uidvalidity_of",
]

_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_FETCH_SIZE = re.compile(rb"UID (\d+).*RFC822\.SIZE (\d+)|RFC822\.SIZE (\d+).*UID (\d+)")
_FETCH_START = re.compile(rb"^(?:\* )?\d+ FETCH \(")
_UID = re.compile(rb"UID (\d+)")


class SessionLost(Exception):
    """The server went away or said something we cannot go on from."""


def consume(task: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned command's outcome so asyncio does not report it."""
    if not task.cancelled():
        task.exception()


def ok(resp: Any, what: str) -> Any:
    if getattr(resp, "result", None) != "OK":
        lines = getattr(resp, "lines", [])
        detail = bytes(lines[-1]).decode("utf-8", "replace")[:200] if lines else ""
        raise SessionLost(f"{what} failed: {getattr(resp, 'result', '?')} {detail}")
    return resp


def uidvalidity_of(resp: Any) -> int:
    for line in resp.lines:
        m = _UIDVALIDITY.search(bytes(line))
        if m:
            return int(m.group(1))
    raise SessionLost("SELECT gave no UIDVALIDITY")


def literal(resp: Any) -> bytes | None:
    """The message bytes of a one-message FETCH BODY[] response."""
    for line in resp.lines:
        if isinstance(line, bytearray):
            return bytes(line)
    return None


def sizes(resp: Any) -> dict[int, int]:
    """UID -> RFC822.SIZE from a FETCH of several messages' sizes."""
    out: dict[int, int] = {}
    for line in resp.lines:
        m = _FETCH_SIZE.search(bytes(line)) if isinstance(line, bytes | bytearray) else None
        if m:
            uid, size = (m.group(1), m.group(2)) if m.group(1) else (m.group(4), m.group(3))
            out[int(uid)] = int(size)
    return out


def bodies(resp: Any) -> dict[int, bytes]:
    """UID -> message bytes from one ``UID FETCH <set> (UID BODY.PEEK[])`` of many messages.

    aioimaplib gives each message as its ``* n FETCH (...{size}`` line, the literal
    (a bytearray), then the rest of the item (``)`` or `` UID 7)``): the UID may stand
    before or after the body, so a message's UID is looked for in the text lines
    from its FETCH line up to the next one. A FETCH without a body (flags a server
    pushed on its own) gives nothing.
    """
    out: dict[int, bytes] = {}
    uid: int | None = None
    data: bytes | None = None

    def close() -> None:
        if uid is not None and data is not None:
            out[uid] = data

    for line in resp.lines:
        if isinstance(line, bytearray):
            data = bytes(line)
            continue
        text = bytes(line)
        if _FETCH_START.match(text):
            close()
            uid, data = None, None
        if uid is None and (m := _UID.search(text)) is not None:
            uid = int(m.group(1))
    close()
    return out


def uid_set(uids: list[int]) -> str:
    """An IMAP sequence set for ``uids`` with runs folded: [1, 2, 3, 7] -> "1:3,7"."""
    parts: list[str] = []
    run: list[int] = []
    for uid in sorted(uids):
        if run and uid == run[-1] + 1:
            run.append(uid)
            continue
        if run:
            parts.append(f"{run[0]}:{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [uid]
    if run:
        parts.append(f"{run[0]}:{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(parts)
