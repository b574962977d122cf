"""The charset of 8-bit text that names none, or names the wrong one, guessed as mail clients do.

Used for raw 8-bit header bytes (``legacy_headers``) and for body parts whose
label is missing or does not decode. UTF-8 first (RFC 6532, and what most
mislabelled mail really is); then what charset-normalizer recognises among the
multi-byte charsets, which it tells apart reliably; else windows-1252, what
clients assume (as WHATWG does). On a few bytes of Latin text it guesses
wildly (cp857 for German), so no single-byte guess of it is taken.
"""

from __future__ import annotations

import re

from parsers.mime import codec_name, superset

__all__ = ["detect_codec"]

_DETECTABLE = {"gb18030", "gbk", "gb2312", "big5", "big5hkscs", "cp932", "shift_jis", "euc_jp",
               "euc_kr", "cp949", "cp950", "johab", "utf_8"}  # fmt: skip
_KOREAN = {"euc_kr", "cp949", "johab"}
# Korean mail is Hangul; Chinese bytes read as cp949 come out as Hangul mixed with Hanja.
_HANJA = re.compile(r"[\u4e00-\u9fff]")
_SAMPLE = 64 * 1024  # detection reads this much; the whole text is decoded with its result


def detect_codec(raw: bytes) -> str:
    """A Python codec name for ``raw``: ``utf_8``, a detected multi-byte one, or ``cp1252``."""
    try:
        raw.decode("utf-8")
        return "utf_8"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    try:
        matches = list(from_bytes(raw[:_SAMPLE]))
    except Exception:  # the detector's own bug must not stop parsing
        matches = []
    for match in matches:
        codec = codec_name(match.encoding)
        if codec not in _DETECTABLE:
            continue
        codec = superset(codec)
        if codec in _KOREAN and _HANJA.search(str(match)):
            continue
        return codec
    return "cp1252"
