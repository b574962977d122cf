"""Addresses and Message-IDs, normalised for display and for threading.

Header addresses are never used for routing (the envelope is); what matters
here is that an ambiguous form like ``a@b.com<c@d.com>`` yields no address
rather than the wrong one (CVE-2023-27043), and that encoded display names
are decoded only after the address has been split off, so an encoded ``<`` or
CRLF cannot forge a second address (the CVE-2024-6923 family).
"""

from __future__ import annotations

import re

from parsers.mime import decode_words, flanker_address

__all__ = ["msg_ids", "normalise_msg_id", "parse_address", "parse_address_list"]

# Common unambiguous forms, resolved without the (80 us) ply grammar:
#   local@domain    Name <local@domain>    "Quoted, Name" <local@domain>
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+"
_SPEC = rf"{_ATOM}@[A-Za-z0-9.-]+"
_SIMPLE = re.compile(
    rf'\s*(?:(?P<bare>{_SPEC})|(?:"(?P<q>[^"\\]*)"|(?P<n>[^"<>@,;:\\\s][^"<>@,;:\\]*?)?)'
    rf"\s*<(?P<spec>{_SPEC})>)\s*"
)


# An encoded word is one token: a comma or semicolon a broken mailer left unencoded
# inside it ("=?utf-8?q?Berger, Anna?=") separates nothing. They are masked with
# private-use characters while the value is split and matched, and restored after.
_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?]*?\?=")
_MASK = str.maketrans({",": "\ue000", ";": "\ue001"})
_UNMASK = str.maketrans({"\ue000": ",", "\ue001": ";"})


def _masked(value: str) -> str:
    if "=?" not in value:
        return value
    return _WORD.sub(lambda m: m.group(0).translate(_MASK), value)


def parse_address(value: str, defects: list[str] | None = None) -> tuple[str, str]:
    """(display name, lower-cased addr-spec) of a single mailbox; ("", "") if unusable."""
    value = value.strip()
    if not value:
        return "", ""
    m = _SIMPLE.fullmatch(_masked(value))
    if m:
        if m.group("bare"):
            return "", m.group("bare").lower()
        name = m.group("q") if m.group("q") is not None else (m.group("n") or "")
        return _name(name.translate(_UNMASK), defects), m.group("spec").lower()
    try:
        parsed = flanker_address.parse(value, addr_spec_only=False)
    except Exception:  # the grammar must not take the parse down with it
        parsed = None
    if parsed is None or getattr(parsed, "addr_type", "email") != "email":
        if defects is not None:
            defects.append("bad-address")
        return "", ""
    name = parsed.display_name or _comment_name(value)
    return _name(name, defects), parsed.address.lower()


_COMMENT = re.compile(r"^\s*[^\s<>()]+@[^\s<>()]+\s*\((?P<c>(?:[^()\\]|\\.)*)\)\s*$")


def _comment_name(value: str) -> str:
    """The name in the old ``addr (Name)`` form (RFC 822), which clients still show."""
    m = _COMMENT.match(value)
    return re.sub(r"\\(.)", r"\1", m.group("c")).strip() if m else ""


def parse_address_list(value: str, defects: list[str] | None = None) -> tuple[str, ...]:
    """Lower-cased addr-specs of an address list, in order, duplicates dropped.

    The list is split here (quotes, comments and angle brackets respected) and
    each mailbox parsed alone: flanker's list parser drops the whole list when
    one member is garbage.
    """
    out: list[str] = []
    for piece in split_list(value):
        if ":" in piece and piece.rstrip().endswith(";") and "@" not in piece:
            continue  # an empty group such as "undisclosed-recipients:;"
        if ":" in piece and "<" not in piece.split(":", 1)[0] and '"' not in piece:
            piece = piece.split(":", 1)[1].rstrip(" ;")  # "group: a@b" -> "a@b"
        spec = parse_address(piece, defects)[1]
        if spec and spec not in out:
            out.append(spec)
    return tuple(out)


def split_list(value: str) -> list[str]:
    """Split an address list on top-level commas (and semicolons some clients use)."""
    masked = _masked(value)
    if masked != value:
        return [p.translate(_UNMASK) for p in split_list(masked)]
    if '"' not in value and "(" not in value and "<" not in value:
        return [p for p in re.split(r"[,;]", value) if p.strip()]
    parts: list[str] = []
    buf: list[str] = []
    quote = angle = False
    depth = 0
    esc = False
    for ch in value:
        if esc:
            esc = False
        elif ch == "\\" and (quote or depth):
            esc = True
        elif quote:
            quote = ch != '"'
        elif ch == '"':
            quote = True
        elif ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif depth:
            pass
        elif ch == "<":
            angle = True
        elif ch == ">":
            angle = False
        elif ch in ",;" and not angle:
            parts.append("".join(buf))
            buf = []
            continue
        buf.append(ch)
    parts.append("".join(buf))
    return [p for p in parts if p.strip()]


def _name(name: str, defects: list[str] | None) -> str:
    name = decode_words(name, defects if defects is not None else [])
    return " ".join(name.split())


_ID = re.compile(r"<([^<>]*)>")
_WS = re.compile(r"\s+")


def normalise_msg_id(value: str | None) -> str | None:
    """First usable ``<local@domain>`` in a header value, whitespace removed; else None."""
    ids = msg_ids(value, first=True)
    return ids[0] if ids else None


def msg_ids(value: str | None, *, first: bool = False) -> list[str]:
    """Every usable msg-id in a header value, in order, de-duplicated.

    Comments and phrases some clients add around them ("(Fred's message of ...)")
    are skipped; an id without "@" or with control characters is not usable.
    """
    if not value:
        return []
    flat = _WS.sub("", value)
    found = _ID.findall(flat)
    if not found and "<" not in flat and flat.count("@") == 1:
        found = [flat]  # a bare id, as some old mailers write it
    out: list[str] = []
    for ident in found:
        if "@" not in ident or ident.startswith("@") or ident.endswith("@"):
            continue
        if any(ord(c) < 32 or ord(c) == 127 for c in ident) or len(ident) > 995:
            continue
        norm = f"<{ident}>"
        if norm not in out:
            out.append(norm)
            if first:
                break
    return out
