"""Walk the MIME tree: the body texts, the HTML parts, every attachment.

A leaf is body when it is text/plain or text/html without an attachment
disposition and without a filename; several HTML parts in a row (Apple Mail
around an attachment) are all body, in order, as clients show them. Inside a
delivery report (multipart/report, RFC 6522) only the human-readable part is
body; the returned message is one .eml attachment, kept whole, and the
delivery status (``message/delivery-status``, RFC 3464) and returned headers
(``text/rfc822-headers``) are attachments too, read besides for the bounce
logic (``dsn``, thread hints): like every attachment they reach clamd before
anything is stored. An enclosed message's HTML is never the ticket's HTML;
its text and attachments count (a forwarded mail), and one forwarded as an
attachment is also kept whole as its .eml.

Files that travel inside another part are taken out as the attachments mail clients
show: uuencoded into a plain-text body (parsers/uuencoded.py), inside Outlook's
winmail.dat (parsers/tnef.py). A multipart whose parts even parsers/broken_multipart.py
could not find is read as the text it is.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from urllib.parse import unquote

from parsers import tnef, uuencoded
from parsers.flowed import unflow
from parsers.mime import decode_bytes, decode_words, decoded_payload, header_text
from parsers.report import delivery_status, returned_headers
from parsers.types import Attachment

__all__ = ["Walk", "walk"]

_REPORT = {
    "message/delivery-status",
    "message/global-delivery-status",
    "text/rfc822-headers",
    "message/disposition-notification",
    "message/feedback-report",
    "message/global-headers",
}
_CTE = {
    "7bit",
    "8bit",
    "binary",
    "quoted-printable",
    "base64",
    "x-uuencode",
    "uuencode",
    "uue",
    "x-uue",
}
_UUENCODE = {"x-uuencode", "uuencode", "uue", "x-uue"}
_EXT = {
    "application/pdf": ".pdf",
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/jpg": ".jpg",  # not registered, and common
    "image/gif": ".gif",
    "text/plain": ".txt",
    "text/html": ".html",
    "text/calendar": ".ics",
    "text/csv": ".csv",
    "message/rfc822": ".eml",
    "application/zip": ".zip",
    "image/webp": ".webp",
    **dict.fromkeys(_REPORT, ".txt"),
}
# A multipart whose parts cannot be found is read as plain text up to this size;
# a larger one is kept as a file (a lost boundary around base64, not prose).
_BROKEN_AS_TEXT = 256 * 1024
# A file's type by its name (uuencoded, or in a winmail.dat that gives none): Python's
# own table, not the machine's /etc/mime.types, so every machine reads mail the same.
_TYPES = mimetypes.MimeTypes(filenames=())
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")
_BREAKS = re.compile(r"[\t\r\n]+")
_DRIVE = re.compile(r"^[A-Za-z]:")  # "C:" left of a Windows path
_META_CHARSET = re.compile(rb"<meta[^>]*?charset\s*=\s*[\"']?\s*([A-Za-z0-9._:-]{1,40})", re.I)


@dataclass(slots=True)
class Walk:
    """What the walk found, in document order."""

    # ("plain", text) or ("html", markup): the caller renders the HTML of the texts kept,
    # so an alternative's HTML beside its plain text (most mail) is never rendered
    # (html.parser, ~0.1 ms a KB: 3-4 ms for an Outlook reply's 26 KB, bench.parse_real).
    texts: list[tuple[str, str]] = field(default_factory=list)
    html: str | None = None  # the text/html bodies in order, decoded, unsanitised
    attachments: list[Attachment] = field(default_factory=list)
    returned: list[Message] = field(default_factory=list)  # headers of enclosed messages
    dsn: list[tuple[str, str, str]] = field(default_factory=list)  # (recipient, action, status)
    part_types: set[str] = field(default_factory=set)
    leaves: int = 0
    # The plain body a winmail.dat carried: the text only when the mail has no other.
    tnef_text: str | None = None

    def absorb(self, other: Walk, *, texts: bool, html: bool = True) -> None:
        if texts:
            self.texts.extend(other.texts)
        if html:
            self.add_html(other.html)
        self.attachments.extend(other.attachments)
        self.returned.extend(other.returned)
        self.dsn.extend(other.dsn)
        self.part_types |= other.part_types
        self.leaves = max(self.leaves, other.leaves)
        self.tnef_text = self.tnef_text or other.tnef_text

    def add_html(self, html: str | None) -> None:
        if html is not None:
            self.html = html if self.html is None else f"{self.html}\n{html}"


def walk(msg: Message, defects: list[str]) -> Walk:
    """Collect bodies and attachments of ``msg``; HTML bodies stay markup (``Walk.texts``)."""
    acc = Walk()
    _visit(msg, acc, defects, in_related=False, in_report=False)
    if acc.tnef_text and not any(text.strip() for _, text in acc.texts):
        acc.texts.append(("plain", acc.tnef_text))
    return acc


def _visit(
    part: Message,
    acc: Walk,
    defects: list[str],
    *,
    in_related: bool,
    in_report: bool,
) -> None:
    ctype = part.get_content_type()
    if " " in ctype or "\t" in ctype:  # "application/pdf name=x.pdf": no ";" before it
        ctype = ctype.split()[0]
    acc.part_types.add(ctype)
    for d in part.defects:
        defects.append(type(d).__name__)
    # Only a container's list of parts is read here; a leaf's get_payload() would decode
    # an 8-bit body with its charset for nothing (the body is read by _decoded).
    payload = part.get_payload() if part.is_multipart() else None
    if ctype.startswith("multipart/") and isinstance(payload, list):
        if part.epilogue and not part.epilogue.isspace():
            defects.append("multipart-epilogue")  # no client shows it; the scan reads it
        if ctype == "multipart/alternative":
            _alternative(
                payload,
                acc,
                lambda child, sub: _visit(
                    child, sub, defects, in_related=in_related, in_report=in_report
                ),
            )
            return
        for child in payload:
            _visit(
                child,
                acc,
                defects,
                in_related=ctype == "multipart/related",
                in_report=in_report or ctype == "multipart/report",
            )
        return
    if ctype in _REPORT:  # read for the bounce logic, then kept as an attachment below
        if ctype in ("text/rfc822-headers", "message/global-headers"):
            acc.returned.append(returned_headers(_decoded(part, defects)))
        elif ctype in ("message/delivery-status", "message/global-delivery-status"):
            acc.dsn.extend(delivery_status(part))
        acc.leaves += 1
        acc.attachments.append(_attachment(part, ctype, acc.leaves, False, defects))
        return
    if ctype.startswith("message/") and isinstance(payload, list):
        for inner in payload:  # forwarded or returned message
            if isinstance(inner, Message):
                acc.returned.append(inner)
                sub = Walk(leaves=acc.leaves)
                _visit(inner, sub, defects, in_related=False, in_report=in_report)
                if in_report:  # the returned message is one attachment, whole
                    acc.part_types |= sub.part_types
                    acc.leaves = sub.leaves + 1
                    acc.attachments.append(_enclosed(inner, acc.leaves))
                    continue
                if any(t.strip() for _, t in sub.texts):  # a forwarded mail's text: the body
                    acc.texts.append(("plain", _forward_header(inner, defects)))
                acc.absorb(sub, texts=True, html=False)
                if (part.get_content_disposition() or "").lower() == "attachment":
                    acc.leaves += 1  # forwarded as an attachment: the original stays one, too
                    name = _filename(part, "message/rfc822", acc.leaves, defects)
                    acc.attachments.append(_enclosed(inner, acc.leaves, name))
        return
    acc.leaves += 1
    if ctype.startswith("multipart/"):  # no parts, even by parsers/broken_multipart.py
        raw = _decoded(part, defects)
        if len(raw) <= _BROKEN_AS_TEXT:  # what a mail client shows of it: its text
            defects.append("multipart-read-as-text")
            acc.texts.append(("plain", _plain(_text_of(part, defects, raw), acc, defects)))
            return
    elif _is_body(part, ctype):
        text = _text_of(part, defects)
        if ctype == "text/html":
            acc.add_html(text)
            acc.texts.append(("html", text))
        else:
            acc.texts.append(("plain", _plain(_unenriched(text, ctype), acc, defects)))
        return
    if _tnef(part, ctype, acc, defects):
        return
    acc.attachments.append(_attachment(part, ctype, acc.leaves, in_related, defects))


def _tnef(part: Message, ctype: str, acc: Walk, defects: list[str]) -> bool:
    """Outlook's winmail.dat read as the files inside it (parsers/tnef.py); False to
    keep it as it came too: it is not one, or did not read whole."""
    if ctype not in tnef.TYPES:
        if ctype != "application/octet-stream":
            return False
        try:  # as _filename reads it (its defect is _filename's to record)
            name = part.get_filename()
        except Exception:
            return False
        if not isinstance(name, str) or name.strip().lower() != "winmail.dat":
            return False  # a relay that relabelled it keeps the name
    data = _decoded(part, defects)
    found = tnef.read(data)
    if found is None:
        defects.append("tnef-unread")
        return False
    defects.append("tnef-read" if found.whole else "tnef-partly-read")
    acc.part_types.add("application/ms-tnef")  # scanned whole too (needs_scan)
    for f in found.files:
        _file(acc, f.name, f.data, f.mime_type, f.content_id)
    if found.body and found.body.strip():
        acc.tnef_text = acc.tnef_text or found.body.replace("\r\n", "\n")
    return found.whole  # else kept too, as it came


def _file(
    acc: Walk, name: str, data: bytes, ctype: str | None = None, cid: str | None = None
) -> None:
    """A file found inside a part (uuencoded, in a winmail.dat) as an attachment: named
    as ``_filename`` names a part's, typed by what it says or else by its name."""
    acc.leaves += 1
    shown = _display_name(name)
    ctype = (ctype or "").split(";", 1)[0].strip().lower()  # a MIME tag may carry parameters
    if ctype.count("/") != 1 or not ctype.isascii():
        ctype = (_TYPES.guess_type(shown, strict=False)[0] if shown else None) or ""
    ctype = ctype or "application/octet-stream"
    name = shown or f"part-{acc.leaves}{_EXT.get(ctype, '.bin')}"
    acc.attachments.append(_made(name, ctype, data, cid=cid.strip("<>") if cid else None))


