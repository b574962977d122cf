"""MIME plumbing: the tree parse, charsets, header words -- and the one flanker import.

The tree comes from the stdlib ``compat32`` feed parser, not from
``flanker.mime.from_string``: on the corpus mix compat32 with decoded bodies
runs ~4x faster than flanker (and ~7x faster than ``policy.default``), keeps
the transfer-decoded bytes exact (CRLF in text attachments survives), and
hands 8-bit header bytes back losslessly as surrogate escapes. Flanker's
address parser is what we use from flanker: unlike this Python's
``getaddresses`` (3.11.7, without the CVE-2023-27043 fix) it refuses
``a@b.com<c@d.com>`` instead of picking the wrong addr-spec.

Encoded words are decoded here by hand because ``email.header`` round-trips
text through ``raw-unicode-escape``, which corrupts backslashes
(``C:\\Users\\...``) in real subjects.
"""

from __future__ import annotations

import base64
import codecs
import email.feedparser
import logging
import re
import sys
from email._encoded_words import decode_b
from email._policybase import Compat32
from email.errors import InvalidBase64LengthDefect
from email.feedparser import FeedParser
from email.message import Message
from email.parser import BytesHeaderParser

# ply builds flanker's address grammar at import and reports "Symbol ... is
# unreachable" and lexer "syntax error" through these loggers; they are noise
# for us, so they stop at ERROR before the import runs.
for _name in ("flanker.addresslib._parser.parser", "flanker.addresslib._parser.lexer"):
    logging.getLogger(_name).setLevel(logging.ERROR)
    logging.getLogger(_name).addHandler(logging.NullHandler())

from flanker.addresslib import address as flanker_address  # noqa: E402

# Two costs of email.feedparser that grow with real mail, taken away without changing
# what it parses (tests/test_feedparser_shims.py compares it with the stock parser):
# - before 3.13 it compiles a regex for each multipart it meets, from the part's own
#   boundary: ~110 µs a multipart on 2 shared cores (a third of a small HTML mail's
#   parse), and a churn of the ``re`` cache. 3.13 matches the boundary with
#   ``str.startswith`` and one shared regex for what may follow it (CPython
#   gh-106628); _FeedparserRe gives older feedparsers the same match;
# - it searches each part's whole payload for the line end at its end (_LineEndAtEnd).
_BOUNDARY_HEAD = "(?P<sep>"
_BOUNDARY_TAIL = r")(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$"
_BOUNDARY_END = re.compile(_BOUNDARY_TAIL[1:])
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)


class _Boundary:
    """A multipart's boundary line, as gh-106628 matches it: the separator, then the
    shared tail (the groups feedparser reads, ``end`` and ``linesep``, are the tail's)."""

    __slots__ = ("separator",)

    def __init__(self, separator: str) -> None:
        self.separator = separator

    def match(self, line: str) -> re.Match[str] | None:
        if not line.startswith(self.separator):
            return None
        return _BOUNDARY_END.match(line, len(self.separator))


class _FeedparserRe:
    """``re`` as email.feedparser sees it: a boundary's pattern becomes a _Boundary
    (only when its escaped separator reads back exactly); anything else is ``re``'s."""

    def __getattr__(self, name: str) -> object:
        return getattr(re, name)

    @staticmethod
    def compile(pattern: str, flags: int = 0) -> re.Pattern[str] | _Boundary:
        if (
            not flags
            and isinstance(pattern, str)
            and pattern.startswith(_BOUNDARY_HEAD)
            and pattern.endswith(_BOUNDARY_TAIL)
        ):
            escaped = pattern[len(_BOUNDARY_HEAD) : -len(_BOUNDARY_TAIL)]
            separator = _ESCAPED.sub(r"\1", escaped)
            if re.escape(separator) == escaped:
                return _Boundary(separator)
        return re.compile(pattern, flags)


class _LineEndAtEnd:
    """email.feedparser's ``NLCRE_eol``, ``(\\r\\n|\\r|\\n)\\Z``, whose ``search`` the parser
    runs over each part's whole payload to trim its last line end: the regex tries every
    line end in it (74 ms for a 10 MB base64 part, 0.16 ms for 20 KB of HTML). A match
    can only start one or two characters before the end, so only those are tried: the
    same match, found in constant time."""

    def __init__(self, eol: re.Pattern[str]) -> None:
        self._eol = eol

    def search(self, text: str) -> re.Match[str] | None:
        end = len(text)
        return self._eol.match(text, max(end - 2, 0)) or self._eol.match(text, max(end - 1, 0))


