"""Cut quoted history and signatures off a reply, leaving what was written this time.

A matching problem: the first attribution line ("On <date>, <name> wrote:"),
separator ("-----Original Message-----") or header block (Outlook's
From:/Sent:/To:/Subject:) that a mail client writes above the quoted mail
ends the new text; ``>`` lines above it are quotes the sender answered
between. The marks themselves are in ``parsers.quote_marks``. Text that only
looks like a mark stays: an attribution must carry a date or an address, or
be followed by a quote; a rule line must have a header block under it; a
header block needs more than one of its keys. Forwarded mail is kept whole:
it is what the sender wants read. Outlook marks a forwarded mail with the same
separator or header block as a quoted one; a forward's subject ("FW:", "WG:",
...) tells them apart.
"""

from __future__ import annotations

from parsers import quote_marks as qm

__all__ = ["is_forward", "read_reply", "reply_text", "split_reply"]


def is_forward(subject: str) -> bool:
    """Whether a subject says its mail forwards another ("Fwd:", Outlook's "FW:", ...)."""
    return qm.FORWARD_SUBJECT.match(subject) is not None


def reply_text(text: str, *, forward: bool = False) -> str:
    """``text`` without quoted history and signature; the whole text if nothing is left.

    A forwarded mail below the new text is kept whole (its own quotes and
    signature included); the sender's signature above it still goes. With
    ``forward`` (the subject says so: ``is_forward``) the first mark of history
    of any kind opens the forwarded mail.
    """
    return read_reply(text, forward=forward)[0]


def read_reply(text: str, *, forward: bool = False) -> tuple[str, bool]:
    """(``reply_text``, whether it keeps a forwarded mail): a forward's HTML is kept
    whole too, where the HTML quote markers (Gmail's, Apple's) would cut it."""
    lines = text.split("\n")
    cut, forward_at = _history_start(lines)
    if forward and forward_at is None and cut < len(lines):
        cut, forward_at = len(lines), cut
    reply = _reply(lines, cut, forward_at)
    if not reply and forward_at is None:
        reply = _below_quote(lines, cut)
    return reply or text.strip(), forward_at is not None


def _below_quote(lines: list[str], cut: int) -> str:
    """A reply written below the quote it answers (bottom-posting, as Thunderbird users
    and mailing lists write): an attribution at the top, its ``>`` lines, then the new
    text. Read as the interleaved reply it is: without the quote and the attribution;
    "" when the history is not an attribution over ``>`` lines or nothing follows it."""
    for q in range(cut, min(cut + 5, len(lines))):  # the attribution's lines, a blank
        if lines[q].lstrip().startswith(">"):
            break
    else:
        return ""
    below = lines[q:]
    return _reply(below, len(below), None)


def _reply(lines: list[str], cut: int, forward: int | None) -> str:
    head = lines[: cut if forward is None else forward]
    forwarded = lines[forward:] if forward is not None else []
    if ">" in "\n".join(head):  # one C-level scan instead of a strip per line
        head = _unquoted(head)
    for i, ln in enumerate(head):
        if qm.SIGNATURE.match(ln) and any(x.strip() for x in head[:i]):
            head = head[:i]
            break
    _trim(head)
    while head and len(head[-1]) < 200 and qm.MOBILE.match(head[-1]):
        head.pop()
        _trim(head)
    kept = [*head, "", *forwarded] if head and forwarded else head + forwarded
    return "\n".join(ln.rstrip() for ln in kept).strip()


def _unquoted(lines: list[str]) -> list[str]:
    """``lines`` without the ``>`` lines a reply answers between, and without the second
    of the two blank lines that stood around such a quote."""
    kept: list[str] = []
    dropped = False
    for ln in lines:
        if ln.lstrip().startswith(">"):
            dropped = True
        elif ln.strip() or not (dropped and kept and not kept[-1].strip()):
            kept.append(ln)
            dropped = dropped and not ln.strip()
    return kept


def _trim(lines: list[str]) -> None:
    while lines and not lines[-1].strip():
        lines.pop()


def split_reply(text: str, subject: str = "") -> tuple[str, str]:
    """(what the sender wrote this time, the rest: quotes and signature), for folding.

    The rest is ``text`` with the reply's lines taken out in order, so quotes
    answered in between and the history below both land in it. ``subject`` is
    the mail's: a forward's is read as ``reply_text`` reads it.
    """
    reply = reply_text(text, forward=is_forward(subject))
    want = [ln.strip() for ln in reply.split("\n")]
    rest: list[str] = []
    j = 0
    for ln in text.split("\n"):
        if j < len(want) and ln.strip() == want[j]:
            j += 1
        else:
            rest.append(ln)
    if j < len(want):  # the reply is not a subsequence (it is the whole text): no rest
        return reply, ""
    return reply, "\n".join(rest).strip("\n")


