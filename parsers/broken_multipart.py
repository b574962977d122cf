"""Multiparts whose parts the parser cannot find, read as a mail client reads them.

A ``multipart/*`` entity needs a ``boundary`` parameter, and its parts start at lines
of ``--`` and that boundary (RFC 2046 5.1.1). Mail that breaks this is not rare, and
much of it comes from the web forms, shop systems and scripts that write to support
addresses:

- the parameter is on a continuation line that is not indented (``boundary=...`` at
  the start of a line), so the header ends there: the parameter is lost and the rest
  of the mail, parts and all, is the body;
- the parameter names one boundary and the parts use another (a script that made two);
- there is no parameter at all, and the body is plain text under a multipart type.

The stdlib then keeps the whole body as one string under the multipart type; read
as a file it became an attachment named ``part-1.bin`` and the ticket showed no text.
``mend`` finds the boundary the parts do use: a line of ``--`` and a token that is
at once followed by a ``Content-*`` header, as every part written by a MIME library
starts; the body is parsed again with it, within what is left of the message's
limits. What has no such line stays broken; parsers/body.py reads it as plain text,
which is what it is, or keeps it as a file when it is too large to be prose.

Two more breaks in the same walk, mended the same way (parsed again within the limits):
an enclosed message whose header has a blank line before its Content-Type (Exchange,
forwarding a message as an attachment), and a message/rfc822 part sent base64.
"""

from __future__ import annotations

import binascii
import dataclasses
import re
from email.errors import NoBoundaryInMultipartDefect, StartBoundaryNotFoundDefect
from email.message import Message

from parsers.errors import ParseError, StructureTooDeep
from parsers.limits import Limits, prescan
from parsers.mime import parse_tree

__all__ = ["mend"]

_UNSPLIT = (NoBoundaryInMultipartDefect, StartBoundaryNotFoundDefect)

# A delimiter line (RFC 2046: a boundary is 1-70 characters, spaces allowed inside)
# that opens a part: the next line is a MIME header. A sign-off such as "--Anna" is
# followed by none. A space inside: Outlook Express folded its long boundary parameter
# inside the quotes ("----=_NextPart" CRLF " _000_..."), which compat32 keeps with the
# line break, while the parts' lines have the space.
_OPENS_PART = r"[ \t]*\r?\n(?=content-[a-z0-9-]+[ \t]*:)"  # the rest of the line, a header next
_OPENING = re.compile(r'^--([^\s"\\](?:[^\r\n"\\]{0,68}[^\s"\\])?)' + _OPENS_PART, re.I | re.M)


def mend(msg: Message, defects: list[str], limits: Limits, size: int) -> None:
    """Give every multipart of ``msg`` whose parts were not found the parts its body
    holds, found by their delimiter lines; the rest is left as it is.

    ``size``: the raw message's. The bodies parsed again come to at most twice that in
    all (a multipart mended inside a mended one is parsed twice; a deeper chain would
    cost the square of the message), and the parts they add stay within ``limits``.
    """
    if msg.defects or msg.is_multipart():  # else one whole part: most mail, nothing to do
        _mend(msg, defects, limits, 0, _Budget(parts=limits.max_parts, octets=2 * size))


@dataclasses.dataclass(slots=True)
class _Budget:
    parts: int
    octets: int


# A MIME header that begins a body: an enclosed message whose header has a blank line
# before its Content-Type (Exchange writes it so into messages forwarded as attachments).
_HEADER_IN_BODY = re.compile(
    r"(?:[ \t]*\r?\n)?((?:content-type|mime-version)[ \t]*:[^\n]*\n"
    r"(?:(?:[!-9;-~]+:|[ \t])[^\n]*\n)*)\r?\n",
    re.I,
)


def _header_in_body(
    part: Message, defects: list[str], limits: Limits, depth: int, left: _Budget
) -> None:
    """An enclosed message with no Content-Type whose body opens with MIME fields and a
    blank line: those fields are its header's, as Outlook shows it (its text, not the
    fields, boundary lines and base64 of its parts as text)."""
    payload = getattr(part, "_payload", None)
    if not isinstance(payload, str) or not payload[:300].lstrip().lower().startswith(
        ("content-type:", "mime-version:")
    ):
        return
    found = _HEADER_IN_BODY.match(payload)
    if found is None:
        return
    try:
        data = (found.group(1) + "\n" + payload[found.end() :]).encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        return
    tree = _reparsed(data, defects, limits, depth, left)
    if tree is None:
        return
    for name, value in tree.raw_items():
        part[name] = value
    part.set_payload(tree.get_payload())
    defects.append("header-in-body-mended")
    _mend(part, defects, limits, depth, left)


