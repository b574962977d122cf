"""Cut quoted history and signatures off a reply, leaving what was written this time.

A matching problem: the first attribution line or
separator that a mail client writes above the quoted mail ends the new text.
The patterns follow FreeScout's and discourse/email_reply_trimmer's lists for
the clients people actually use (Gmail, Outlook desktop and web, Apple Mail,
Thunderbird, Yahoo) in the languages our tenants write in. Forwarded mail is
kept: "Begin forwarded message" is not a reply.
"""

from __future__ import annotations

import re

__all__ = ["reply_text"]

_I = re.IGNORECASE
# "On <date>, <name> wrote:" and its translations; may be wrapped over up to 3 lines.
_LEAD = (
    r"^(?:"
    r"On\b.{0,300}\bwrote"  # en (Gmail, Apple, Thunderbird)
    r"|Am\b.{0,300}\bschrieb\b.{0,200}"  # de
    r"|Le\b.{0,300}\ba\s+écrit\s*"  # fr
    r"|El\b.{0,300}\bescribió"  # es
    r"|Op\b.{0,300}\bschreef\b.{0,200}"  # nl
    r"|Il\b.{0,300}\bha\s+scritto"  # it
    r"|(?:Em|No\s+dia)\b.{0,300}\bescreveu"  # pt
    r"|(?:Den|På)\b.{0,300}\bskrev\b.{0,200}"  # sv, da, no
    r"|W\s+dniu\b.{0,300}\bnapisał\w*"  # pl
    r")\s*:"
)
_ATTRIBUTION = re.compile(_LEAD + r"\s*$", _I | re.DOTALL)
# The same attribution with the quote run into its line, as HTML paragraphs collapse it.
_ATTRIBUTION_INLINE = re.compile(_LEAD + r"\s*>", _I | re.DOTALL)
# Single-line forms without a fixed lead word: "Name <x@y> wrote:", ru, ja.
_ATTRIBUTION_LOOSE = re.compile(
    r"^.{0,300}(?:\bwrote|\bпишет|\bнаписал\w*)\s*:\s*$|^.{0,200}のメッセージ\s*:?\s*$", _I
)
# Separators that stand alone on a line.
_SEPARATOR = re.compile(
    r"^\s*(?:"
    r"-{2,}\s*(?:Original\s+Message|Ursprüngliche\s+Nachricht|Message\s+d'origine"
    r"|Mensaje\s+original|Oorspronkelijk\s+bericht|Messaggio\s+originale"
    r"|Mensagem\s+original|Ursprungligt\s+meddelande|Original\s+meddelelse)\s*-{2,}"
    r"|_{20,}"  # Outlook's rule above the From:/Sent: block
    r"|-{3,}\s*Reply\s+above\s+this\s+line\s*-{3,}"
    r"|#+\s*Please\s+(?:type\s+your\s+)?reply\s+above\s+this\s+line\s*#+"
    r")\s*$",
    _I,
)
_FROM = re.compile(r"^\s*\*?(?:From|Von|De|Van|Da|Från|Fra|Od|От)\s*:", _I)
_SENT = re.compile(
    r"^\s*\*?(?:Sent|Gesendet|Envoyé|Enviado|Verzonden|Inviato|Skickat|Sendt|Wysłano"
    r"|Отправлено|Date|Datum|Fecha|Data)\s*:",
    _I,
)
_FORWARD = re.compile(
    r"(?:-{3,}\s*(?:Forwarded\s+message|Weitergeleitete\s+Nachricht|Message\s+transféré)"
    r"|Begin\s+forwarded\s+message\s*:|Anfang\s+der\s+weitergeleiteten)",
    _I,
)
_KEYWORD = re.compile(
    r"(?:wrote|schrieb|écrit|escribió|schreef|scritto|escreveu|skrev|napisał|пишет|написал"
    r"|のメッセージ)\w*.{0,200}:?\s*$",
    _I,
)
_SIGNATURE = re.compile(r"^-- ?$")
_MOBILE = re.compile(
    r"^\s*(?:Sent\s+from\s+my\s+\w+|Von\s+meinem\s+\w+\s+gesendet|Envoyé\s+de\s+mon\s+\w+"
    r"|Get\s+Outlook\s+for\s+\w+|Enviado\s+desde\s+mi\s+\w+)\b.{0,40}$",
    _I,
)


