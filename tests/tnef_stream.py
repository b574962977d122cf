"""TNEF streams ([MS-OXTNEF]) as Outlook writes them, for the tests of parsers/tnef.py.

Outlook's winmail.dat: the signature and key, then attributes, each a level (1 the
message, 2 an attachment), an id whose high 16 bits name the value's type, a length,
the value and a checksum (the sum of the value's bytes). An attachment starts at its
attAttachRendData; its data is attAttachData, its 8.3 name attAttachTitle, and its
long name and MIME type are MAPI properties in attAttachment. The message's plain
body, when Outlook keeps one, is PR_BODY among its MAPI properties (attMAPIProps).
"""

from __future__ import annotations

import struct

SIGNATURE = 0x223E9F78
# Attribute ids with their types ([MS-OXTNEF] 2.1.3.3)
TNEF_VERSION = 0x00089006
OEM_CODEPAGE = 0x00069007
MESSAGE_CLASS = 0x00078008
MAPI_PROPS = 0x00069003
ATTACH_REND_DATA = 0x00069002
ATTACH_TITLE = 0x00018010
ATTACH_DATA = 0x0006800F
ATTACHMENT = 0x00069005
# MAPI property types and ids
PT_LONG, PT_STRING8, PT_UNICODE, PT_BINARY = 0x0003, 0x001E, 0x001F, 0x0102
PR_BODY = 0x1000
PR_ATTACH_LONG_FILENAME = 0x3707
PR_ATTACH_MIME_TAG = 0x370E
PR_ATTACH_METHOD = 0x3705
PR_RENDERING_POSITION = 0x370B


def attribute(level: int, attr: int, value: bytes) -> bytes:
    checksum = sum(value) & 0xFFFF
    return struct.pack("<BII", level, attr, len(value)) + value + struct.pack("<H", checksum)


def props(*items: tuple[int, int, bytes | int | str]) -> bytes:
    """A MAPI property list: (type, id, value) each."""
    out = struct.pack("<I", len(items))
    for kind, prop_id, value in items:
        out += struct.pack("<HH", kind, prop_id)
        if kind == PT_LONG:
            assert isinstance(value, int)
            out += struct.pack("<i", value)
            continue
        if isinstance(value, str):
            raw = (value + "\0").encode("utf-16-le" if kind == PT_UNICODE else "cp1252")
        else:
            assert isinstance(value, bytes)
            raw = value
        out += struct.pack("<II", 1, len(raw)) + raw + b"\0" * (-len(raw) % 4)
    return out


def stream(
    files: list[tuple[str, bytes, str | None]] = (),  # type: ignore[assignment]
    *,
    body: str | None = None,
    short_names: bool = False,
) -> bytes:
    """A winmail.dat: ``files`` as (long name, data, MIME type or None), in order;
    ``short_names``: only the 8.3 title, as older Outlooks wrote it."""
    out = struct.pack("<IH", SIGNATURE, 0x0001)
    out += attribute(1, TNEF_VERSION, struct.pack("<I", 0x00010000))
    out += attribute(1, OEM_CODEPAGE, struct.pack("<II", 1252, 0))
    out += attribute(1, MESSAGE_CLASS, b"IPM.Microsoft Mail.Note\0")
    message = [(PT_LONG, 0x3FDE, 65001)]  # PR_INTERNET_CPID
    if body is not None:
        message.append((PT_UNICODE, PR_BODY, body))
    out += attribute(1, MAPI_PROPS, props(*message))
    for name, data, mime in files:
        out += attribute(2, ATTACH_REND_DATA, struct.pack("<HiIII", 1, -1, 0, 0, 0))
        stem, _, ext = name.rpartition(".")
        out += attribute(2, ATTACH_TITLE, f"{stem[:6].upper()}~1.{ext[:3].upper()}\0".encode())
        out += attribute(2, ATTACH_DATA, data)
        if short_names:
            continue
        mapi = [(PT_LONG, PR_ATTACH_METHOD, 1), (PT_UNICODE, PR_ATTACH_LONG_FILENAME, name)]
        if mime:
            mapi.append((PT_STRING8, PR_ATTACH_MIME_TAG, mime))
        out += attribute(2, ATTACHMENT, props(*mapi))
    return out
