"""``format=flowed`` plain text (RFC 3676) joined back into the lines its writer typed.

Thunderbird, K-9 Mail and older iPhones send plain text as "flowed": a paragraph is cut
into lines of under 80 characters, each line but its last ending in a space (a soft
break), and a line that starts with a space or "From " gets one more (stuffing).
``delsp=yes`` (the iPhone's, for scripts without spaces between words) adds a space
to cut at that was not in the text. A mail client joins the soft breaks back and
shows the paragraph as the writer typed it; read as is, the text has breaks in the
middle of sentences (and, with ``delsp=yes``, of Japanese words), and a reply's
"On ... wrote:" line cut in two.

Quoted lines keep their depth: the ``>`` marks of a line are counted, the paragraph is
joined only with lines of the same depth, and written back as that many ``>`` and a
space. The signature separator ``-- `` is never a soft break.
"""

from __future__ import annotations

__all__ = ["unflow"]


def unflow(text: str, *, delsp: bool) -> str:
    """``text`` (lines ending in ``\\n``) with its soft breaks joined."""
    out: list[str] = []
    depth, parts = -1, []  # the paragraph being joined: its quote depth, its lines
    for line in text.split("\n"):
        quoted = len(line) - len(line.lstrip(">"))
        body = line[quoted:]
        if body.startswith(" "):
            body = body[1:]  # stuffing, or the space after the quote marks
        soft = body.endswith(" ") and body != "-- "
        if soft and delsp:
            body = body[:-1]
        if parts and quoted != depth:  # a soft break before another depth ends nothing more
            out.append(_line(depth, parts))
            parts = []
        depth = quoted
        parts.append(body)
        if not soft:
            out.append(_line(depth, parts))
            parts = []
    if parts:
        out.append(_line(depth, parts))
    return "\n".join(out)


def _line(depth: int, parts: list[str]) -> str:
    joined = "".join(parts)
    if not depth:
        return joined
    return f"{'>' * depth} {joined}" if joined else ">" * depth
