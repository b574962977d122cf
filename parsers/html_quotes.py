"""The quoted mail below an HTML reply, found by the markers mail clients write.

The text reply stripper (parsers/quotes.py) works on lines; HTML has better
marks, and they must be read before sanitising, which drops the class, id, style
and type attributes that carry them:

- Gmail: ``<div class="gmail_quote">`` (the "On ... wrote:" line is inside it);
- Thunderbird: ``<div class="moz-cite-prefix">`` (the attribution), then
  ``<blockquote type="cite">``;
- Apple Mail: ``<blockquote type="cite">``;
- Outlook on the web: ``<div id="divRplyFwdMsg">``, after an ``<hr>`` and an
  ``<div id="appendonsend">``;
- Outlook for Windows: the header block ``<div style="border:none;border-top:solid
  #E1E1E1 1.0pt; ...">`` (From:/Sent:/To:).

Everything from the first marker on is the quote (a top-posted reply); what
is left is cut off mid-tree, and the sanitiser (nh3) closes what it leaves open.
fixtures/html-replies/ has one reply per client; tests/test_parsers.py reads them.
"""

from __future__ import annotations

import re

__all__ = ["drop_leading_lines", "strip_html_quote"]

_ATTR = r"""[^>]*?\b{name}\s*=\s*["']?[^"'>]*?{value}"""
_MARKERS = re.compile(
    "|".join(
        [
            r"<div" + _ATTR.format(name="class", value=r"\bgmail_quote\b"),
            r"<div" + _ATTR.format(name="class", value=r"\bmoz-cite-prefix\b"),
            r"<blockquote" + _ATTR.format(name="type", value=r"\bcite\b"),
            r"<div" + _ATTR.format(name="id", value=r"\b(?:divRplyFwdMsg|appendonsend)\b"),
            r"<div[^>]*?\bstyle\s*=\s*[\"'][^\"']*?border\s*:\s*none\s*;\s*"
            r"border-top\s*:\s*solid",
        ]
    ),
    re.IGNORECASE,
)
# Outlook on the web puts a rule right before its quote block: it goes with it.
_RULE_BEFORE = re.compile(r"<hr\b[^>]*>\s*(?:<[^>]*>\s*)*$", re.IGNORECASE)


def strip_html_quote(markup: str) -> str:
    """``markup`` up to the first quote marker (unsanitised: sanitise after)."""
    m = _MARKERS.search(markup)
    if m is None:
        return markup
    head = markup[: m.start()]
    tail = head[-500:]
    rule = _RULE_BEFORE.search(tail)
    if rule is not None:
        head = head[: len(head) - len(tail) + rule.start()]
    return head


_SKIPPABLE = r"(?:\s|&nbsp;|&#160;|<(?!/?(?:img|hr)\b)[^>]*>)*"


def drop_leading_lines(markup: str, lines: list[str]) -> str | None:
    """``markup`` without the given first lines of its text (an agent's ``#commands``),
    or None when they are not found there in order: then the HTML is not to be sent,
    since a command must never reach a client."""
    for line in lines:
        words = [re.escape(w) for w in line.split()]
        if not words:
            continue
        spaced = r"(?:\s|&nbsp;|&#160;)+".join(w.replace("&", "&amp;") for w in words)
        m = re.match(f"({_SKIPPABLE})(?:{spaced})", markup, re.IGNORECASE)
        if m is None:
            return None
        markup = m.group(1) + markup[m.end() :]
    return markup
