"""The machine-readable parts of a delivery report (RFC 3464), read for the bounce logic."""

from __future__ import annotations

from email.message import Message

from parsers.mime import parse_header_block

__all__ = ["delivery_status", "returned_headers"]


def delivery_status(part: Message) -> list[tuple[str, str, str]]:
    """(recipient, action, status) per recipient block of a DSN (RFC 3464)."""
    payload = part.get_payload()
    blocks = [b for b in payload if isinstance(b, Message)] if isinstance(payload, list) else []
    out: list[tuple[str, str, str]] = []
    for block in blocks:
        rcpt = str(block.get("Final-Recipient") or block.get("Original-Recipient") or "")
        if not rcpt:
            continue
        address = rcpt.split(";", 1)[-1].strip().strip("<>").lower()
        action = str(block.get("Action", "")).strip().lower()
        status = str(block.get("Status", "")).split("(", 1)[0].strip()
        if address and len(address) <= 320:
            out.append((address, action[:32], status[:16]))
    return out


def returned_headers(data: bytes) -> Message:
    """The returned headers of a bounce (text/rfc822-headers), for threading it."""
    return parse_header_block(data.lstrip(b"\r\n"))
