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

__all__ = ["MIN_TEXT", "answer_language", "detect", "warm"]

MIN_TEXT = 12  # characters: below this a guess is noise ("Hi", "Danke!")
# Characters looked at: plenty for a sure answer. Measured on 2 shared cores: 0.27 ms
# for 600 characters, 0.72 ms for 2,000; it runs in the writer's transaction.
_SAMPLE = 800
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


def warm() -> None:
    """Load the model now (about 2 s and 100 MiB, once per process), so the first
    client mail does not pay for it inside the writer's transaction; the daemon calls
    this in a worker thread at start."""
    from py3langid.langid import classify

    classify("warm")
