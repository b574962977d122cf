"""Header values sent as raw bytes in a legacy charset, read as their writer's client shows them.

RFC 5322 headers are ASCII and RFC 6532 allows UTF-8; older clients (and some
current ones in China and Japan) still write the bytes of their locale's
charset, or raw ISO-2022-JP escape sequences, without encoded words.
"""

from __future__ import annotations

from email.message import Message

from parsers.mime import codec_name, superset

__all__ = ["decode_raw_headers"]

# What charset-normalizer may name for header bytes: the multi-byte charsets it tells
# apart reliably. On a few bytes of Latin text it guesses wildly (cp857 for German), so a
# single-byte guess is not taken; windows-1252 is then what clients assume (as WHATWG does).
_DETECTABLE = {"gb18030", "gbk", "gb2312", "big5", "big5hkscs", "cp932", "shift_jis", "euc_jp",
               "euc_kr", "cp949", "cp950", "johab", "utf_8"}  # fmt: skip


def decode_raw_headers(msg: Message, defects: list[str]) -> None:
    """Turn the message's raw 8-bit (or raw ISO-2022-JP) header values into text, in place.

    Done once per message with all such bytes together, as mail clients do: UTF-8
    when they are UTF-8 (RFC 6532); else the charset the body parts declare (a
    client writes its headers in its own locale); else what charset-normalizer
    recognises among the multi-byte charsets; else windows-1252.
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
            value = (
                data.decode("iso2022_jp", "replace")
                if b"\x1b" in data
                else data.decode(codec, "replace")
            )
        msg.set_raw(name, value)
    if codec != "utf_8":
        defects.append("header-8bit-not-utf8")


def _needs_decoding(value: object) -> bool:
    if not isinstance(value, str):
        return False
    return "\x1b$" in value or "\x1b(" in value or any("\udc80" <= c <= "\udcff" for c in value)


def _header_codec(raw: bytes, msg: Message) -> str:
    if b"\x1b" not in raw:
        try:
            raw.decode("utf-8")
            return "utf_8"
        except UnicodeDecodeError:
            pass
    for part in msg.walk():
        label = part.get_param("charset")
        codec = codec_name(label if isinstance(label, str) else None)
        if codec and codec not in ("ascii", "utf_8"):
            codec = superset(codec)
            try:
                raw.decode(codec)
                return codec
            except (UnicodeDecodeError, LookupError):
                continue
    from charset_normalizer import from_bytes

    best = from_bytes(raw).best()
    guess = codec_name(best.encoding) if best is not None else None
    if guess in _DETECTABLE:
        return superset(guess)
    return "cp1252"
