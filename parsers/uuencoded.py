"""Files uuencoded into a plain-text body, taken out as the files they are.

Before MIME, and still from ``uuencode file | mail`` in scripts, cron jobs and old
monitoring systems, a file travels inside the text: a ``begin 644 name`` line, lines
of uuencoded data, ``end`` (``uuencode -m``: ``begin-base64``, base64, ``====``).
Thunderbird, Outlook and Apple Mail show such a block as an attachment, not as text.
So does the gateway: the file is scanned and kept like any attachment, and the text
shows what the writer wrote around it. Left in the text it was never scanned, yet an
agent's mail client could decode it from a notice that quotes the text.

A block is taken only when every line of it decodes; anything else stays text.
"""

from __future__ import annotations

import binascii
import re

__all__ = ["MAX_FILES", "body", "split"]

MAX_FILES = 100  # blocks taken from one text; past that the rest stays text

_BEGIN = re.compile(r"^begin(-base64)? ([0-7]{3,4}) ([^\n]*?)[ \t]*\n", re.M)
_BASE64_LINE = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def split(text: str) -> tuple[str, list[tuple[str, bytes]]]:
    """(``text`` without its uuencoded blocks, [(file name as written, bytes)])."""
    if "begin" not in text:  # nearly all mail: one scan in C
        return text, []
    files: list[tuple[str, bytes]] = []
    kept: list[str] = []
    pos = 0
    for begin in _BEGIN.finditer(text):
        name = begin.group(3).strip()
        if begin.start() < pos or len(files) >= MAX_FILES or not name:
            continue
        block = _block(text, begin.end(), begin.group(1) is not None)
        if block is None:
            continue
        data, end = block
        files.append((name, data))
        kept.append(text[pos : begin.start()])
        pos = end
    if not files:
        return text, []
    kept.append(text[pos:])
    return "".join(kept), files


def body(text: str) -> bytes | None:
    """The bytes of a part sent ``Content-Transfer-Encoding: x-uuencode``, or None unless
    every line decodes. Some mailers write the ``begin`` and ``end`` lines around the data,
    others (Outlook Express for some files) the data alone, which the stdlib passes
    through undecoded: the agent got the encoded text as the file."""
    lines = text.replace("\r\n", "\n").strip("\n").split("\n")
    if lines and _BEGIN.match(lines[0] + "\n"):
        lines = lines[1:]
    if lines and lines[-1].rstrip() == "end":
        lines = lines[:-1]
    out = bytearray()
    for line in lines:
        data = _uu_line(line)
        if data is None:
            return None
        out += data
    return bytes(out)


def _block(text: str, start: int, b64: bool) -> tuple[bytes, int] | None:
    """(the bytes, where the text goes on after the closing line) of the block whose
    data starts at ``start``, or None at its first line that is not data: a line is
    read once, so no text costs more than its length however many "begin" it holds."""
    out = bytearray()
    pos, last_empty = start, False
    while pos < len(text):
        nl = text.find("\n", pos)
        after = len(text) if nl < 0 else nl + 1
        line = text[pos:after].rstrip("\r\n")
        pos = after
        if b64:
            if line.rstrip() == "====":
                return bytes(out), pos
            if not _BASE64_LINE.fullmatch(line) or len(line) % 4:
                return None
            out += binascii.a2b_base64(line)
            continue
        if line.rstrip() == "end":
            return (bytes(out), pos) if last_empty else None  # a zero-length line ends the data
        data = _uu_line(line)
        if data is None:
            return None
        last_empty = not data
        out += data
    return None


def _uu_line(line: str) -> bytes | None:
    """One uuencoded line's bytes, or None unless it is one: its first character counts
    its bytes (0-45), the rest are that many bytes' characters (a trailing one more, as
    some encoders write), all between space and backquote."""
    if not line or not line.isascii():
        return b"" if not line else None  # " " trimmed away by a relay: zero bytes
    count = (ord(line[0]) - 32) & 63
    chars = -(-count // 3) * 4
    if count > 45 or len(line) - 1 not in (chars, chars + 1):
        return None
    if any(not 32 <= ord(c) <= 96 for c in line):
        return None
    try:
        return binascii.a2b_uu(line[: chars + 1])
    except binascii.Error:
        return None
