"""Header values sent as raw bytes in a legacy charset, read as their writer's client shows them.

RFC 5322 headers are ASCII and RFC 6532 allows UTF-8; older clients (and some
current ones in China and Japan) still write the bytes of their locale's
charset, or raw ISO-2022-JP escape sequences, without encoded words.
"""

from __future__ import annotations

import re
from email.message import Message

from parsers.detect import detect_codec
from parsers.mime import codec_name, iso2022jp_ms, mostly_utf8, superset

__all__ = ["decode_raw_headers"]

_ESCAPED = re.compile("[\udc80-\udcff]")  # an 8-bit byte compat32 kept as a surrogate


def decode_raw_headers(msg: Message, defects: list[str]) -> None:
    """Turn the message's raw 8-bit (or raw ISO-2022-JP) header values into text, in place.

    Done once per message with all such bytes together, as mail clients do: UTF-8
    when they are UTF-8 (RFC 6532); else the charset the body parts declare (a
    client writes its headers in its own locale); else ``detect_codec``: what
    charset-normalizer recognises among the multi-byte charsets, else windows-1252.
    """
    items = list(msg.raw_items())
    raw = [v.encode("ascii", "surrogateescape") for _, v in items if _needs_decoding(v)]
    if not raw:
        return
    codec = _header_codec(b"\n".join(raw), msg)
    for name in dict.fromkeys(k for k, _ in items):
        del msg[name]
    for name, value in items:
        if _needs_decoding(value):
            data = value.encode("ascii", "surrogateescape")
            if b"\x1b" in data:
                value = _iso2022jp(data)
            else:  # UTF-8 bytes that do not all decode keep the ones that do
                value = data.decode(codec, "gateway-cp1252" if codec == "utf_8" else "replace")
        msg.set_raw(name, value)
    if codec != "utf_8":
        defects.append("header-8bit-not-utf8")


def _iso2022jp(data: bytes) -> str:
    try:
        return data.decode("iso2022_jp")
    except UnicodeDecodeError:
        return iso2022jp_ms(data) or data.decode("iso2022_jp", "replace")


def _needs_decoding(value: object) -> bool:
    if not isinstance(value, str):
        return False
    if "\x1b$" in value or "\x1b(" in value:
        return True
    # isascii is a C loop, and an ASCII value holds no surrogate: most headers stop here.
    return not value.isascii() and _ESCAPED.search(value) is not None


def _header_codec(raw: bytes, msg: Message) -> str:
    if b"\x1b" not in raw:
        try:
            raw.decode("utf-8")
            return "utf_8"
        except UnicodeDecodeError:
            if mostly_utf8(raw):  # a character cut at the end of a field: UTF-8 still
                return "utf_8"
    single: str | None = None
    for part in msg.walk():
        label = part.get_param("charset")
        codec = codec_name(label if isinstance(label, str) else None)
        if codec and codec not in ("ascii", "utf_8"):
            codec = superset(codec)
            if _SINGLE_BYTE.match(codec):
                single = single or codec
                continue
            try:
                raw.decode(codec)
                return codec
            except (UnicodeDecodeError, LookupError):
                continue
    detected = detect_codec(raw)
    if single is None or detected not in _SINGLE_BYTE_GUESSES:
        return detected
    return single


# A single-byte label decodes any bytes, so it is no evidence against the multi-byte
# charset detection finds: a filter's report part in iso-8859-1 around a Chinese mail
# whose raw GBK subject read as Latin-1 was "×ª·¢£º". Only detection's own single-byte
# fallbacks give way to such a label.
_SINGLE_BYTE = re.compile(r"^(?:latin_1|iso8859_\d+|cp125\d|cp874|koi8_[a-z]+|mac_[a-z]+)$")
_SINGLE_BYTE_GUESSES = {"cp1252", "cp1251", "koi8_r"}