def reply_text(text: str) -> str:
    """``text`` without quoted history and signature; the whole text if nothing is left."""
    lines = text.split("\n")
    cut = _history_start(lines)
    kept = lines[:cut]
    if ">" in "\n".join(kept):  # one C-level scan instead of a strip per line
        kept = [ln for ln in kept if not ln.lstrip().startswith(">")]
    for i, ln in enumerate(kept):
        if _SIGNATURE.match(ln) and any(x.strip() for x in kept[:i]):
            kept = kept[:i]
            break
    while kept and not kept[-1].strip():
        kept.pop()
    if kept and _MOBILE.match(kept[-1]):
        kept.pop()
    result = "\n".join(ln.rstrip() for ln in kept).strip()
    return result if result else text.strip()


def _history_start(lines: list[str]) -> int:
    """Index of the first line of quoted history, or len(lines).

    Each regex runs only on lines that contain what it needs (a keyword, a
    ">" or a leading "-_#"): unanchored searches over every line of a long
    mail were most of the parser's time.
    """
    forwarded = False
    n = len(lines)
    # The same tests on the whole text first: a mail without any of these marks (most
    # new tickets) skips the walk, and each test below runs only when it can match.
    whole = "\n".join(lines)
    low_all = whole.lower()
    fwd = any(k in low_all for k in _FORWARD_HINTS)
    kw = any(k in low_all for k in _KEYWORD_HINTS)
    gt, colon = ">" in whole, ":" in whole
    sep = "-" in whole or "_" in whole or "#" in whole
    if not (fwd or kw or gt or colon or sep):
        return n
    for i, line in enumerate(lines):
        s = line.strip()
        if not s:
            continue
        low = s.lower() if fwd or kw else ""
        if fwd and any(k in low for k in _FORWARD_HINTS) and _FORWARD.search(s):
            forwarded = True  # everything below is forwarded content, keep it
            continue
        if forwarded:
            continue
        if sep and s[0] in "-_#" and _SEPARATOR.match(s) and i > 0:
            return i
        if kw and len(s) < 600 and any(k in low for k in _KEYWORD_HINTS) and _KEYWORD.search(s):
            start = _attribution_start(lines, i)
            if start is not None:
                return start
        if gt and ">" in s and _ATTRIBUTION_INLINE.match(s):
            return i
        if colon and ":" in s[:16] and _FROM.match(s) and _outlook_block(lines, i):
            return i
    return n


# Lower-case words without which _FORWARD / _KEYWORD cannot match.
_FORWARD_HINTS = ("forward", "weitergeleitet", "transféré")
_KEYWORD_HINTS = (
    "wrote",
    "schrieb",
    "écrit",
    "escribió",
    "schreef",
    "scritto",
    "escreveu",
    "skrev",
    "napisał",
    "пишет",
    "написал",
    "のメッセージ",
)


def _attribution_start(lines: list[str], i: int) -> int | None:
    """First line of an attribution ending on line ``i`` (wrapped over up to 3 lines)."""
    for start in range(max(0, i - 2), i + 1):
        span = lines[start : i + 1]
        if any(not x.strip() or x.lstrip().startswith(">") for x in span):
            continue
        joined = " ".join(x.strip() for x in span)
        if _ATTRIBUTION.match(joined) and _attribution_plausible(lines, start, i):
            return start
    if _ATTRIBUTION_LOOSE.match(lines[i].strip()) and _attribution_plausible(lines, i, i):
        return i
    return None


def _attribution_plausible(lines: list[str], start: int, end: int) -> bool:
    """An attribution is followed by quoted text, or is the last prose in the mail.

    Guards against cutting a sentence like "On Monday I wrote: ..." in the
    middle of a new message.
    """
    rest = [x for x in lines[end + 1 : end + 4] if x.strip()]
    return not rest or rest[0].lstrip().startswith(">") or len(lines[end].strip()) < 200


def _outlook_block(lines: list[str], i: int) -> bool:
    """From: followed within four lines by Sent:/Date: -- Outlook's reply header."""
    following = [x for x in lines[i + 1 : i + 6] if x.strip()][:4]
    return any(_SENT.match(x) for x in following)