if sys.version_info < (3, 13):
    email.feedparser.re = _FeedparserRe()  # type: ignore[assignment]
_EOL = getattr(email.feedparser, "NLCRE_eol", None)
if isinstance(_EOL, re.Pattern) and _EOL.pattern == r"(\r\n|\r|\n)\Z" and not _EOL.flags & re.M:
    email.feedparser.NLCRE_eol = _LineEndAtEnd(_EOL)

__all__ = [
    "decode_bytes",
    "decode_words",
    "decoded_payload",
    "flanker_address",
    "head_of",
    "header_text",
    "iso2022jp_ms",
    "mostly_utf8",
    "parse_header_block",
    "parse_tree",
    "repaired_base64",
    "superset",
    "written_as_text",
]


class _RawHeaders(Compat32):
    """compat32 that returns header values as parsed, 8-bit bytes as surrogate escapes.

    Stock compat32 wraps such a value in an ``unknown-8bit`` Header whose str()
    is U+FFFD for every byte; ``header_text`` decodes the bytes as UTF-8
    (RFC 6532) or the sender's legacy charset instead.
    """

    def header_fetch_parse(self, name: str, value: str) -> str:
        return value


_POLICY = _RawHeaders()
_HEADER_PARSER = BytesHeaderParser(policy=_POLICY)
_FEED_CHUNK = 64 * 1024
_HEAD_END = re.compile(rb"\n\r?\n")  # the empty line after a header, CRLF or LF

# Codecs Python will "decode" with that are not a mail charset and would
# corrupt text (unicode_escape eats backslashes) or are not text at all.
_FORBIDDEN = {
    "unicode_escape",
    "raw_unicode_escape",
    "idna",
    "punycode",
    "undefined",
    "mbcs",
    "oem",
    "utf_7_imap",
}
# Where a label is routinely used for its superset, decode with the superset first
# and with the label's own codec only when that fails, as WHATWG decodes these labels
# (browsers and webmail do): latin-1's 0x80-0x9F are Windows' quotes, dashes and the
# euro sign, not C1 controls; GB2312's A1AA is the em dash "——" (gb2312: U+2015),
# Shift_JIS's 8160 the wave dash Windows writes (U+FF5E).
_SUPERSET = {
    "ascii": "utf-8",
    "latin_1": "cp1252",
    "iso8859_1": "cp1252",
    "shift_jis": "cp932",
    "euc_kr": "cp949",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "iso8859_8": "cp1255",
    "iso8859_9": "cp1254",
    "tis_620": "cp874",
}
_codec_cache: dict[str, str | None] = {}


def superset(codec: str) -> str:
    """The codec to decode ``codec``'s label with: its superset where one is in use."""
    return _SUPERSET.get(codec, codec)


def parse_tree(data: bytes) -> Message:
    """Parse raw bytes into a compat32 tree; the pre-scan has bounded its shape.

    What ``BytesParser.parsebytes`` does (ASCII with surrogate escapes, into the feed
    parser), a chunk at a time: it decodes the whole message into one str and copies
    that into a StringIO of 4 bytes a character, 7.7x a 10 MB message at the peak
    (tracemalloc) where this holds 3x. Each byte decodes alone, so any cut is exact."""
    feed = FeedParser(policy=_POLICY)
    view = memoryview(data)
    for start in range(0, len(view), _FEED_CHUNK):
        feed.feed(str(view[start : start + _FEED_CHUNK], "ascii", "surrogateescape"))
    return feed.close()


def decoded_payload(part: Message) -> bytes | None:
    """``part.get_payload(decode=True)``, with a base64 body decoded in fewer copies.

    compat32 splits the body into a list of lines (about 1.5x its size in objects)
    and joins them before decoding: 43 MiB at the peak for a 9.5 MB body. The same
    bytes go to the same ``decode_b`` here with the line ends dropped in one pass."""
    payload = getattr(part, "_payload", None)  # what get_payload(decode=True) decodes
    written = str(part.get("content-transfer-encoding", ""))
    cte = written.strip().lower()
    if cte != written.lower():  # "quoted-printable   ": compat32 compares it as written
        part.replace_header("Content-Transfer-Encoding", cte)
    if cte != "base64" or not isinstance(payload, str):
        return part.get_payload(decode=True)  # type: ignore[no-any-return]
    if payload.isascii():
        value, defects = decode_b(payload.encode("ascii").translate(None, b"\r\n"))
        for defect in defects:
            part.policy.handle_defect(part, defect)
    else:  # 8-bit bytes in base64 (text never encoded, or junk a relay let in)
        value = part.get_payload(decode=True)
        defects = list(part.defects)
    if defects:
        raw = payload.encode("ascii", "surrogateescape")
        if written_as_text(payload):
            return raw
        if any(isinstance(d, InvalidBase64LengthDefect) for d in defects):
            return repaired_base64(raw)
    return bytes(value)


