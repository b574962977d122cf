"""Commands an agent writes on the first lines of a reply: ``#note``, ``#close``,
``#cc add ADDR`` ...

Only leading lines count, so a ``#close`` quoted further down, or a hashtag in
the middle of an answer, never acts on the ticket. A leading line that looks like a
command (``#`` and a word) but is none (``#nte``) is a problem like a bad value: the
reply that carries it is refused whole (outbound/reactions.py), so a mistyped
``#note`` never reaches a client. ``#1 thing`` or ``# heading`` are text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["COMMANDS_HELP", "PRIORITIES", "Commands", "split_commands"]

PRIORITIES = ("low", "normal", "high", "urgent")
COMMANDS_HELP = (
    "#note, #close, #open, #pending, #assign <agent address>, "
    f"#priority <{'|'.join(PRIORITIES)}>, #cc add <address>, #cc remove <address>"
)
_WORD = re.compile(r"^[a-z][a-z_-]*$")
_ADDR = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$")


@dataclass(frozen=True, slots=True)
class Commands:
    note: bool = False
    status: str | None = None  # "open" | "pending" | "closed"
    assign: str | None = None
    priority: str | None = None
    problems: tuple[str, ...] = field(default=())
    cc_add: tuple[str, ...] = ()  # addresses to make participants of the ticket
    cc_remove: tuple[str, ...] = ()  # participants to take off it

    @property
    def any(self) -> bool:
        changes = self.status or self.assign or self.priority or self.cc_add or self.cc_remove
        return bool(self.note or changes)


def split_commands(text: str) -> tuple[Commands, str]:
    """(the commands, the text without its command lines)."""
    lines = text.split("\n")
    i = 0
    note = False
    status = assign = priority = None
    problems: list[str] = []
    cc: dict[str, list[str]] = {"add": [], "remove": []}
    while i < len(lines):
        line = lines[i].strip()
        if not line:
            i += 1
            continue
        if not line.startswith("#"):
            break
        word, _, arg = line[1:].partition(" ")
        word, arg = word.lower(), arg.strip()
        if word == "note":
            note = True
        elif word == "close":
            status = "closed"
        elif word in ("open", "reopen"):
            status = "open"
        elif word == "pending":
            status = "pending"
        elif word == "assign":
            assign = arg.lower() or None
            if not assign:
                problems.append("#assign needs an agent address")
        elif word == "priority":
            if arg.lower() in PRIORITIES:
                priority = arg.lower()
            else:
                said = f" {arg}" if arg else ""
                problems.append(f"#priority{said}: use one of {', '.join(PRIORITIES)}")
        elif word == "cc":
            verb, _, addr = arg.partition(" ")
            verb, addr = verb.lower(), addr.strip().lower()
            if verb in cc and _ADDR.match(addr):
                cc[verb].append(addr)
            else:
                problems.append("#cc needs add or remove and one plain address")
        elif _WORD.match(word):
            problems.append(f"#{word}: unknown command; the commands are {COMMANDS_HELP}")
            break
        else:
            break
        i += 1
    rest = "\n".join(lines[i:]).strip("\n")
    commands = Commands(
        note, status, assign, priority, tuple(problems), tuple(cc["add"]), tuple(cc["remove"])
    )
    return commands, rest
