"""Errors the parser raises; ``gateway.intake.replies`` maps them to answers.

ParseError                  the input cannot be turned into a message at all
├── LimitExceeded           structure over a limit, checked before the full parse
│   ├── HeaderTooLarge      header block over ``max_header_bytes``   -> 552 5.3.4
│   └── StructureTooDeep    MIME depth or part count over the limit  -> 554 5.6.0
└── Unreadable              not a message (e.g. empty of headers and body) -> 554 5.6.0
"""

from __future__ import annotations

__all__ = ["HeaderTooLarge", "LimitExceeded", "ParseError", "StructureTooDeep", "Unreadable"]


class ParseError(Exception):
    """Base of everything the parser raises on purpose."""


class LimitExceeded(ParseError):
    pass


class HeaderTooLarge(LimitExceeded):
    pass


class StructureTooDeep(LimitExceeded):
    pass


class Unreadable(ParseError):
    pass