def _plain(text: str, acc: Walk, defects: list[str]) -> str:
    """A plain-text body without the files uuencoded into it, which become attachments
    (parsers/uuencoded.py)."""
    text, files = uuencoded.split(text)
    for name, data in files:
        defects.append("uuencoded-file")
        _file(acc, name, data)
    return text


def _alternative(
    children: list[Message], acc: Walk, visit: Callable[[Message, Walk], None]
) -> None:
    """One rendering for ``text`` (plain preferred), the first HTML, all attachments;
    ``visit`` walks one child into its own ``Walk`` as the parent walks its parts."""
    subs: list[Walk] = []
    for child in children:
        sub = Walk(leaves=acc.leaves)
        visit(child, sub)
        acc.leaves = sub.leaves
        subs.append(sub)
    # An empty alternative (a plain part with nothing in it, or the empty tail a missing
    # closing delimiter leaves) is never the one shown over one that has text.
    chosen = next((s for s in subs if any(k == "plain" and t.strip() for k, t in s.texts)), None)
    rich = next((s for s in subs if s.html is not None), None)  # one rendering of the HTML
    if chosen is not None and rich is not None and rich is not chosen and _stub(chosen):
        chosen = rich  # the plain part only says to read the HTML: the HTML is the text
    if chosen is None:
        chosen = next((s for s in subs if any(t.strip() for _, t in s.texts)), None)
    if chosen is None:
        chosen = next((s for s in subs if s.texts), None)
    for sub in subs:
        acc.absorb(sub, texts=sub is chosen, html=sub is rich)


