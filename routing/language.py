"""Which language a message is written in, and so which language we answer it in.

One notion for every part that asks: a routing rule's ``language`` condition, and the
language of every mail to a client (outbound/templates.py). The message's own
``Content-Language`` header wins when it names a language; otherwise py3langid
classifies the text (a naive Bayes model shipped inside the package: no download, no
randomness, the same answer for the same text every time).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from parsers.types import ParsedMessage

__all__ = ["MIN_TEXT", "answer_language", "detect"]

MIN_TEXT = 12  # characters: below this a guess is noise ("Hi", "Danke!")
_SAMPLE = 2000  # characters looked at: enough for a sure answer, cheap on a long mail
_CODE = re.compile(r"[a-z]{2,3}")


def detect(parsed: ParsedMessage) -> str:
    """The ISO 639 code of the message's language, or "" when it cannot be told.

    Only the client's own words count (the reply text, without a quoted thread), so a
    German reply under an English quote is German.
    """
    for name, value in parsed.headers:
        if name != "content-language":
            continue
        code = value.split(",")[0].strip().split("-")[0].lower()
        if _CODE.fullmatch(code):
            return code
    text = (parsed.reply_text or parsed.text)[:_SAMPLE]
    if len(text.strip()) < MIN_TEXT:
        return ""
    from py3langid.langid import classify  # lazy: loads a model on first use

    lang, _score = classify(text)
    return str(lang)


def answer_language(parsed: ParsedMessage, offered: Sequence[str]) -> str:
    """The language to answer in: the message's, if the tenant offers it, else the
    tenant's first (``[[tenants]] languages``)."""
    lang = detect(parsed)
    return lang if lang in offered else offered[0]
