"""Plain value types that flow from the parser to every later stage.

They are frozen so a stage can never change what an earlier stage saw; the
store, routing and the CLI all read these and nothing else of the parser.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Attachment", "Envelope", "Kind", "ParsedMessage", "RawMessage", "ThreadHints"]

Kind = Literal["normal", "auto_reply", "bounce", "list"]


def _reduce(self: Any) -> tuple[type, tuple[Any, ...]]:
    """Pickled as the class and its fields' values in order, rebuilt by ``__init__``.

    A parse worker pickles every ParsedMessage it sends back and the daemon unpickles
    it: a frozen slots dataclass's default state goes through ``dataclasses.fields``
    on both sides, at about a third more CPU than this (gateway/intake/parse_worker.py).
    """
    return type(self), tuple([getattr(self, name) for name in type(self).__match_args__])


@dataclass(frozen=True, slots=True)
class Envelope:
    """What the SMTP conversation (or the MTA pipe, or IMAP) told us.

    Routing trusts only this, never the headers: a ``To:`` can say anything.
    """

    mail_from: str  # "" for the null reverse-path
    rcpt_tos: tuple[str, ...]
    peer: str = ""


@dataclass(frozen=True, slots=True)
class RawMessage:
    envelope: Envelope
    data: bytes
    source: str = "smtp"  # smtp | ingest | imap | import


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content_type: str
    size: int
    sha256: str
    inline: bool
    content_id: str | None
    data: bytes = field(repr=False, compare=False)

    __reduce__ = _reduce

    def as_row(self) -> dict[str, object]:
        """What is stored and shown of an attachment: everything but its bytes."""
        return {
            "filename": self.filename,
            "content_type": self.content_type,
            "size": self.size,
            "sha256": self.sha256,
            "inline": self.inline,
            "content_id": self.content_id,
        }


@dataclass(frozen=True, slots=True)
class ThreadHints:
    """Every clue the message carries about the ticket it continues.

    The parser only extracts; ``routing.threader`` decides, scoped by tenant.
    Message-IDs are normalised to ``<local@domain>`` with whitespace removed.
    """

    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    subject_tag: str | None = None  # "ACME-12" from "[ACME-12]"; brackets dropped
    reply_token: str | None = None  # the part after "+" in a recipient local part

    __reduce__ = _reduce


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    message_id: str | None  # normalised "<id>", or None when absent/unusable
    subject: str  # decoded, folded onto one line
    from_addr: str  # lower-cased addr-spec, "" when unreadable
    from_name: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    reply_to: tuple[str, ...]
    date: str | None  # ISO 8601, or None when absent/unreadable
    kind: Kind
    text: str  # whole body as text (HTML converted); LF line ends
    reply_text: str  # only what the sender wrote this time
    html: str | None  # sanitised with nh3, or None when there was no HTML part
    attachments: tuple[Attachment, ...]
    thread_hints: ThreadHints
    defects: tuple[str, ...]
    received_count: int = 0  # Received: headers, for loop detection
    auto_submitted: str | None = None  # raw header value, lower-cased
    loop_markers: tuple[str, ...] = ()  # X-Loop values, lower-cased
    content_types: tuple[str, ...] = ()  # every MIME type in the tree, sorted (scan policy)
    dsn: tuple[tuple[str, str, str], ...] = ()  # bounces: (recipient, action, status) per block
    # Top-level headers as (lower-cased name, decoded value), bounded: what routing rules read.
    headers: tuple[tuple[str, str], ...] = ()
    # ``html`` without the quoted mail below the reply (parsers/html_quotes.py), sanitised:
    # what an agent's HTML answer says this time, as ``reply_text`` is for text.
    html_reply: str | None = None
    # The language routing/language.py tells for this message, when the parse worker
    # was asked to tell it (gateway/intake/parse_worker.py); None: not told yet.
    language: str | None = None

    __reduce__ = _reduce
