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

__all__ = ["MAX_FILES", "split"]

MAX_FILES = 100  # blocks taken from one text; past that the rest stays text

_BEGIN = re.compile(r"^begin(-base64)? ([0-7]{3,4}) ([^\n]*?)[ \t]*\n", re.M)
_UU_END = re.compile(r"^end[ \t]*$", re.M)
_B64_END = re.compile(r"^====[ \t]*$", re.M)


def split(text: str) -> tuple[str, list[tuple[str, bytes]]]:
    """(``text`` without its uuencoded blocks, [(file name as written, bytes)])."""
    if "begin" not in text:  # nearly all mail: one scan in C
        return text, []
    files: list[tuple[str, bytes]] = []
    kept: list[str] = []
    pos = 0
    for begin in _BEGIN.finditer(text):
        if begin.start() < pos or len(files) >= MAX_FILES:
            continue
        b64 = begin.group(1) is not None
        end = (_B64_END if b64 else _UU_END).search(text, begin.end())
        name = begin.group(3).strip()
        if end is None or not name:
            continue
        data = _decode(text[begin.end() : end.start()], b64)
        if data is None:
            continue
        files.append((name, data))
        kept.append(text[pos : begin.start()])
        pos = end.end() + 1 if text[end.end() : end.end() + 1] == "\n" else end.end()
    if not files:
        return text, []
    kept.append(text[pos:])
    return "".join(kept), files


def _decode(block: str, b64: bool) -> bytes | None:
    """The bytes of a block's data lines, or None unless every line is valid."""
    lines = block.splitlines()
    if not block.isascii() or not lines:
        return None
    try:
        if b64:
            return binascii.a2b_base64("".join(lines), strict_mode=True)
        out = bytearray()
        while lines and not lines[-1].strip():
            lines.pop()  # the last, empty line (" ", which a relay may have trimmed)
        for line in lines:
            line = line.rstrip("\r")
            if not line:
                return None  # none inside a block
            try:
                out += binascii.a2b_uu(line)
            except binascii.Error:
                # Some encoders pad a line past its length byte: decode what it counts,
                # as the stdlib's uu module did.
                count = (((ord(line[0]) - 32) & 63) * 4 + 5) // 3
                out += binascii.a2b_uu(line[:count])
        return bytes(out)
    except (binascii.Error, ValueError):
        return None
