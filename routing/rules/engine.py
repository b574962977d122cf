"""Rules at work: the facts a rule may look at, and the walk down a tenant's rules.

Evaluation is a pure function of a message's facts, so ``gateway route
explain`` shows exactly what the pipeline does, and a rule that misses says
which condition missed. The semantics are in routing/rules/__init__.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from parsers.types import ParsedMessage
from routing.language import detect

__all__ = ["Condition", "Decision", "Facts", "Reject", "Rule", "evaluate"]


@dataclass(frozen=True, slots=True)
class Facts:
    """What a rule may look at: the message as parsed, plus what the envelope and store say."""

    parsed: ParsedMessage
    recipient: str  # the tenant address the envelope named
    size: int
    now: datetime  # aware; when the message arrived
    new_ticket: bool | None = None  # None when not known (no threading yet)

    @property
    def sender(self) -> str:
        return self.parsed.from_addr

    @property
    def machine(self) -> bool:
        p = self.parsed
        return p.kind != "normal" or p.auto_submitted not in (None, "", "no")

    def header(self, name: str) -> list[str]:
        name = name.lower()
        return [v for n, v in self.parsed.headers if n == name]


class _LanguageCache:
    """Language detection is the one costly condition: run it once, and only when asked."""

    def __init__(self, facts: Facts) -> None:
        self.facts = facts

    @cached_property
    def value(self) -> str:
        return detect(self.facts.parsed)


@dataclass(frozen=True, slots=True)
class Condition:
    """One key of a rule's ``when``: a name for explain and a test of the facts."""

    key: str
    shown: str  # the value as the admin wrote it, for explain
    test: Callable[[Facts, _LanguageCache], bool] = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Reject:
    code: int
    enhanced: str
    text: str


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    when: tuple[Condition, ...] = ()
    unless: tuple[Condition, ...] = ()
    queue: str | None = None
    priority: str | None = None
    category: str | None = None
    tags: tuple[str, ...] = ()
    assign: str | None = None
    acknowledge: bool | None = None
    stop: bool = False
    drop: bool = False
    reject: Reject | None = None


@dataclass(slots=True)
class Decision:
    """What the rules say about one message for one tenant."""

    queue: str | None = None
    priority: str | None = None
    category: str | None = None
    tags: list[str] = field(default_factory=list)
    assign: str | None = None
    acknowledge: bool | None = None
    drop: str | None = None  # the rule's name
    reject: tuple[str, Reject] | None = None
    matched: list[str] = field(default_factory=list)
    missed: list[tuple[str, str]] = field(default_factory=list)  # (rule, why)
    stopped_by: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "matched": list(self.matched),
            "missed": [{"rule": r, "why": w} for r, w in self.missed],
            "queue": self.queue,
            "priority": self.priority,
            "category": self.category,
            "tags": list(self.tags),
            "assign": self.assign,
            "acknowledge": self.acknowledge,
            "drop": self.drop,
            "reject": None
            if self.reject is None
            else {
                "rule": self.reject[0],
                "reply": f"{self.reject[1].code} {self.reject[1].enhanced} {self.reject[1].text}",
            },
            "stopped_by": self.stopped_by,
        }


def evaluate(rules: Iterable[Rule], facts: Facts) -> Decision:
    """Walk the rules in order; never raises on any message."""
    d = Decision()
    lang = _LanguageCache(facts)
    rules = list(rules)
    for i, rule in enumerate(rules):
        why = _first_miss(rule.when, facts, lang)
        if why is None and rule.unless and _first_miss(rule.unless, facts, lang) is None:
            why = "unless: " + ", ".join(c.key for c in rule.unless) + " all hold"
        if why is not None:
            d.missed.append((rule.name, why))
            continue
        d.matched.append(rule.name)
        if rule.reject is not None:
            d.reject = (rule.name, rule.reject)
        elif rule.drop:
            d.drop = rule.name
        if d.reject is not None or d.drop is not None:
            d.missed.extend(
                (r.name, f"not reached: {rule.name!r} ended the walk") for r in rules[i + 1 :]
            )
            break
        d.queue = rule.queue or d.queue
        d.priority = rule.priority or d.priority
        d.category = rule.category or d.category
        d.assign = rule.assign or d.assign
        if rule.acknowledge is not None:
            d.acknowledge = rule.acknowledge
        d.tags.extend(t for t in rule.tags if t not in d.tags)
        if rule.stop:
            d.stopped_by = rule.name
            d.missed.extend(
                (r.name, f"not reached: {rule.name!r} has stop") for r in rules[i + 1 :]
            )
            break
    return d


def _first_miss(conds: tuple[Condition, ...], facts: Facts, lang: _LanguageCache) -> str | None:
    for c in conds:
        try:
            ok = c.test(facts, lang)
        except Exception:  # a rule must never stop the mail; a broken test is a miss
            ok = False
        if not ok:
            return f"{c.key} = {c.shown}"
    return None
