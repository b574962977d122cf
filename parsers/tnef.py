"""The files inside Outlook's winmail.dat (``application/ms-tnef``), read as files.

Outlook and Exchange wrap a message's formatting, and with it its attachments, in a
TNEF stream ([MS-OXTNEF]) when the message is rich text or an Exchange route keeps it
so. A client sees one ``winmail.dat`` that no mail program but Outlook opens; Apple
Mail, Gmail and Outlook itself show the files inside it instead. So does the gateway:
each file becomes an attachment (scanned and kept like any other), the stream itself
is dropped when it reads whole, and its plain-text body is the message's text when the
message has no other.

Read here, not with a TNEF library: the one on PyPI (tnefparse) loops over counts
taken from the data (four billion times for a four-byte lie) and copies the rest of
the stream for every attribute, so a few kilobytes of hostile TNEF hold a parse for
hours. This reader only takes what it needs (file names, types, data, the plain
body) and checks every length and count against the bytes left. An attribute whose
frame does not fit ends the reading: the files read before it are taken, and the
stream is kept beside them as the ``winmail.dat`` it came as (so is one that holds an
embedded message); a property list inside a sound frame that does not read is passed
over.
"""

from __future__ import annotations

import codecs
import struct
from dataclasses import dataclass, field

__all__ = ["TYPES", "TnefFile", "TnefMessage", "read"]

TYPES = frozenset({"application/ms-tnef", "application/vnd.ms-tnef"})
SIGNATURE = b"\x78\x9f\x3e\x22"  # 0x223E9F78, little-endian

_MESSAGE, _ATTACHMENT = 1, 2  # an attribute's level
# Attribute ids ([MS-OXTNEF] 2.1.3.3), the low 16 bits of an attribute's id.
_BODY = 0x800C
_ATTACH_DATA = 0x800F
_ATTACH_TITLE = 0x8010
_ATTACH_REND_DATA = 0x9002  # starts each attachment
_MSG_PROPS = 0x9003
_ATTACHMENT_PROPS = 0x9005
_OEM_CODEPAGE = 0x9007
# MAPI property ids read ([MS-OXPROPS])
_PR_BODY = 0x1000
_PR_ATTACH_DATA = 0x3701
_PR_ATTACH_LONG_FILENAME = 0x3707
_PR_ATTACH_MIME_TAG = 0x370E
_PR_ATTACH_CONTENT_ID = 0x3712
# MAPI value types: the fixed sizes, and the variable ones (a length before each value)
_FIXED = {0x0002: 2, 0x0003: 4, 0x0004: 4, 0x0005: 8, 0x0006: 8, 0x0007: 8, 0x000A: 4,
          0x000B: 2, 0x0014: 8, 0x0040: 8, 0x0048: 16, 0x0001: 0}  # fmt: skip
_STRING8, _UNICODE, _OBJECT, _BINARY = 0x001E, 0x001F, 0x000D, 0x0102
_VARIABLE = {_STRING8, _UNICODE, _OBJECT, _BINARY, 0x00FB}  # 0x00FB: PtypServerId
_MULTI = 0x1000
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


class _Bad(Exception):
    """The stream does not read: a length or a count past its end, an unknown type."""


@dataclass(slots=True)
class TnefFile:
    name: str
    data: bytes
    mime_type: str | None = None
    content_id: str | None = None


@dataclass(slots=True)
class TnefMessage:
    files: list[TnefFile] = field(default_factory=list)
    body: str | None = None  # the plain text, when the stream carries it
    whole: bool = True  # False: read up to a frame that did not fit, or an embedded message


def read(data: bytes) -> TnefMessage | None:
    """The files and plain body of a TNEF stream (``whole`` False when some of it could
    not be read: the files before that point are whole), or None if it is not one."""
    if not data.startswith(SIGNATURE):
        return None
    out = TnefMessage()
    pending: list[_Pending] = []
    try:
        _read(memoryview(data), out, pending)
    except (_Bad, struct.error, UnicodeDecodeError, LookupError):
        out.whole = False
    for a in pending:
        if a.embedded and a.data is None:
            out.whole = False  # a message or OLE object inside: the stream stays too
        if a.data is None:
            continue  # a rendering without a file (an OLE picture's place)
        out.files.append(
            TnefFile(a.name or a.title or "", a.data, a.mime_type or None, a.content_id or None)
        )
    return out


@dataclass(slots=True)
class _Pending:
    """An attachment as its attributes come, in any order."""

    data: bytes | None = None
    title: str | None = None  # the 8.3 name of attAttachTitle
    name: str | None = None  # the long name, a MAPI property
    mime_type: str | None = None
    content_id: str | None = None
    embedded: bool = False


