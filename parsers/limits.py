"""Structural limits, enforced by a streaming pre-scan before any real parse.

The stdlib and flanker parsers document no limits: a 10,000-deep multipart nest
or 100,000 four-byte parts cost them memory and time proportional to the damage
(Dovecot, MIME-tools and Email-MIME CVE-2024-4140 all learnt this). The scan
below looks only at header blocks and at lines starting with ``--``, jumps over
everything else with ``bytes.find`` (C speed), never copies the body except to
normalise bare CR line ends, and stops at the first limit crossed, so it is
linear in the input and bounded in memory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from parsers.errors import HeaderTooLarge, StructureTooDeep

__all__ = ["Limits", "prescan"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-message ceilings; each default names the precedent it follows.

    max_header_bytes: size of any one header block (the top one and every
        part's), 256 KiB -- Postfix allows 100 KiB for the whole header, real
        mail with long To:/Received chains stays far below.
    max_mime_depth: nesting of multipart and message/* containers, 50 --
        MIME-tools uses 64, real clients rarely exceed 5.
    max_parts: MIME entities in the whole tree, 1000 -- MIME-tools' figure.
    """

    max_header_bytes: int = 256 * 1024
    max_mime_depth: int = 50
    max_parts: int = 1000


_BARE_CR = re.compile(rb"\r(?!\n)")
_CT_NAME = re.compile(rb"content-type[ \t]*:", re.I)
_BOUNDARY = re.compile(rb"""boundary[ \t]*=[ \t]*(?:"([^"]*)"|([^\s;]+))""", re.I)


def _content_type(header_block: bytes) -> tuple[bytes, bytes | None]:
    """(lower-cased type/subtype, boundary) of the first Content-Type, like the stdlib reads it."""
    m = _CT_NAME.search(header_block)
    # The name must start a line, as a header; "X-Content-Type:" does not count.
    while m and m.start() and header_block[m.start() - 1 : m.start()] not in (b"\n", b"\r"):
        m = _CT_NAME.search(header_block, m.end())
    if not m:
        return b"text/plain", None
    end = m.end()
    while True:  # unfold: continuation lines start with whitespace
        nl = header_block.find(b"\n", end)
        if nl < 0 or header_block[nl + 1 : nl + 2] not in (b" ", b"\t"):
            break
        end = nl + 1
    value = header_block[m.end() : nl if nl >= 0 else len(header_block)]
    ctype = value.split(b";", 1)[0].strip().lower()
    if ctype.count(b"/") != 1:
        ctype = b"text/plain"
    boundary = None
    if ctype.startswith(b"multipart/"):
        if b"boundary*" in value.lower():
            boundary = _rfc2231_boundary(value)
        else:
            bm = _BOUNDARY.search(value)
            if bm:
                boundary = (bm.group(1) if bm.group(1) is not None else bm.group(2)).rstrip()
    return ctype, boundary


def _rfc2231_boundary(value: bytes) -> bytes | None:
    """Rare encoded boundary: let the stdlib decode it exactly as its parser will."""
    from email.message import Message

    msg = Message()
    msg["Content-Type"] = value.decode("latin-1").replace("\r", " ").replace("\n", " ")
    b = msg.get_boundary()
    return b.encode("latin-1", "replace") if b else None


def prescan(data: bytes, limits: Limits) -> None:
    """Raise HeaderTooLarge / StructureTooDeep before the real parser sees ``data``."""
    if b"\r" in data and data.count(b"\r") != data.count(b"\r\n"):
        data = _BARE_CR.sub(b"\n", data)  # the stdlib treats a bare CR as a line end too
    stack: list[bytes | None] = []  # boundary per open container; None for message/*
    parts = 0
    pos = 0
    while True:
        # a header block starts at pos (the message's, a part's, or an enclosed message's)
        parts += 1
        if parts > limits.max_parts:
            raise StructureTooDeep(f"more than {limits.max_parts} MIME parts")
        end, body = _header_end(data, pos, limits.max_header_bytes, stack)
        ctype, boundary = _content_type(data[pos:end])
        pos = body
        if ctype.startswith(b"multipart/") and boundary is not None:
            stack.append(boundary)
        elif ctype.startswith(b"message/") and ctype != b"message/delivery-status":
            stack.append(None)
        if len(stack) > limits.max_mime_depth:
            raise StructureTooDeep(f"MIME nesting deeper than {limits.max_mime_depth}")
        if ctype.startswith(b"message/") and ctype != b"message/delivery-status":
            continue  # the enclosed message's own headers follow at once
        pos = _next_part(data, pos, stack)
        if pos < 0:
            return


_HEADER_LINE = re.compile(rb"From |[\x21-\x39\x3b-\x7e]*:|[ \t]")
_HEADER_BLOCK = re.compile(rb"(?:(?:From |[\x21-\x39\x3b-\x7e]*:|[ \t])[^\n]*\n)*")


def _header_end(data: bytes, pos: int, limit: int, stack: list[bytes | None]) -> tuple[int, int]:
    """(end of the header block at ``pos``, start of its body), as the stdlib splits them.

    The block ends at a blank line, at the first line that is not a header, or
    at a delimiter of an open multipart -- so a part without a blank line still
    counts as a part, exactly as the stdlib's feed parser sees it.
    """
    n = len(data)
    start = pos
    boundaries = {b for b in stack if b is not None}
    if not boundaries:  # fast path: one C-speed regex over the block, bounded by the limit
        m = _HEADER_BLOCK.match(data, pos, min(n, pos + limit + 2))
        pos = m.end()
        if pos - start > limit:
            raise HeaderTooLarge(f"header block over {limit} bytes")
        if pos >= n:
            if n - start > limit:
                raise HeaderTooLarge(f"header block over {limit} bytes")
            return n, n
    while pos < n:
        nl = data.find(b"\n", pos, start + limit + 1)
        if nl < 0:
            if n - start > limit:
                raise HeaderTooLarge(f"header block over {limit} bytes")
            nl = n
        line = data[pos:nl]
        if line in (b"", b"\r"):
            return pos, nl + 1
        if boundaries and line.startswith(b"--"):
            mark = line[2:].rstrip(b" \t\r")
            if mark in boundaries or (mark.endswith(b"--") and mark[:-2] in boundaries):
                return pos, pos
        if not _HEADER_LINE.match(line):
            return pos, pos
        pos = nl + 1
        if pos - start > limit:
            raise HeaderTooLarge(f"header block over {limit} bytes")
    return n, n


def _next_part(data: bytes, pos: int, stack: list[bytes | None]) -> int:
    """Skip a body to the next open delimiter of any open multipart; -1 at the end.

    Like the stdlib's BufferedSubFile, a delimiter of an outer multipart also
    ends every part nested inside it.
    """
    n = len(data)
    while pos < n:
        if all(b is None for b in stack):
            return -1
        # candidate lines start with "--", either at pos itself or after a newline
        if data.startswith(b"--", pos):
            start = pos
        else:
            hit = data.find(b"\n--", pos)
            if hit < 0:
                return -1
            start = hit + 1
        nl = data.find(b"\n", start)
        line_end = n if nl < 0 else nl
        pos = line_end + 1
        line = data[start + 2 : line_end].rstrip(b" \t\r")
        for i in range(len(stack) - 1, -1, -1):
            b = stack[i]
            if b is None:
                continue
            if line == b:
                del stack[i + 1 :]
                return pos
            if line.endswith(b"--") and line[:-2] == b:
                del stack[i:]
                break
    return -1