# What mailers put in the plain part of a mail written in HTML: "This is an HTML
# message. Please use an HTML capable mail program", "view this newsletter in your
# browser". Read only in a short plain part beside an HTML one.
_STUB = re.compile(
    r"HTML[- ](?:capable|compatible|enabled|fähig)|\bHTML[- ](?:message|newsletter|e-?mail)\b"
    r"|(?:not|n't)\s+(?:support|display|show)\w*\s+HTML|(?:could|can)\s+be\s+(?:read|viewed)\s+here"
    r"|in\s+(?:your|a|einem|ihrem)\s+(?:web\s*)?browser|\bweb\s*version\b",
    re.IGNORECASE,
)


def _stub(sub: Walk) -> bool:
    plain = "\n".join(t for k, t in sub.texts if k == "plain")
    return len(plain) < 400 and _STUB.search(plain) is not None


def _enclosed(inner: Message, index: int, name: str | None = None) -> Attachment:
    """An enclosed message as one .eml attachment, its bytes as the parser read them.

    Without a file name of its own it is named by its subject, as Thunderbird, Outlook
    and Apple Mail name it ("Invoice 118.eml"), not "part-4.eml"."""
    try:
        data = inner.as_bytes()
    except Exception:  # a header the generator cannot write back: keep what it can
        data = str(inner).encode("utf-8", "surrogateescape")
    if name is None or name == f"part-{index}.eml":
        name = _subject_name(inner) or f"part-{index}.eml"
    return _made(name, "message/rfc822", data)