def _read(view: memoryview, out: TnefMessage, pending: list[_Pending]) -> None:
    codepage = "cp1252"
    current: _Pending | None = None
    pos = 6  # signature, key
    end = len(view)
    while pos < end:
        if end - pos < 11:
            raise _Bad("a truncated attribute")
        level = view[pos]
        attr_id = _U16.unpack_from(view, pos + 1)[0]
        length = _U32.unpack_from(view, pos + 5)[0]
        start = pos + 9
        if length > end - start - 2:
            raise _Bad("an attribute past the end")
        value = view[start : start + length]
        pos = start + length + 2  # and its checksum
        if level == _MESSAGE:
            if attr_id == _OEM_CODEPAGE and length >= 4:
                codepage = _codepage(_U32.unpack_from(value, 0)[0])
            elif attr_id == _BODY:
                out.body = _text(bytes(value), codepage)
            elif attr_id == _MSG_PROPS:
                for prop_id, kind, raw in _props_or_none(value):
                    if prop_id == _PR_BODY and kind in (_STRING8, _UNICODE):
                        out.body = _string(raw, kind, codepage)
        elif level == _ATTACHMENT:
            if attr_id == _ATTACH_REND_DATA:
                current = _Pending()
                pending.append(current)
            elif current is None:
                raise _Bad("an attachment's attribute before its start")
            elif attr_id == _ATTACH_DATA:
                current.data = bytes(value)
            elif attr_id == _ATTACH_TITLE:
                if current.title is None:  # the first one
                    current.title = _text(bytes(value), codepage)
            elif attr_id == _ATTACHMENT_PROPS:
                for prop_id, kind, raw in _props_or_none(value):
                    if prop_id == _PR_ATTACH_LONG_FILENAME and kind in (_STRING8, _UNICODE):
                        current.name = _string(raw, kind, codepage)
                    elif prop_id == _PR_ATTACH_MIME_TAG and kind in (_STRING8, _UNICODE):
                        current.mime_type = _string(raw, kind, codepage)
                    elif prop_id == _PR_ATTACH_CONTENT_ID and kind in (_STRING8, _UNICODE):
                        current.content_id = _string(raw, kind, codepage)
                    elif prop_id == _PR_ATTACH_DATA and kind == _BINARY:
                        current.data = current.data if current.data is not None else bytes(raw)
                    elif prop_id == _PR_ATTACH_DATA and kind == _OBJECT:
                        current.embedded = True  # a message or OLE object: kept whole
        else:
            raise _Bad(f"level {level}")


def _props_or_none(view: memoryview) -> list[tuple[int, int, memoryview]]:
    """A property list, or none when it does not read (a type this reader does not know,
    a count past its end): the attribute's frame around it held, so the stream goes on,
    and a file keeps the 8.3 name of its attAttachTitle."""
    try:
        return _props(view)
    except (_Bad, struct.error):
        return []


def _props(view: memoryview) -> list[tuple[int, int, memoryview]]:
    """A MAPI property list ([MS-OXTNEF] 2.1.3.4): (id, type, the first value's bytes)."""
    end = len(view)
    count = _U32.unpack_from(view, 0)[0]
    if count > (end - 4) // 4:  # every property takes at least four bytes
        raise _Bad("more properties than bytes")
    pos = 4
    out: list[tuple[int, int, memoryview]] = []
    for _ in range(count):
        kind, prop_id = _U16.unpack_from(view, pos)[0], _U16.unpack_from(view, pos + 2)[0]
        pos += 4
        if prop_id >= 0x8000:  # a named property: its GUID and its name or number
            pos += 16
            named = _U32.unpack_from(view, pos)[0]
            pos += 4
            if named == 0:
                pos += 4
            else:
                size = _U32.unpack_from(view, pos)[0]
                pos += 4 + _padded(size, end - pos)
        values = 1
        if kind & _MULTI:
            kind ^= _MULTI
            values = _U32.unpack_from(view, pos)[0]
            pos += 4
        elif kind in _VARIABLE:
            values = _U32.unpack_from(view, pos)[0]  # MUST be 1
            pos += 4
        if values > end - pos:
            raise _Bad("more values than bytes")
        first: memoryview | None = None
        if kind in _VARIABLE:
            for _ in range(values):
                size = _U32.unpack_from(view, pos)[0]
                pos += 4
                step = _padded(size, end - pos)
                if first is None:
                    first = view[pos : pos + size]
                pos += step
        elif kind in _FIXED:
            width = _FIXED[kind]
            total = width * values
            first = view[pos : pos + width]
            pos += total + (-total % 4)
        else:
            raise _Bad(f"MAPI type {kind:#06x}")
        if pos > end:
            raise _Bad("a property past the end")
        out.append((prop_id, kind, first if first is not None else view[pos:pos]))
    return out


def _padded(size: int, left: int) -> int:
    step = size + (-size % 4)
    if step > left:
        raise _Bad("a value past the end")
    return step


def _string(raw: memoryview, kind: int, codepage: str) -> str:
    if kind == _UNICODE:
        return bytes(raw).decode("utf-16-le", "replace").split("\x00", 1)[0]
    return _text(bytes(raw), codepage)


def _text(raw: bytes, codepage: str) -> str:
    return raw.split(b"\x00", 1)[0].decode(codepage, "replace")


def _codepage(number: int) -> str:
    """Python's codec for a Windows code page number; windows-1252 when it has none."""
    name = "utf-8" if number == 65001 else f"cp{number}"
    try:
        codecs.lookup(name)
    except LookupError:
        return "cp1252"
    return name
