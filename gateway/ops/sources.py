"""Where an import reads mail from: an mbox file, a Maildir, a folder of .eml, one .eml.

An import must put parents before replies (threading only finds a Message-ID
that is already stored), but exports are not always in date order, and a
real mbox can be gigabytes. So a source is read twice: once for headers only
(Message-ID, In-Reply-To, References, Date), which gives the order, then
once per message, in that order, for its bytes. Only one message body is in
memory at a time.
"""

from __future__ import annotations

import mailbox
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import parseaddr, parsedate_to_datetime
from pathlib import Path
from typing import BinaryIO

from parsers.addresses import msg_ids, normalise_msg_id
from parsers.mime import head_of

__all__ = [
    "Entry",
    "Locator",
    "MailSource",
    "SourceError",
    "SourceUnreadable",
    "envelope_sender",
    "import_order",
    "index",
    "open_source",
]

Locator = int | str | Path  # an mbox key, a Maildir key, or a file

_HEAD_LIMIT = 256 * 1024  # more header than this is the pipeline's to refuse, not ours to read
_HEADER_LINE = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")


class SourceError(Exception):
    """The path cannot be imported at all: it is no mailbox we know."""


class SourceUnreadable(SourceError):
    """The path cannot be read (missing, no permission): nothing was looked at."""


@dataclass(slots=True)
class Entry:
    """One message as the header pass saw it; ``parents`` are positions in the same source."""

    position: int  # in file order
    locator: Locator  # mailbox key or file path
    message_id: int | None  # interned, see ``_Interner``
    references: tuple[int, ...]  # In-Reply-To first, then References newest first
    when: float | None  # Date as a POSIX timestamp, when it parses
    parents: tuple[int, ...] = ()


class MailSource:
    """One importable path: ``kind`` is mbox, maildir, eml-folder or eml."""

    def __init__(self, path: Path, kind: str) -> None:
        self.path = path
        self.kind = kind
        self._box: mailbox.Mailbox | None = None
        self._files: list[Path] = []
        if kind == "mbox":
            self._box = mailbox.mbox(path, factory=None, create=False)
        elif kind == "maildir":
            self._box = mailbox.Maildir(path, factory=None, create=False)
        elif kind == "eml-folder":
            self._files = sorted(
                p for p in path.rglob("*") if p.suffix.lower() == ".eml" and p.is_file()
            )
        else:
            self._files = [path]

    def locators(self) -> list[Locator]:
        """Every message, in file order (an mbox is scanned once for where each one starts)."""
        if self._box is None:
            return list(self._files)
        try:
            return sorted(self._box.keys())  # mbox keys are file order; Maildir's are arbitrary
        except OSError as exc:
            raise SourceUnreadable(f"{self.path}: {exc.strerror or exc}") from None

    def head(self, locator: Locator) -> bytes:
        """The header block only, without reading the body."""
        if self._box is None:
            assert isinstance(locator, Path)
            with open(locator, "rb") as f:
                return _read_head(f)
        f = self._box.get_file(locator)
        try:
            return _read_head(f)
        finally:
            f.close()

    def read(self, locator: Locator) -> bytes:
        if self._box is None:
            assert isinstance(locator, Path)
            return locator.read_bytes()
        return self._box.get_bytes(locator)

    def name(self, locator: Locator) -> str:
        """How a message is named in a warning: its file, or its key in the mailbox."""
        return str(locator) if isinstance(locator, Path) else f"{self.path}#{locator}"

    def close(self) -> None:
        if self._box is not None:
            self._box.close()