def _encoded_message(
    part: Message, defects: list[str], limits: Limits, depth: int, left: _Budget
) -> None:
    """A message/rfc822 part sent base64 (RFC 2046 forbids it; mailers do it): the parser
    read the base64 as a message without a header, and its text was the base64. The
    decoded bytes are the message, as Thunderbird reads them."""
    inner = part.get_payload()[0] if part.get_payload() else None
    payload = getattr(inner, "_payload", None)
    if not isinstance(inner, Message) or inner.keys() or not isinstance(payload, str):
        return
    try:
        data = binascii.a2b_base64(payload.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError):
        return
    tree = _reparsed(data, defects, limits, depth, left)
    if tree is None:
        return
    part.set_payload([tree])
    part.replace_header("Content-Transfer-Encoding", "8bit")
    defects.append("encoded-message-decoded")
    _mend(tree, defects, limits, depth + 1, left)


def _parts(
    ctype: str,
    boundary: str,
    body: str,
    defects: list[str],
    limits: Limits,
    depth: int,
    left: _Budget,
) -> list[Message] | None:
    """The parts of ``body`` parsed again under a header that names the boundary they
    use, or None. Bytes as the parser read them (surrogate escapes back to the 8-bit
    bytes they stood for)."""
    try:
        data = f'Content-Type: {ctype}; boundary="{boundary}"\n\n'.encode() + body.encode(
            "ascii", "surrogateescape"
        )
    except UnicodeEncodeError:  # not as the parser read it: leave it
        return None
    tree = _reparsed(data, defects, limits, depth, left)
    parts = tree.get_payload() if tree is not None else None
    return parts if isinstance(parts, list) and parts else None


def _reparsed(
    data: bytes, defects: list[str], limits: Limits, depth: int, left: _Budget
) -> Message | None:
    """``data`` parsed, within what is left of the message's limits (its depth, its
    parts, twice its octets across every mend), or None: the part is left as it is."""
    room = dataclasses.replace(
        limits, max_mime_depth=limits.max_mime_depth - depth, max_parts=left.parts
    )
    try:
        if len(data) > left.octets:
            raise StructureTooDeep("mended parts over twice the message")
        prescan(data, room)
    except ParseError:  # the whole message's limits, counted across mends: left unsplit,
        defects.append("multipart-not-mended")  # read as text or kept as a file
        return None
    tree = parse_tree(data)
    left.octets -= len(data)
    left.parts -= sum(1 for _ in tree.walk())
    return tree


def _epilogue_parts(
    part: Message, defects: list[str], limits: Limits, depth: int, left: _Budget
) -> None:
    """Parts after a multipart's closing line: an inner multipart that reused its outer
    boundary (iPhone mail through some gateways, Outlook Express for Mac) closed the
    outer one early, and the parts after it, a file among them, landed in the epilogue,
    where nothing shows them and no scan reads them. Mail clients show them: so do we."""
    boundary = part.get_boundary()
    epilogue = part.epilogue or ""
    if not boundary:
        return
    found = re.search(rf"^--{re.escape(boundary)}{_OPENS_PART}", epilogue, re.I | re.M)
    if found is None:
        return
    parts = _parts(
        "multipart/mixed", boundary, epilogue[found.start() :], defects, limits, depth, left
    )
    if not parts:
        return
    for child in parts:
        part.attach(child)
    part.epilogue = epilogue[: found.start()]
    defects.append("epilogue-parts-mended")
    for child in parts:
        _mend(child, defects, limits, depth + 1, left)


def _mend(part: Message, defects: list[str], limits: Limits, depth: int, left: _Budget) -> None:
    if part.is_multipart():
        if (
            part.get_content_type() == "message/rfc822"
            and str(part.get("content-transfer-encoding", "")).strip().lower() == "base64"
        ):
            _encoded_message(part, defects, limits, depth, left)
            return
        for child in part.get_payload():
            if isinstance(child, Message):
                _mend(child, defects, limits, depth + 1, left)
        if part.epilogue and "--" in part.epilogue:
            _epilogue_parts(part, defects, limits, depth, left)
        return
    if depth and "content-type" not in part:
        _header_in_body(part, defects, limits, depth, left)
        return
    # The parser marks the multiparts whose parts it could not find (and no other part
    # with these): no header is read for the other leaves, nearly every one.
    if not part.defects or not any(isinstance(d, _UNSPLIT) for d in part.defects):
        return
    # The body as parsed (get_payload() would decode an 8-bit one with its charset).
    payload = getattr(part, "_payload", None)
    if not isinstance(payload, str):
        return
    found = _OPENING.search(payload)
    if found is None:
        return
    boundary = found.group(1)
    parts = _parts(part.get_content_type(), boundary, payload, defects, limits, depth, left)
    if not parts:
        return
    part.set_payload(parts)
    part.set_param("boundary", boundary)
    defects.append("multipart-boundary-mended")
    for child in parts:
        _mend(child, defects, limits, depth + 1, left)
