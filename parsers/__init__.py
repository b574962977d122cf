"""Turn raw RFC 5322 bytes into a ParsedMessage, safely and fast.

    from parsers import parse, Limits
    msg = parse(raw_bytes)                       # default limits
    msg = parse(raw_bytes, limits=Limits(max_parts=200))

``parse`` raises only ParseError subclasses: HeaderTooLarge and
StructureTooDeep from the pre-scan (before any full parse), Unreadable for
input that is not a message. Everything odd but survivable is reported in
``ParsedMessage.defects`` instead.
"""

from parsers.core import parse
from parsers.errors import HeaderTooLarge, LimitExceeded, ParseError, StructureTooDeep, Unreadable
from parsers.limits import Limits
from parsers.types import Attachment, Envelope, Kind, ParsedMessage, RawMessage, ThreadHints

__all__ = [
    "Attachment",
    "Envelope",
    "HeaderTooLarge",
    "Kind",
    "LimitExceeded",
    "Limits",
    "ParseError",
    "ParsedMessage",
    "RawMessage",
    "StructureTooDeep",
    "ThreadHints",
    "Unreadable",
    "parse",
]
