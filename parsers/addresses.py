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
_SEPARATORS = re.compile(r"[,;]")
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
        found = _commented(value) or _wholly_encoded(value, defects)
        if found is not None:
            return _name(found[0], defects), found[1]
        if defects is not None:
            defects.append("bad-address")
        return "", ""
    name = parsed.display_name or (_commented(value) or ("", ""))[0]
    return _name(name, defects), parsed.address.lower()


_BARE = re.compile(rf"\s*<?(?P<spec>{_SPEC})>?\s*")


def _commented(value: str) -> tuple[str, str] | None:
    """(name, addr-spec) of the old ``addr (Name)`` form (RFC 822), which clients still
    show, nested comments included (``addr (A. Client (Sales))``); None if it is not."""
    if "(" not in value:
        return None
    rest: list[str] = []
    comments: list[str] = []
    depth, esc = 0, False
    for ch in value:
        if esc:
            esc = False
            if depth:
                comments[-1] += ch
            continue
        if ch == "\\":
            esc = True
        elif ch == "(":
            depth += 1
            if depth == 1:
                comments.append("")
                continue
        elif ch == ")" and depth:
            depth -= 1
            if not depth:
                continue
        if depth:
            comments[-1] += ch
        elif ch != "\\":
            rest.append(ch)
    m = _BARE.fullmatch("".join(rest))
    if depth or m is None or not comments:
        return None
    return comments[0].strip(), m.group("spec").lower()


def _wholly_encoded(value: str, defects: list[str] | None) -> tuple[str, str] | None:
    """A mailbox a broken mailer encoded whole (``=?utf-8?b?...?=`` around name and
    address), read as clients read it: decoded, then parsed as one mailbox."""
    stripped = value.strip()
    if not stripped.startswith("=?") or _WORD.sub("", stripped).strip():
        return None
    decoded = decode_words(stripped, [])
    if "=?" in decoded or "@" not in decoded:
        return None
    m = _SIMPLE.fullmatch(decoded)
    if m is None:
        return None
    if defects is not None:
        defects.append("encoded-address")
    name = m.group("q") if m.group("q") is not None else (m.group("n") or "")
    return name, (m.group("bare") or m.group("spec")).lower()


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
    if "," not in value and ";" not in value and value.count("<") < 2:
        return [value] if value.strip() else []  # one mailbox: nothing to split on
    if '"' not in value and "(" not in value and "<" not in value:
        return [p for p in _SEPARATORS.split(value) if p.strip()]
    parts: list[str] = []
    buf: list[str] = []
    quote = angle = closed = False
    depth = 0
    esc = False
    for ch in value:
        if closed and not ch.isspace():  # what follows a mailbox's <address>
            closed = False
            if ch not in ",;(":  # another mailbox with no comma before it
                parts.append("".join(buf))
                buf = []
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
            closed, angle = angle, False
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
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


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
        if _CONTROL.search(ident) or len(ident) > 995:
            continue
        norm = f"<{ident}>"
        if norm not in out:
            out.append(norm)
            if first:
                break
    return out
