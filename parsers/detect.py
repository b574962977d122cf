"""The charset of 8-bit text that names none, or names the wrong one, guessed as mail clients do.

Used for raw 8-bit header bytes (``legacy_headers``) and for body parts whose
label is missing or does not decode. UTF-8 first (RFC 6532, and what most
mislabelled mail really is); then what charset-normalizer recognises among the
multi-byte charsets, which it tells apart reliably; else cp1251 or KOI8-R for
text that is Cyrillic by its shape; else windows-1252, what clients assume (as
WHATWG does). On a few bytes of Latin text charset-normalizer guesses wildly
(cp857 for German), so no single-byte guess of it is taken, nor a multi-byte one
that reads a few Latin letters as a couple of Han characters.
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
# Japanese mail has kana or kanji; single-byte text read as cp932 is half-width katakana only.
_FULL_WIDTH = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff\u3000-\u303f\uff01-\uff5e]")
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
        if codec == "cp932" and not _FULL_WIDTH.search(str(match)):
            continue  # only half-width katakana: 8-bit single-byte text, not Japanese
        if not _mostly_wide(str(match)):
            continue
        return codec
    return _cyrillic(raw) or "cp1252"


_WIDE = re.compile(r"[^\x00-\u024f\s]")


def _mostly_wide(text: str) -> bool:
    """Whether a multi-byte reading is CJK text and not a few Latin letters paired up.

    Four 8-bit letters in an English line ("äöüß ad asd") read as two Han characters
    in Big5, and charset-normalizer takes that on so few bytes; CJK text has more of
    its own characters than that (a file name: "新建 文本文档.txt" in a header full of
    ASCII), or is made of little else ("谢谢")."""
    wide = len(_WIDE.findall(text))
    return wide >= 4 or wide * 4 >= len(text) - sum(map(str.isspace, text))


_HIGH = re.compile(rb"[\xc0-\xff]")
_LOWER_1251 = re.compile(rb"[\xe0-\xff]")  # cp1251's lower case; KOI8-R's upper case
_ASCII_LETTERS = re.compile(rb"[A-Za-z]")


def _cyrillic(raw: bytes) -> str | None:
    """cp1251 or KOI8-R for text whose words are all 8-bit letters (Russian, Ukrainian,
    Bulgarian), which no detector tells apart on a few words: lower case is most of any
    text, and it lies in 0xE0-0xFF in cp1251 and in 0xC0-0xDF in KOI8-R. Western text
    in windows-1252 has a few 8-bit letters among many ASCII ones, and stays."""
    high = len(_HIGH.findall(raw))
    if high < 4 or high < 2 * len(_ASCII_LETTERS.findall(raw)):
        return None
    lower = len(_LOWER_1251.findall(raw))
    return "cp1251" if lower * 2 >= high else "koi8_r"