_WORDS = re.compile(r"[A-Za-z][ \t]+[A-Za-z]")


def written_as_text(payload: str) -> bool:
    """Whether a body labelled base64 is text its mailer never encoded: most of its
    lines hold words and spaces, which no base64 line does. The stdlib decodes it into
    garbage, or, when that fails, hands it back with its line ends dropped and the
    words run together; it is read as written instead."""
    lines = [ln for ln in payload[:8192].splitlines() if ln.strip()]
    return bool(lines) and 4 * sum(1 for ln in lines if _WORDS.search(ln)) >= 3 * len(lines)


def repaired_base64(raw: bytes) -> bytes:
    """Base64 one character too long (a stray character, junk a relay let in), decoded
    as forgiving decoders (Thunderbird's, flanker's) decode it: the characters outside
    the alphabet dropped, the last one left over dropped. The stdlib gives up on it and
    hands back the base64 itself, which was shown as the text or stored as the file.
    An encoded word's base64 is read the same way (``_word_bytes``)."""
    cleaned = _NOT_B64.sub(b"", raw)
    cleaned = cleaned[: len(cleaned) - (len(cleaned) % 4 == 1)]
    return base64.b64decode(cleaned + b"=" * (-len(cleaned) % 4))


def head_of(data: bytes, limit: int = 65536) -> bytes:
    """A raw message's header: its bytes up to the first empty line, at most ``limit``.

    For whoever reads a few header fields with a header parser (``BytesHeaderParser``):
    given the whole message it reads the body through too, as one payload nobody asks
    for (an IMAP drain's envelope: 52-74 µs a corpus message, 39-43 with this)."""
    end = _HEAD_END.search(data, 0, limit)
    return data[: end.end() if end is not None else limit]


def parse_header_block(data: bytes) -> Message:
    """Headers only (a bounce's text/rfc822-headers part), read like ``parse_tree``."""
    return _HEADER_PARSER.parsebytes(data)


def codec_name(charset: str | None) -> str | None:
    """Python codec for a MIME charset label, or None when unknown or unsafe."""
    if not charset:
        return "ascii"
    key = charset.strip().strip("\"'").lower()
    try:
        return _codec_cache[key]
    except KeyError:
        pass
    name: str | None
    try:
        info = codecs.lookup(key)
        name = info.name.replace("-", "_")
        if not getattr(info, "_is_text_encoding", True) or name in _FORBIDDEN:
            name = None
    except (LookupError, ValueError, TypeError):
        # "x-mac-cyrillic", "x-gbk": an unregistered x- label for a charset Python
        # knows by its plain name
        name = codec_name(key[2:]) if key.startswith("x-") and len(key) > 2 else None
    if len(_codec_cache) < 512:
        _codec_cache[key] = name
    return name


def decode_bytes(raw: bytes, charset: str | None, defects: list[str]) -> str:
    """Decode body or header bytes; never raises, records what it had to guess.

    Bytes the label cannot decode (or no label at all on 8-bit text) are read in
    the charset ``parsers.detect`` finds, never as U+FFFD for every letter; a
    Latin-1 label on UTF-8 bytes is read as UTF-8, a common mailer bug in bodies and
    encoded words alike: non-ASCII UTF-8 almost never happens by chance in Latin-1
    text, so this reads them as their writer meant instead of as "GrÃ¼Ã\x9fe".
    """
    codec = codec_name(charset)
    if codec is None:
        defects.append(f"unknown-charset:{_label(charset)}")
        return _detected(raw)
    if codec == "ascii" and b"\x1b$" in raw:  # ISO-2022-JP sent without its label
        text = iso2022jp_ms(raw)
        if text is not None:
            defects.append(f"charset-mismatch:{_label(charset)}")
            return text
    if codec in _LATIN and not raw.isascii():
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            defects.append(f"charset-mismatch:{_label(charset)}")
            return text
    alt = _SUPERSET.get(codec)
    if alt and not raw.isascii():
        try:  # first: where the two differ, the superset is what the writer's system meant
            return raw.decode(alt)
        except UnicodeDecodeError:
            pass
    try:
        return raw.decode(codec)
    except UnicodeDecodeError:
        pass
    except Exception:  # a codec's own bug must not stop parsing
        defects.append(f"unknown-charset:{_label(charset)}")
        return _detected(raw)
    if codec.startswith("iso2022_jp"):
        text = iso2022jp_ms(raw)
        if text is not None:
            return text
    defects.append(f"charset-mismatch:{_label(charset)}")
    if codec == "utf_8" and mostly_utf8(raw):  # a list footer or a cut character in UTF-8
        return raw.decode("utf-8", "gateway-cp1252")
    if codec in _JAPANESE_LABELS:  # a Japanese label on another Japanese encoding's bytes
        for other in ("utf_8", "euc_jp", "cp932"):
            try:
                text = raw.decode(other)
            except UnicodeDecodeError:
                continue
            if _KANA.search(text):
                return text
    return _detected(raw)