def open_source(path: Path) -> MailSource:
    """Recognise the format; a path that is none of them is refused before anything is read."""
    try:
        if path.is_dir():
            if (path / "cur").is_dir() and (path / "new").is_dir():
                return MailSource(path, "maildir")
            source = MailSource(path, "eml-folder")
            if not source.locators():
                raise SourceError(f"{path}: not a Maildir and holds no .eml files")
            return source
        with open(path, "rb") as f:
            start = f.read(4096)
    except OSError as exc:
        raise SourceUnreadable(f"{path}: {exc.strerror or exc}") from None
    if start.startswith(b"From "):
        return MailSource(path, "mbox")
    if _HEADER_LINE.match(start.lstrip(b"\r\n")):
        return MailSource(path, "eml")
    what = "empty" if not start else "not an mbox, a Maildir or an .eml message"
    raise SourceError(f"{path}: {what}")


def index(source: MailSource, locators: list[Locator]) -> Iterator[Entry]:
    """The header pass, in file order; an unreadable head yields an entry with no headers."""
    ids = _Interner()
    for position, locator in enumerate(locators):
        try:
            head = source.head(locator)
        except OSError:
            head = b""  # read() will fail again and say why
        yield _entry(position, locator, head, ids)


def import_order(entries: list[Entry]) -> list[Entry]:
    """By date (stable; an undated message keeps its neighbour's), then every message after
    the messages it references in the same source, so the threader always finds the parent.

    A reference cycle (forged or broken headers) is cut where it closes.
    """
    last = float("-inf")
    keys: list[tuple[float, int]] = []
    for e in entries:
        last = e.when if e.when is not None else last
        keys.append((last, e.position))
    by_date = sorted(entries, key=lambda e: keys[e.position])
    first: dict[int, int] = {}
    for e in by_date:
        if e.message_id is not None:
            first.setdefault(e.message_id, e.position)
    for e in entries:
        e.parents = tuple(
            dict.fromkeys(p for r in e.references if (p := first.get(r, e.position)) != e.position)
        )
    placed = [False] * len(entries)
    order: list[Entry] = []
    for e in by_date:
        if placed[e.position]:
            continue
        placed[e.position] = True
        stack = [(e, iter(e.parents))]
        while stack:  # depth-first: a message goes out once its parents have
            node, parents = stack[-1]
            for p in parents:
                if not placed[p]:
                    placed[p] = True
                    stack.append((entries[p], iter(entries[p].parents)))
                    break
            else:
                stack.pop()
                order.append(node)
    return order


def envelope_sender(data: bytes) -> str:
    """Return-Path, else From: what the MTA said or would have said (``<>`` for a bounce)."""
    head = BytesHeaderParser(policy=compat32).parsebytes(head_of(data))
    rp = head.get("Return-Path")
    if rp is not None:
        return parseaddr(str(rp))[1]
    return parseaddr(str(head.get("From", "")))[1]


class _Interner:
    """Message-IDs as small ints: a big mailbox repeats the same ids in many References."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}

    def __call__(self, mid: str) -> int:
        return self._ids.setdefault(mid, len(self._ids))


def _entry(position: int, locator: Locator, head: bytes, ids: _Interner) -> Entry:
    msg = BytesHeaderParser(policy=compat32).parsebytes(head)

    def get(name: str) -> str | None:
        values = msg.get_all(name)
        return " ".join(str(v) for v in values) if values else None

    mid = normalise_msg_id(get("Message-ID"))
    irt = normalise_msg_id(get("In-Reply-To"))
    refs = [irt] if irt else []
    refs.extend(r for r in reversed(msg_ids(get("References"))) if r != irt)
    return Entry(
        position=position,
        locator=locator,
        message_id=ids(mid) if mid else None,
        references=tuple(ids(r) for r in refs),
        when=_timestamp(get("Date")),
    )


def _timestamp(value: str | None) -> float | None:
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        return when.timestamp()
    except (OverflowError, ValueError, OSError):
        return None


def _read_head(f: BinaryIO) -> bytes:
    lines: list[bytes] = []
    size = 0
    while size < _HEAD_LIMIT:
        line = f.readline(_HEAD_LIMIT)
        if not line or line in (b"\n", b"\r\n"):
            break
        lines.append(line)
        size += len(line)
    return b"".join(lines)
