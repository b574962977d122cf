"""Which language a message is written in, and so which language we answer it in.

One notion for every part that asks: a routing rule's ``language`` condition, and the
language of every mail to a client (outbound/templates.py). The message's own
``Content-Language`` header wins when it names a language; otherwise the text is
classified, by two classifiers shipped inside their packages (no download, no
randomness, the same answer for the same text every time):

- CLD2 (pycld2: compiled-in tables) first, taken when it says its answer is reliable;
- py3langid (a naive Bayes model) for the text CLD2 cannot judge: a line or two.

Why both: py3langid alone took English mail with a few foreign words in it ("naïve
résumé", "Preis: 12 €") for French, German or a creole (about 390 of figure 1's 1,522
messages), so those clients were answered in another language; CLD2 is sure they are
English. CLD2 is sure of nothing in a short reply ("Hallo, die Seriennummer lautet
XK-4471-B."), which py3langid tells right. On the 112 golden replies the pair is right
as often as py3langid alone, and a call costs about a quarter of its CPU
(bench/results/notes/lang31.md).

py3langid's model costs about 2 s, 0.5 s of CPU and 100 MiB (numpy and its tables) to
load (CLD2's tables are compiled into its library: nothing to load), so
a process loads it only when its config may need it (``wanted``: tenants that offer
several languages or test ``language``), never for one whose tenants offer one. With
parse workers, each worker loads it at its start and tells the language with the parse
(``told``), off the daemon's busy core and outside the writer's transaction; the daemon
loads it too, in a thread, once small mail comes alone (gateway/intake/pipeline.py:
it parses that mail itself, and the writer classifies). Without workers, the daemon
loads it in a thread at start (``warm``) and the writer classifies. A message
that needs it before the load ends waits on the same load (one lock): never two.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import pycld2

from parsers.types import ParsedMessage

if TYPE_CHECKING:
    from routing.config import Tenant

__all__ = [
    "MIN_TEXT",
    "answer_language",
    "detect",
    "loaded",
    "may_detect",
    "told",
    "wanted",
    "warm",
]

MIN_TEXT = 12  # characters: below this a guess is noise ("Hi", "Danke!")
# Characters looked at: plenty for a sure answer. Measured on 2 shared cores: 0.27 ms
# for 600 characters, 0.72 ms for 2,000 (in a parse worker, or the writer's transaction).
_SAMPLE = 800
_CODE = re.compile(r"[a-z]{2,3}")


def detect(parsed: ParsedMessage) -> str:
    """The ISO 639 code of the message's language, or "" when it cannot be told.

    Only the client's own words count (the reply text, without a quoted thread), so a
    German reply under an English quote is German. A parse worker may have told it
    already (``told``): then it is not classified again.
    """
    if parsed.language is not None:
        return parsed.language
    code = _declared(parsed)
    if code is not None:
        return code
    text = _sample(parsed)
    if len(text.strip()) < MIN_TEXT:
        return ""
    sure = _cld2(text)
    if sure is not None:
        return sure
    lang, _score = _classifier()(text)
    return str(lang)


def may_detect(parsed: ParsedMessage, tenants: Iterable[Tenant]) -> bool:
    """Whether committing ``parsed`` for ``tenants`` may run the classifier: it declares
    no language, has text enough, and a tenant offers several languages (the client's
    language is remembered) or a rule tests ``language``."""
    if parsed.language is not None or _declared(parsed) is not None:
        return False
    return len(_sample(parsed).strip()) >= MIN_TEXT and wanted(tenants)


def wanted(tenants: Iterable[Tenant]) -> bool:
    """Whether mail for ``tenants`` may need its language told: one offers several
    languages or a rule of one tests ``language`` (``Tenant.tells_language``, worked
    out when the config is loaded). False: the model is never loaded."""
    return any(t.tells_language for t in tenants)


def told(parsed: ParsedMessage) -> ParsedMessage:
    """``parsed`` carrying its language (``detect``), for a stage that reads it later
    without the model: what a parse worker sends back when asked."""
    return dataclasses.replace(parsed, language=detect(parsed))


def loaded() -> bool:
    """Whether the model is in memory (asking does not load it, nor numpy)."""
    return _CLASSIFY is not None


def answer_language(parsed: ParsedMessage, offered: Sequence[str]) -> str:
    """The language to answer in: the message's, if the tenant offers it, else the
    tenant's first (``[[tenants]] languages``)."""
    lang = detect(parsed)
    return lang if lang in offered else offered[0]


def warm() -> None:
    """Load the model now (about 2 s and 100 MiB, once per process), so the message
    that needs it first does not load it inside the writer's transaction; called in a
    thread, at start or by the first message that needs it (gateway/intake/pipeline.py,
    gateway/intake/parse_worker.py)."""
    _classifier()


_CLASSIFY: Callable[[str], tuple[str, float]] | None = None
_LOADING = threading.Lock()  # the warming thread and the writer (or a worker) may both ask


def _classifier() -> Callable[[str], tuple[str, float]]:
    global _CLASSIFY
    if _CLASSIFY is None:
        with _LOADING:
            if _CLASSIFY is None:
                from py3langid.langid import classify

                classify("warm")
                _CLASSIFY = classify
    return _CLASSIFY


# CLD2's codes that are not ISO 639 (the retired ones it keeps), and those that name no
# language (a script alone, "xx-Latn"; "un" unknown; "zz*" its internal ones).
_CLD2_ISO = {"iw": "he", "jw": "jv", "in": "id"}
_CLD2_NONE = ("un", "xx", "xxx")


def _cld2(text: str) -> str | None:
    """CLD2's language for ``text`` when it says it is sure, else None (then py3langid)."""
    try:
        # Plain text: by default CLD2 skips what looks like markup ("<12345>").
        reliable, _bytes, details = pycld2.detect(text, isPlainText=True)
    except (pycld2.error, ValueError):  # what it cannot read (a lone surrogate, bytes
        return None  # CLD2 calls invalid UTF-8): the other one can
    if not reliable or not details:
        return None
    code = _primary(details[0][1])
    if code is None or code in _CLD2_NONE or code.startswith("zz"):
        return None
    return _CLD2_ISO.get(code, code)


def _declared(parsed: ParsedMessage) -> str | None:
    """The message's own ``Content-Language``, when it names a language."""
    for name, value in parsed.headers:
        if name != "content-language":
            continue
        code = _primary(value.split(",")[0])
        if code is not None:
            return code
    return None


def _primary(tag: str) -> str | None:
    """A language tag's primary subtag, lower-cased ("de-CH" -> "de"), if it is a code."""
    code = tag.strip().split("-")[0].lower()
    return code if _CODE.fullmatch(code) else None


def _sample(parsed: ParsedMessage) -> str:
    return (parsed.reply_text or parsed.text)[:_SAMPLE]