_UTF8_SEQUENCE = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}"
)
_HIGH_BYTE = re.compile(rb"[\x80-\xff]")


def mostly_utf8(raw: bytes) -> bool:
    """Whether UTF-8 text holds bytes that are not (a mailing list's Latin-1 footer, a
    character cut at a line's end, a relay's damage to the base64 it came in): then it
    is read as UTF-8 with those bytes as windows-1252, not all of it in a guessed
    charset ("GrÃ¼ÃŸe" for every letter). Text in another charset forms valid UTF-8
    sequences only by chance: GBK's pairs do, one in twelve or so, beside as many
    bytes that do not; so the valid must outnumber the rest two to one, or run long
    before the first byte that breaks them."""
    sequences = _UTF8_SEQUENCE.findall(raw)
    in_sequences = sum(map(len, sequences))
    if not sequences:
        return False
    if in_sequences >= 2 * (len(_HIGH_BYTE.findall(raw)) - in_sequences):
        return True
    try:
        raw.decode("utf-8")
        return True
    except UnicodeDecodeError as err:
        return len(_UTF8_SEQUENCE.findall(raw, 0, err.start)) >= 8


def _as_cp1252(err: UnicodeError) -> tuple[str, int]:
    if not isinstance(err, UnicodeDecodeError):
        raise err
    return err.object[err.start : err.end].decode("cp1252", "replace"), err.end


codecs.register_error("gateway-cp1252", _as_cp1252)


# Japanese mail labelled with one Japanese charset and written in another (an
# "ISO-2022-JP" label on EUC-JP or Shift_JIS bytes) is read as Japanese before
# detection, which on a few lines may read EUC-JP as Chinese. Kana is the proof.
_JAPANESE_LABELS = {"iso2022_jp", "iso2022_jp_1", "iso2022_jp_2", "iso2022_jp_2004",
                    "iso2022_jp_3", "iso2022_jp_ext", "shift_jis", "cp932", "euc_jp",
                    "euc_jis_2004", "shift_jis_2004"}  # fmt: skip
_KANA = re.compile(r"[\u3041-\u3096\u30a1-\u30fa]")


_ISO2022 = re.compile(rb"\x1b(\$@|\$B|\(B|\(J|\(I)")


def iso2022jp_ms(raw: bytes) -> str | None:
    """ISO-2022-JP as Outlook and Windows write it (CP50220): JIS X 0208 with the NEC and
    IBM rows of cp932 (①, ㈱, Roman numerals), which Python's iso2022_jp codecs refuse.
    Each two-byte JIS character is turned into its Shift_JIS bytes and read as cp932;
    None when the bytes are not ISO-2022-JP at all."""
    if not raw.isascii():  # ISO-2022-JP is 7-bit
        return None
    if b"\x1b$(" in raw:  # JIS X 0212/0213 designations: Python's codecs know them
        for codec in ("iso2022_jp_2004", "iso2022_jp_2"):
            try:
                return raw.decode(codec)
            except UnicodeDecodeError:
                continue
        return None
    out = bytearray()
    mode = b"(B"
    pieces = _ISO2022.split(raw)
    for i, piece in enumerate(pieces):
        if not i % 2 and b"\x1b" in piece:
            return None
        if i % 2:
            mode = piece.lstrip(b"$") if piece.startswith(b"(") else b"$B"
            continue
        if mode == b"$B":
            # A line break ends two-byte mode: RFC 1468 wants ESC ( B before it, and
            # mailers that leave it out are read as every mail client reads them.
            ends = [k for k in (piece.find(b"\n"), piece.find(b"\r")) if k >= 0]
            if ends:
                piece, tail = piece[: min(ends)], piece[min(ends) :]
            else:
                tail = b""
            if len(piece) % 2:
                return None
            for j in range(0, len(piece), 2):
                j1, j2 = piece[j], piece[j + 1]
                if not (0x21 <= j1 <= 0x7E and 0x21 <= j2 <= 0x7E):
                    return None
                s1 = ((j1 + 1) >> 1) + (0x70 if j1 <= 0x5E else 0xB0)
                s2 = j2 + (0x7E if not j1 % 2 else (0x1F if j2 < 0x60 else 0x20))
                out += bytes((s1, s2))
            out += tail
        elif mode == b"(I":
            out += bytes(b | 0x80 for b in piece)
        else:
            out += piece
    try:
        return out.decode("cp932")
    except UnicodeDecodeError:
        return None


