"""What clamd said about a stream, read failing closed: only an exact ``stream: OK`` is clean.

The values the scanner (``gateway/intake/scan.py``) returns and the one
function that reads clamd's reply line into them; ``gateway/intake/replies.py``
says what each means to the sender.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "LIMITS_EXCEEDED_PREFIX",
    "SIZE_LIMIT_REPLY",
    "Clean",
    "Infected",
    "ScanResult",
    "Unavailable",
    "Unscannable",
    "parse_reply",
]

#: clamd's reply when the stream is longer than its ``StreamMaxLength`` (clamd(8)). It is sent and
#: then the connection is closed, usually while we are still sending, so the reply is read
#: concurrently with the upload (see :meth:`Scanner._instream`).
SIZE_LIMIT_REPLY = "INSTREAM size limit exceeded. ERROR"

#: Prefix clamd puts on FOUND replies when ``AlertExceedsMax yes`` turns a limit into an alert.
LIMITS_EXCEEDED_PREFIX = "Heuristics.Limits.Exceeded"


@dataclass(frozen=True)
class Clean:
    """clamd answered exactly ``stream: OK`` after receiving the whole stream."""


@dataclass(frozen=True)
class Infected:
    """clamd answered ``stream: <signature> FOUND``. Reject (``554 5.7.1``), never store."""

    signature: str

    @property
    def limits_exceeded(self) -> bool:
        """True for ``Heuristics.Limits.Exceeded*``: a scan limit (zip bomb, recursion, time)
        was hit. Still not clean; the pipeline may word the rejection differently."""
        return self.signature.startswith(LIMITS_EXCEEDED_PREFIX)


@dataclass(frozen=True)
class Unavailable:
    """No trustworthy answer: unreachable, refused, reset, deadline hit, garbage. Retry later
    (``451 4.7.1``)."""

    reason: str


@dataclass(frozen=True)
class Unscannable:
    """This scanner can never scan this data (size limit). Permanent (``552 5.3.4``), never
    clean."""

    reason: str


ScanResult = Clean | Infected | Unavailable | Unscannable


def parse_reply(raw: bytes, *, complete: bool = True) -> ScanResult:
    """Turn one raw clamd INSTREAM reply into a scan result, failing closed.

    ``raw`` is what was read, terminator included if one came (NUL for ``z`` commands, newline
    for ``n`` commands). ``complete`` is False if the reply arrived before we finished sending
    the stream: a real clamd cannot have scanned it yet, so such an "OK" is not believed.
    A reply without terminator may be truncated, so it is never Clean either.
    """
    terminated = raw.endswith((b"\0", b"\n"))
    body = raw[:-1] if terminated else raw
    if body.endswith(b"\r"):
        body = body[:-1]
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        return Unavailable(f"non-ASCII reply from clamd: {raw[:80]!r}")
    if not text.isprintable():
        return Unavailable(f"malformed reply from clamd: {raw[:80]!r}")

    if text == "stream: OK":
        if not terminated:
            return Unavailable("truncated reply from clamd: 'stream: OK' without terminator")
        if not complete:
            return Unavailable("clamd said OK before the end of the stream")
        return Clean()
    if text.startswith("stream: ") and text.endswith(" FOUND"):
        signature = text[len("stream: ") : -len(" FOUND")].strip()
        if signature:
            return Infected(signature)
        return Unavailable(f"FOUND reply without a signature name: {text!r}")
    if text == SIZE_LIMIT_REPLY:
        return Unscannable("clamd: " + text)
    if text.endswith(" ERROR"):
        # e.g. "stream: Can't allocate memory ERROR", "COMMAND READ TIMED OUT": transient.
        return Unavailable("clamd: " + text)
    return Unavailable(f"unexpected reply from clamd: {text[:80]!r}")
