"""A message's top-level headers looked up by name in one dict, not one scan each.

``Message.get`` walks every header and lower-cases every name for each lookup;
assembling a ParsedMessage asks for some twenty names (autoreply's rules, the
addresses, the thread hints) over a header of a dozen or more fields, which cost
the parse worker more than the lookups' answers are worth. The values are the
ones ``Message.get`` answers (``items()``: the policy's fetch, so a compat32
value with 8-bit bytes is still a ``Header``), first of a name first.
"""

from __future__ import annotations

from email.message import Message
from typing import Any

__all__ = ["HeaderIndex"]


class HeaderIndex:
    """``get`` and ``get_all`` as ``Message`` answers them, from one pass over the header."""

    __slots__ = ("_by_name", "items")

    def __init__(self, msg: Message) -> None:
        self.items: list[tuple[str, Any]] = msg.items()
        by_name: dict[str, list[Any]] = {}
        for name, value in self.items:
            by_name.setdefault(name.lower(), []).append(value)
        self._by_name = by_name

    def get(self, name: str, failobj: Any = None) -> Any:
        values = self._by_name.get(name.lower())
        return values[0] if values else failobj

    def get_all(self, name: str, failobj: Any = None) -> list[Any] | Any:
        values = self._by_name.get(name.lower())
        return list(values) if values else failobj
