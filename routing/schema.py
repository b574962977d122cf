"""The config schema kit: one checker that collects every problem with its line.

Every part of gateway.toml (routing/config/, rules, SLA, the ops tables) is
checked through one ``Checker``, so an admin sees every problem at once, each
as ``file:line: key: message``. tomllib gives values but no line numbers, so
``line_index`` walks the text for them (tomlkit keeps layout, not lines).

Why not pydantic or msgspec for the shape: msgspec stops at the first error;
pydantic collects them all, but its messages ("Input should be a valid
integer") and loc tuples would replace the wording admins and the tests know,
most checks here are across fields or tables (a port whose default follows
``security``, an address that two tenants claim, a rule naming a queue), and
``gateway ingest`` loads this config once per message, so a library's import
and model building would be paid by every message an MTA pipes in.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["LOOPBACK_HOSTS", "Checker", "keys_of", "line_index", "line_of"]

# Hosts a cleartext connection may go to: nothing on it leaves this machine.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def line_index(text: str) -> dict[str, int]:
    """Map key paths such as ``tenants[1].outbound.password`` to 1-based lines.

    Table headers and keys are walked line by line; the inside of multi-line
    strings is skipped, and quoted parts of dotted keys are unquoted.
    """
    index: dict[str, int] = {}
    counters: dict[str, int] = {}
    prefix = ""
    in_string: str | None = None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if in_string is not None:
            if line.count(in_string) % 2 == 1:
                in_string = None
            continue
        if line.startswith("[["):
            name = _dotted(line[2:].split("]]", 1)[0])
            parent, _, leaf = name.rpartition(".")
            base = _resolve(parent, counters) if parent else ""
            key = f"{base}.{leaf}" if base else leaf
            counters[key] = counters.get(key, -1) + 1
            prefix = f"{key}[{counters[key]}]"
            index.setdefault(prefix, n)
            index.setdefault(key, n)  # "expected a table, not [[...]]" points here
        elif line.startswith("["):
            prefix = _resolve(_dotted(line[1:].split("]", 1)[0]), counters)
            index.setdefault(prefix, n)
        elif "=" in line and not line.startswith("#"):
            name, _, rest = line.partition("=")
            key = _dotted(name)
            index.setdefault(f"{prefix}.{key}" if prefix else key, n)
            for quote in ('"""', "'''"):
                if rest.count(quote) % 2 == 1:
                    in_string = quote
                    break
    return index


def _dotted(name: str) -> str:
    return ".".join(part.strip().strip("\"'") for part in name.split("."))


def _resolve(name: str, counters: dict[str, int]) -> str:
    out = ""
    for part in name.split("."):
        out = f"{out}.{part}" if out else part
        if out in counters:
            out = f"{out}[{counters[out]}]"
    return out


def line_of(index: dict[str, int], key: str) -> int:
    """The line of ``key``, else of the nearest table above it; 0 when none is known."""
    probe = key
    while probe and probe not in index:
        probe = probe.rsplit(".", 1)[0] if "." in probe else ""
    return index.get(probe, 0)


@functools.cache
def keys_of(cls: type, *extra: str, without: frozenset[str] = frozenset()) -> frozenset[str]:
    """The keys a table may have: the fields of the dataclass it becomes (not those it
    works out itself, ``init=False``)."""
    return frozenset(f.name for f in dataclasses.fields(cls) if f.init) - without | set(extra)


class Checker:
    """Reads values out of parsed TOML, noting every problem instead of raising."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = line_index(text)
        self.problems: list[str] = []

    def error(self, key: str, message: str) -> None:
        self.problems.append(f"{self.path}:{line_of(self.lines, key)}: {key}: {message}")

    def take(self, table: dict[str, Any], key: str, base: str, kind: type, default: Any) -> Any:
        """``table[key]`` if it is a ``kind`` (an int will do for a float), else ``default``."""
        value = table.get(key, default)
        if value is default:
            return default
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.error(f"{base}.{key}" if base else key, f"expected {kind.__name__}")
            return default
        return value

    def unknown(self, table: dict[str, Any], allowed: typing.AbstractSet[str], base: str) -> None:
        for key in table:
            if key not in allowed:
                self.error(f"{base}.{key}" if base else key, "unknown key")

    def table(self, raw: Any, base: str) -> dict[str, Any] | None:
        """``raw`` if it is a table; else None, noted."""
        if isinstance(raw, dict):
            return raw
        self.error(base, "expected a table")
        return None

    def tables(self, raw: Any, base: str, header: str) -> Iterator[tuple[int, str, dict[str, Any]]]:
        """An array of tables (``[[header]]``): each table's position, key path and
        itself, in order; what is no table is noted and skipped."""
        if not isinstance(raw, list):
            self.error(base, f"expected [[{header}]] tables")
            return
        for i, item in enumerate(raw):
            key = f"{base}[{i}]"
            if self.table(item, key) is not None:
                yield i, key, item

    def fields(self, table: dict[str, Any], base: str, cls: type, *names: str) -> dict[str, Any]:
        """The named fields of dataclass ``cls`` (int, float, str or bool), each its default
        when absent or of the wrong type."""
        hints = _hints(cls)
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        return {n: self.take(table, n, base, hints[n], defaults[n]) for n in names}


@functools.cache
def _hints(cls: type) -> dict[str, type]:
    return typing.get_type_hints(cls)


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b|bytes)?\s*", re.IGNORECASE)


def parse_size(value: object) -> int | None:
    """A size key's value in bytes: a whole number, or a string such as "10 MiB",
    "512KiB", "2 MB" (KiB/MiB/GiB are powers of 1024, KB/MB/GB of 1000); None if it
    is neither, so the caller names the key."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 0 else None
    if not isinstance(value, str):
        return None
    m = _SIZE.fullmatch(value)
    if m is None:
        return None
    unit = (m.group(2) or "").lower()
    factor = 1
    if unit not in ("", "b", "bytes"):
        factor = (1024 if "i" in unit else 1000) ** ("kmg".index(unit[0]) + 1)
    return int(float(m.group(1)) * factor)