def _history_start(lines: list[str]) -> tuple[int, int | None]:
    """(index of the first line of quoted history or len(lines), index of a forward mark).

    Each pattern runs only on lines that can match it (ending in a colon, a
    header key in the first columns, a leading rule character): unanchored
    searches over every line of a long mail were most of the parser's time.
    """
    n = len(lines)
    whole = "\n".join(lines)
    if ":" not in whole and "：" not in whole and "-" not in whole and "_" not in whole:
        return n, None  # most new tickets: nothing below can match
    low_all = whole.lower()
    fwd = any(k in low_all for k in qm.FORWARD_HINTS)
    for i, line in enumerate(lines):
        s = line.strip()
        if not s or s[0] == ">":
            continue
        if fwd and qm.FORWARD.match(s):
            return n, i  # everything below is forwarded content, keep it
        if s[0] in "-_=─#原元" and i > 0 and qm.SEPARATOR.match(s):
            return i, None
        if s[0] == "_" and qm.RULE.match(s) and _header_block(lines, _next_text(lines, i)):
            return i, None
        if s[-1] in ":：":
            start = _attribution_start(lines, i)
            if start is not None:
                return start, None
        elif "@" in s and len(s) < 1000 and qm.LEAD_INLINE.match(s) and _evidence(s, lines, i):
            return i, None  # "On <date>, <name> <addr> wrote: <quoted text>"
        if ":" in s[:24] or "：" in s[:24]:
            if _header_block(lines, i):
                return i, None
    return n, None


def _attribution_start(lines: list[str], i: int) -> int | None:
    """First line of an attribution ending on line ``i``, or None if it is not one.

    Clients wrap long attributions (Gmail at 78 columns, before the address or
    before "wrote:"), so up to three lines are read together.
    """
    s = lines[i].strip()
    if len(s) > 600:
        return None
    for start in range(max(0, i - 2), i + 1):
        span = lines[start : i + 1]
        if any(not x.strip() or x.lstrip().startswith(">") for x in span):
            continue
        joined = " ".join(x.strip() for x in span)
        if qm.LEAD.match(joined) and _evidence(joined, lines, i):
            return start
    start, joined = i, s
    prev = lines[i - 1].strip() if i > 0 else ""
    if len(s) < 40 and prev and not prev.startswith(">"):
        start, joined = i - 1, f"{prev} {s}"  # "...<addr>" / "wrote:" wrapped onto its own line
    low = joined.lower()
    if any(k in low for k in qm.KEYWORD_HINTS) and qm.KEYWORD.search(joined):
        if _evidence(joined, lines, i):
            return start
    if "@" in s and qm.ADDRESS_END.search(s) and any(c.isdigit() for c in s):
        if _quote_follows(lines, i):
            return i
    return None


def _evidence(attribution: str, lines: list[str], end: int) -> bool:
    """A real attribution names a date or an address, or a quote follows it.

    Guards "as my colleague wrote:" followed by a list in the new text.
    """
    if "@" in attribution or any(c.isdigit() for c in attribution):
        return True
    return _quote_follows(lines, end)


def _quote_follows(lines: list[str], end: int) -> bool:
    nxt = _next_text(lines, end)
    return nxt < len(lines) and lines[nxt].lstrip().startswith(">")


def _next_text(lines: list[str], i: int) -> int:
    """Index of the first non-blank line after ``i`` (len(lines) if none)."""
    j = i + 1
    while j < len(lines) and not lines[j].strip():
        j += 1
    return j


def _header_block(lines: list[str], i: int) -> bool:
    """Lines from ``i`` on are a From:/Sent:/To:/Subject: block (in any order, any language).

    Every client writes the sender, the date and the recipient or subject;
    "From: the print spooler" or "From: old@ To: new@" in a message is text.
    """
    kinds: set[str] = set()
    for line in lines[i : i + 7]:
        m = qm.HEADER_KEY.match(line)
        if not m:
            break
        kinds.add(next(k for k, v in m.groupdict().items() if v is not None))
    return {"from", "sent"} <= kinds and bool(kinds & {"to", "subject"})