def _subject_name(inner: Message) -> str:
    subject = _header_words(inner.get("Subject")).replace("/", "-").replace("\\", "-")
    shown = _display_name(subject[:120].strip(". "))
    return f"{shown}.eml" if shown else ""


def _header_words(value: str | None) -> str:
    """A header's value decoded, its runs of blanks one space: a name to show."""
    return " ".join(decode_words(header_text(value, []), []).split())


def _forward_header(inner: Message, defects: list[str]) -> str:
    lines = ["---------- Forwarded message ----------"]
    for name in ("From", "Date", "Subject", "To"):
        value = inner.get(name)
        if value is not None:
            lines.append(f"{name}: {decode_words(header_text(value, defects), defects).strip()}")
    return "\n".join(lines) + "\n"


def _is_body(part: Message, ctype: str) -> bool:
    if ctype not in _BODY_TYPES:
        return False
    disposition = part.get_content_disposition()
    if disposition is None and "name" not in str(part.get("content-type", "")).lower():
        return True  # no header that could name a file: get_filename's two parses spared
    return (disposition or "").lower() != "attachment" and not part.get_filename()


# text/enriched (RFC 1896) and its forerunner text/richtext: Apple Mail and Eudora
# sent them beside the plain text of a styled mail. Bodies, not files: read as text.
_BODY_TYPES = {"text/plain", "text/html", "text/enriched", "text/richtext"}
_ENRICHED_PARAM = re.compile(r"<param>.*?</param>", re.IGNORECASE | re.DOTALL)
_ENRICHED_COMMAND = re.compile(r"</?[A-Za-z0-9-]{1,60}>")
_ENRICHED_BREAKS = re.compile(r"\n(\n*)")


def _unenriched(text: str, ctype: str) -> str:
    """The text of text/enriched: formatting commands and their parameters dropped, "<<"
    a "<", a lone line break a space and n+1 of them n (RFC 1896's rules)."""
    if ctype == "text/plain":
        return text
    text = _ENRICHED_COMMAND.sub("", _ENRICHED_PARAM.sub("", text.replace("<<", "\x00")))
    if ctype == "text/enriched":
        text = _ENRICHED_BREAKS.sub(lambda m: m.group(1) or " ", text.replace("\r\n", "\n"))
    return text.replace("\x00", "<")


def _decoded(part: Message, defects: list[str]) -> bytes:
    cte = str(part.get("Content-Transfer-Encoding", "7bit")).strip().lower()
    if cte not in _CTE:
        defects.append("unknown-cte")
    if cte in _UUENCODE and isinstance(part.get_payload(), str):
        data = uuencoded.body(part.get_payload())
        if data is not None:
            return data
        defects.append("bad-transfer-encoding")
    try:
        data = decoded_payload(part)
    except Exception:  # uu decoding and friends can still raise
        defects.append("bad-transfer-encoding")
        raw = part.get_payload()
        data = raw.encode("ascii", "surrogateescape") if isinstance(raw, str) else b""
    for d in part.defects:  # base64 decoding reports its defects onto the part
        name = type(d).__name__
        if name not in defects:
            defects.append(name)
    if data is None and part.is_multipart():  # message/delivery-status
        data = part.as_bytes().replace(b"\r\n", b"\n").partition(b"\n\n")[2]
    return data if isinstance(data, bytes) else b""


def _text_of(part: Message, defects: list[str], raw: bytes | None = None) -> str:
    if raw is None:
        raw = _decoded(part, defects)
    charset = part.get_param("charset")
    if isinstance(charset, tuple):  # RFC 2231-encoded parameter
        charset = charset[2]
    if not charset and not raw.isascii() and part.get_content_type() == "text/html":
        meta = _META_CHARSET.search(raw[:4096])  # what a browser reads (WHATWG prescan)
        charset = meta.group(1).decode("ascii") if meta else None
    text = decode_bytes(raw, str(charset) if charset else None, defects)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if _is_flowed(part):  # RFC 3676: the soft breaks joined, as mail clients show it
        text = unflow(text, delsp=str(part.get_param("delsp") or "").lower() == "yes")
    return text