def _detected(raw: bytes) -> str:
    from parsers.detect import detect_codec  # it imports this module

    return raw.decode(detect_codec(raw), "replace")


def _label(charset: str | None) -> str:
    return re.sub(r"[^A-Za-z0-9._:-]", "?", (charset or "none")[:40]).lower()


def header_text(value: str | None, defects: list[str]) -> str:
    """A raw compat32 header value as text: 8-bit bytes recovered, unfolded.

    compat32 keeps 8-bit header bytes as surrogate escapes; RFC 6532 says they
    are UTF-8, and older clients wrote their locale's charset.
    """
    if value is None:
        return ""
    if not isinstance(value, str):  # compat32 may hand back a Header object
        value = str(value)
    if not value.isascii() and any("\udc80" <= ch <= "\udcff" for ch in value):
        raw = value.encode("ascii", "surrogateescape")
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            # A name Yahoo cut in the middle of its last character is still UTF-8;
            # Outlook Express wrote its locale's charset (GBK "新建 文本文档.txt").
            value = raw.decode("utf-8", "gateway-cp1252") if mostly_utf8(raw) else _detected(raw)
            defects.append("header-8bit-not-utf8")
    return _FOLD.sub("", value)


_FOLD = re.compile(r"\r?\n(?=[ \t])|\r(?=[ \t])")
# The payload may hold spaces: broken mailers write them and clients decode the word anyway.
_EW = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?]*?)\?=")
_EW_OPEN = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\s*$")
_WS_ONLY = re.compile(r"[ \t\r\n]*")
_Q_HEX = re.compile(rb"=([0-9A-Fa-f]{2})")
_NOT_B64 = re.compile(rb"[^A-Za-z0-9+/]")


def decode_words(text: str, defects: list[str]) -> str:
    """Decode RFC 2047 encoded words, joining adjacent same-charset words as bytes.

    Joining first matters: mailers split a multi-byte character across two
    words. Whitespace between two encoded words is dropped (RFC 2047 §6.2).
    """
    if "=?" not in text:
        return text
    if _EW_OPEN.search(text):  # the last word's "?=" lost: clients decode it anyway
        text = text.rstrip() + "?="
        defects.append("bad-encoded-word")
    out: list[str] = []
    pend_cs: str | None = None
    pend: list[bytes] = []
    pos = 0
    for m in _EW.finditer(text):
        gap = text[pos : m.start()]
        if not (pend and _WS_ONLY.fullmatch(gap)):
            if pend:
                out.append(decode_bytes(b"".join(pend), pend_cs, defects))
                pend = []
            out.append(gap)
        charset = m.group(1).split("*", 1)[0]  # RFC 2231 language suffix
        raw = _word_bytes(m.group(2), m.group(3), defects)
        if pend and charset.lower() != (pend_cs or "").lower():
            out.append(decode_bytes(b"".join(pend), pend_cs, defects))
            pend = []
        pend_cs = charset
        pend.append(raw)
        pos = m.end()
    if pend:
        out.append(decode_bytes(b"".join(pend), pend_cs, defects))
    out.append(text[pos:])
    return "".join(out)


_LATIN = {"ascii", "latin_1", "iso8859_1", "iso8859_15", "cp1252"}


def _word_bytes(enc: str, payload: str, defects: list[str]) -> bytes:
    data = payload.encode("ascii", "replace")
    if enc in "qQ":
        return _Q_HEX.sub(lambda m: bytes([int(m.group(1), 16)]), data.replace(b"_", b" "))
    data = _NOT_B64.sub(b"", data)
    if len(data) % 4 == 1:  # one stray character can never decode
        defects.append("bad-encoded-word")
    return repaired_base64(data)
