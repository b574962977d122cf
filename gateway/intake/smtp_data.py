"""The DATA payload read in chunks into one buffer, never a second whole copy.

aiosmtpd's ``smtp_DATA`` reads line by line: a 10 MB message is ~130,000 small
bytearrays (about twice its size in object headers and allocator slack) and then
their join, three copies at the peak and a heap fragmented by the small ones
(BENCHMARKS.md figure 6). Here the stream is read in chunks of up to half the
reader's limit, un-dot-stuffed (RFC 5321 4.5.2) straight into one ``BytesIO``
whose ``getvalue()`` hands its own buffer over as ``bytes`` without copying.

The end of data is a line holding only ``.``. ``readuntil(b".\\r\\n")`` never
consumes past it, so commands pipelined behind the message stay in the reader;
whether a found ``.\\r\\n`` starts a line is told from the two bytes before it
(kept across chunks; the stream starts as if after a CRLF, since ``354`` was one).

The answers are aiosmtpd's: over ``data_size_limit`` (counted as sent, stuffing
and line ends included) is ``552``, a line over the reader's limit ``500``; both
are given only after the end of data was read (RFC 5321 4.2.5), and nothing more
is kept once one is known.
"""

from __future__ import annotations

import asyncio
import io

__all__ = ["TOO_LONG", "TOO_MUCH", "read_data"]

TOO_MUCH = "552 Error: Too much mail data"
TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"
_END = b".\r\n"
_CRLF = b"\r\n"
_MAY_START_STUFFED = (b".", b"\n")  # a piece's first bytes that may be "." or "\n."


class _Body:
    """The message as it is read: un-dot-stuffed bytes, or, past a limit, the answer."""

    def __init__(self, size_limit: int | None, line_limit: int) -> None:
        self.out: io.BytesIO | None = io.BytesIO()
        self.error: str | None = None
        self.size_limit = size_limit
        self.line_limit = line_limit + len(_CRLF)  # the limit is on the text, without CRLF
        self.size = 0
        self.line = 0  # bytes of the current, unfinished line
        self.tail = _CRLF  # the last two bytes read: the data starts after the 354's CRLF

    def fail(self, reply: str) -> None:
        if self.error is None:
            self.error = reply
            self.out = None  # what was kept goes now, not at the end of data

    def add(self, piece: bytes) -> None:
        """A run of the stream that holds no end of data."""
        n = len(piece)
        if not n:
            return
        self.size += n
        if self.size_limit and self.size > self.size_limit:
            self.fail(TOO_MUCH)
        if self.line + n <= self.line_limit:  # no line can be too long: no scan
            nl = piece.rfind(b"\n")
            self.line = self.line + n if nl < 0 else n - nl - 1
        else:
            self._count_lines(piece)
        tail = self.tail
        self.tail = piece[-2:] if n >= 2 else tail[-1:] + piece
        out = self.out
        if out is None:
            return
        if piece[:1] not in _MAY_START_STUFFED and b"\r\n." not in piece:
            out.write(piece)  # no dot at a line start: the common case
            return
        view = memoryview(piece)
        pos = 0
        if tail == _CRLF and piece[:1] == b".":  # a line that started in the last piece
            pos = 1
        elif tail[-1:] == b"\r" and piece[:2] == b"\n.":
            out.write(view[:1])
            pos = 2
        while (i := piece.find(b"\r\n.", pos)) >= 0:
            out.write(view[pos : i + 2])
            pos = i + 3  # the stuffed dot
        out.write(view[pos:])

    def _count_lines(self, piece: bytes) -> None:
        lines = piece.split(b"\n")
        if len(lines) == 1:
            self.line += len(piece)
            longest = self.line
        else:
            longest = max([self.line + len(lines[0]) + 1, *(len(x) + 1 for x in lines[1:-1])])
            self.line = len(lines[-1])
        if max(longest, self.line) > self.line_limit:
            self.fail(TOO_LONG)

    def ends_at(self, chunk: bytes) -> bool:
        """Whether ``chunk`` (ending in ``.\\r\\n``) ends with the end-of-data line."""
        before = chunk[-5:-3] if len(chunk) >= 5 else (self.tail + chunk[:-3])[-2:]
        return before == _CRLF


async def read_data(
    reader: asyncio.StreamReader, size_limit: int | None, line_limit: int
) -> bytes | str:
    """Read up to and including the end of data: the message, or the error reply.

    ``line_limit``: the reader's own limit (aiosmtpd's ``line_length_limit``), which
    also bounds each chunk. EOF before the end raises ``IncompleteReadError``."""
    body = _Body(size_limit, line_limit)
    step = max(line_limit // 2, 1)
    while True:
        try:
            chunk = await reader.readuntil(_END)
        except asyncio.LimitOverrunError as exc:
            body.add(await reader.readexactly(max(1, min(exc.consumed, step))))
            continue
        if body.ends_at(chunk):
            body.add(chunk[:-3])
            break
        body.add(chunk)
    if body.error is not None or body.out is None:
        return body.error or TOO_MUCH
    data = body.out.getvalue()  # the buffer itself, trimmed: no copy
    body.out = None
    return data