def _is_flowed(part: Message) -> bool:
    value = part.get("content-type")
    if value is None or "flowed" not in str(value).lower():  # most mail: no param parsing
        return False
    fmt = part.get_param("format")
    return part.get_content_type() == "text/plain" and str(fmt or "").lower() == "flowed"


def _attachment(
    part: Message, ctype: str, index: int, in_related: bool, defects: list[str]
) -> Attachment:
    """A part that is not a body. Inline as its headers say; the HTML, once read, has the
    last word for a part with a Content-ID (``parsers.core``)."""
    data = _decoded(part, defects)
    cid = _content_id(part)
    disposition = (part.get_content_disposition() or "").lower()
    return _made(
        _filename(part, ctype, index, defects),
        ctype,
        data,
        inline=disposition == "inline" or bool(cid and in_related),
        cid=cid,
    )


def _made(
    filename: str, ctype: str, data: bytes, *, inline: bool = False, cid: str | None = None
) -> Attachment:
    """An attachment of ``data``: its size and digest are the bytes'."""
    return Attachment(
        filename=filename,
        content_type=ctype,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        inline=inline,
        content_id=cid,
        data=data,
    )


def _content_id(part: Message) -> str | None:
    raw = part.get("Content-ID")
    if raw is None:
        return None
    cid = "".join(str(raw).split()).strip("<>")
    cid = _UNSAFE.sub("", cid)
    return cid or None


def _filename(part: Message, ctype: str, index: int, defects: list[str]) -> str:
    """Display name only: decoded, path components and control characters removed."""
    try:
        name = _rfc2231_name(part, defects) or part.get_filename()
    except Exception:  # malformed RFC 2231 continuations
        defects.append("bad-filename")
        name = None
    if isinstance(name, str) and name:
        shown = _display_name(decode_words(header_text(name, defects), defects))
        if shown:
            return shown
    located = _located_name(part)
    if located:
        return located
    if ctype in _SIGNATURE_NAMES:
        return _SIGNATURE_NAMES[ctype]
    ext = _EXT.get(ctype) or _TYPES.guess_extension(ctype, strict=False) or ".bin"
    described = part.get("Content-Description") if ctype != "message/rfc822" else None
    if described is not None:  # Postfix's "Delivery report": a name to show, as Zammad does
        shown = _display_name(_header_words(described))
        if shown and len(shown) <= 80:
            return shown if shown.lower().endswith(ext) else f"{shown}{ext}"
    return f"part-{index}{ext}"


# What Thunderbird and Outlook call a signature part that has no name of its own.
_SIGNATURE_NAMES = {
    "application/pgp-signature": "signature.asc",
    "application/pkcs7-signature": "smime.p7s",
    "application/x-pkcs7-signature": "smime.p7s",
}


def _located_name(part: Message) -> str:
    """The file name in a Content-Location (RFC 2557: Apple Mail, Outlook's saved pages),
    which clients fall back to: "Photo25.jpg", or a URL's last path segment with a dot."""
    location = part.get("Content-Location")
    if location is None:
        return ""
    value = "".join(str(location).split()).strip("\"'<>")
    segment = value.split("?", 1)[0].split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    if "." not in segment.strip("."):
        return ""
    return _display_name(unquote(segment))


def _rfc2231_name(part: Message, defects: list[str]) -> str | None:
    """An RFC 2231 name (``filename*=``) read as ``decode_bytes`` reads a body, so a wrong
    label reads as its writer meant: ``us-ascii''W%F6lbung`` (some mailers label every
    name so) got U+FFFD for each 8-bit byte from the stdlib, and UTF-8 bytes labelled
    Latin-1 came out as "Ã¼". None for a name that is not one (``get_filename`` reads it)."""
    raw = part.get_param("filename", None, "content-disposition")
    if raw is None:
        raw = part.get_param("name", None)
    if not isinstance(raw, tuple):
        return None
    charset, _, value = raw
    return decode_bytes(value.encode("raw-unicode-escape"), charset or "us-ascii", defects)


def _display_name(name: str) -> str:
    """A file name as written, to show: control characters and any path left out; a line
    break (a name wrapped inside its encoded word) a space, so words do not run together."""
    name = _UNSAFE.sub("", _BREAKS.sub(" ", name)).replace("\\", "/").rsplit("/", 1)[-1]
    name = _DRIVE.sub("", name).strip()
    return name[:255] if name.strip(".") else ""
