"""The files our mails carry: a client's attachments in an agent's notice, an agent's
in the relay to the client.

They are read from the blob store as stored (every one was scanned before it was
stored), inside the transaction that queues the mail, so a blob written by that very
transaction is found. A notice carries the client's files up to ``[outbound]
notice_attachments_max``; each one it does not carry is named in it, with its size
and the link to the ticket's page: never silently left out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path

from sqlalchemy.engine import Connection

from outbound.mime import Part
from parsers.types import Attachment
from store.blobs_db import read_in_transaction

__all__ = ["LeftOut", "carried", "human_size", "left_out_text", "notice_html"]


@dataclass(frozen=True, slots=True)
class LeftOut:
    """The files a mail does not carry, and why: "limit" (over the notice's limit),
    "caution" (the sender is not trusted with it), "missing" (no longer stored)."""

    files: tuple[tuple[str, int, str], ...]  # (name, size, reason)
    limit: int


def carried(
    conn: Connection,
    attachments: Sequence[Attachment],
    folder: Path,
    *,
    limit: int | None,
    withhold: bool = False,
) -> tuple[list[Part], LeftOut]:
    """The stored bytes of ``attachments`` that fit in ``limit`` (None: all), in the
    message's order; a file that does not fit is passed over for a smaller one after
    it. ``withhold``: carry none (a cautioned message), name them all."""
    budget = limit
    parts: list[Part] = []
    left: list[tuple[str, int, str]] = []
    for a in attachments:
        if withhold:
            left.append((a.filename, a.size, "caution"))
            continue
        if budget is not None and a.size > budget:
            left.append((a.filename, a.size, "limit"))
            continue
        data = read_in_transaction(conn, a.sha256, folder)
        if data is None:
            left.append((a.filename, a.size, "missing"))
            continue
        if budget is not None:
            budget -= len(data)
        parts.append(Part(a.filename, a.content_type, data, a.content_id, a.inline))
    return parts, LeftOut(tuple(left), limit or 0)


def human_size(size: int) -> str:
    """1536 -> "1.5 KiB": the size as an agent reads it."""
    if size < 1024:
        return f"{size} bytes"
    value, unit = size / 1024, "KiB"
    for bigger in ("MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"


_WHY = {
    "limit": "over this mail's limit of {limit} for attachments",
    "caution": "withheld: see the warning above about this sender",
    "missing": "no longer stored",
}


def left_out_text(left: LeftOut, ticket_url: str) -> str:
    """The list a notice starts with when it does not carry every file of the message."""
    lines = [f"Not attached to this mail ({len(left.files)} of the client's files):"]
    for name, size, why in left.files:
        reason = _WHY[why].format(limit=human_size(left.limit))
        lines.append(f"  - {name} ({human_size(size)}; {reason})")
    if ticket_url:
        lines += ["Open them on the ticket's page:", ticket_url]
    else:
        lines.append(
            "They are kept with the ticket; no web side is configured ([http]), so "
            "there is no page to link to."
        )
    return "\n".join(lines) + "\n\n"


_LINK = re.compile(r"https?://[^\s<>\"]+")


def notice_html(marked: str, mark: str, client_html: str | None) -> str | None:
    """The notice as HTML: our text around the client's own (sanitised) HTML, so their
    inline images show where they put them; None when the template does not show the
    client's text exactly once (then the mail is text only)."""
    if client_html is None or marked.count(mark) != 1:
        return None
    before, after = marked.split(mark)

    def block(text: str) -> str:
        linked = _LINK.sub(lambda m: f'<a href="{m.group(0)}">{m.group(0)}</a>', escape(text))
        return f'<div style="white-space:pre-wrap">{linked}</div>' if text.strip() else ""

    return (
        f"<!DOCTYPE html><html><body>{block(before)}"
        f'<div style="border-left:3px solid #ccc;padding-left:8px">{client_html}</div>'
        f"{block(after)}</body></html>"
    )
