"""Reading aioimaplib's answers: status checks and the few values the IMAP intake needs.

aioimaplib hands back raw lines; these helpers turn them into values or a
:class:`SessionLost`, which ends the session (the intake reconnects).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

__all__ = ["SessionLost", "consume", "literal", "ok", "sizes", "uidvalidity_of"]

_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_FETCH_SIZE = re.compile(rb"UID (\d+).*RFC822\.SIZE (\d+)|RFC822\.SIZE (\d+).*UID (\d+)")


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
