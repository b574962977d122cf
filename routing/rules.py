"""Per-tenant routing rules from gateway.toml: conditions in, actions out.

Rules are data, not code: an admin writes them in the config file, where they
can be reviewed, diffed and tested with ``gateway route explain``, and they are
validated as a whole before a reload may replace the running set. Evaluation is
a pure function of a message's facts, so explain shows exactly what the
pipeline does, and a rule that misses says which condition missed.

Semantics, in the order admins read them (RT scrips and Zammad triggers are
the models, minus their hidden state):

* rules run top to bottom; every rule whose ``when`` holds (all conditions;
  a list means any of its values) and whose ``unless`` does not, acts;
* a later rule's queue, priority, category and assignee replace an earlier
  one's; tags accumulate; ``stop`` ends the walk after that rule;
* ``drop`` and ``reject`` end it at once: a dropped message is answered 250
  and not stored (an audit event says which rule); a rejected one gets the
  rule's SMTP reply, and nothing is stored for any tenant.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, time
from functools import cached_property
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from parsers.types import ParsedMessage

__all__ = [
    "CONDITIONS",
    "Decision",
    "Facts",
    "Reject",
    "Rule",
    "build_rules",
    "evaluate",
]

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_PRIORITIES = ("low", "normal", "high", "urgent")  # routing.commands.PRIORITIES, kept in step
_HOURS = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")
_REJECT = re.compile(r"^(5[0-5]\d) (5\.\d{1,3}\.\d{1,3}) (\S.*)$")
_REGEX_BUDGET = 100_000  # characters of body a body regex looks at


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
        for v in self.facts.header("content-language"):
            code = v.split(",")[0].strip().split("-")[0].lower()
            if re.fullmatch(r"[a-z]{2,3}", code):
                return code
        text = (self.facts.parsed.reply_text or self.facts.parsed.text)[:2000]
        if len(text.strip()) < 12:
            return ""
        from py3langid.langid import classify  # lazy: loads a model on first use

        lang, _score = classify(text)
        return str(lang)


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


# ----------------------------------------------------------------------------
# Building rules from the config file (called by routing.config with its checker)


class Checker(Protocol):
    def error(self, key: str, message: str) -> None: ...


def _strings(c: Checker, value: Any, key: str) -> list[str] | None:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        c.error(key, "expected a string or a non-empty list of strings")
        return None
    return value


def _regex(c: Checker, value: Any, key: str) -> list[re.Pattern[str]] | None:
    values = _strings(c, value, key)
    if values is None:
        return None
    out = []
    for v in values:
        try:
            out.append(re.compile(v, re.IGNORECASE | re.MULTILINE))
        except re.error as exc:
            c.error(key, f"bad regular expression {v!r}: {exc}")
            return None
    return out


def _bool(c: Checker, value: Any, key: str) -> bool | None:
    if not isinstance(value, bool):
        c.error(key, "expected true or false")
        return None
    return value


def _size(c: Checker, value: Any, key: str) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        c.error(key, "expected a size in bytes (an integer, 0 or more)")
        return None
    return value


def _cond_from(c: Checker, v: Any, key: str, ctx: _Ctx) -> Condition | None:
    values = _strings(c, v, key)
    if values is None:
        return None
    wanted = {x.lower() for x in values}
    return Condition("from", _show(values), lambda f, _l: f.sender in wanted)


def _cond_from_domain(c: Checker, v: Any, key: str, ctx: _Ctx) -> Condition | None:
    values = _strings(c, v, key)
    if values is None:
        return None
    domains = tuple(x.lower().lstrip("@").lstrip(".") for x in values)

    def test(f: Facts, _l: _LanguageCache) -> bool:
        dom = f.sender.rpartition("@")[2]
        return bool(dom) and any(dom == d or dom.endswith("." + d) for d in domains)

    return Condition("from_domain", _show(values), test)


def _cond_to(c: Checker, v: Any, key: str, ctx: _Ctx) -> Condition | None:
    values = _strings(c, v, key)
    if values is None:
        return None
    wanted = {x.lower() for x in values}
    for x in sorted(wanted - set(ctx.addresses)):
        c.error(key, f"{x} is not one of this tenant's addresses {list(ctx.addresses)}")
    return Condition("to", _show(values), lambda f, _l: f.recipient in wanted)


def _cond_subject(c: Checker, v: Any, key: str, ctx: _Ctx) -> Condition | None:
    pats = _regex(c, v, key)
    if pats is None:
        return None
    return Condition(
        "subject", _show(v), lambda f, _l: any(p.search(f.parsed.subject) for p in pats)
    )


def _cond_body(c: Checker, v: Any, key: str, ctx: _Ctx) -> Condition | None:
    pats = _regex(c, v, key)
    if pats is None:
        return None

    def test(f: Facts, _l: _LanguageCache) -> bool:
        text = f.parsed.text[:_REGEX_BUDGET]
        return any(p.search(text) for p in pats)

    return Condition("body", _show(v), test)


def _cond_header(c: Checker, v: Any, key: str, ctx: _Ctx) -> Condition | None:
    if not isinstance(v, dict) or not v:
        c.error(key, 'expected a table of header names and regexes, e.g. { "X-Priority" = "^1" }')
        return None
    tests: list[tuple[str, re.Pattern[str] | None]] = []
    for name, pattern in v.items():
        if not re.fullmatch(r"[!-9;-~]+", name):
            c.error(f"{key}.{name}", "not a header name")
            return None
        if not isinstance(pattern, str):
            c.error(f"{key}.{name}", 'expected a regex ("" means: present)')
            return None
        try:
            tests.append((name, re.compile(pattern, re.IGNORECASE) if pattern else None))
        except re.error as exc:
            c.error(f"{key}.{name}", f"bad regular expression {pattern!r}: {exc}")
            return None

    def test(f: Facts, _l: _LanguageCache) -> bool:
        for name, pat in tests:
            values = f.header(name)
            if not values or (pat is not None and not any(pat.search(x) for x in values)):
                return False
        return True

    return Condition("header", _show(v), test)


def _cond_has_attachment(c: Checker, v: Any, key: str, ctx: _Ctx) -> Condition | None:
    want = _bool(c, v, key)
    if want is None:
        return None
    return Condition(
        "has_attachment",
        _show(v),
        lambda f, _l: any(not a.inline for a in f.parsed.attachments) == want,
    )


def _cond_larger_than(c: Checker, v: Any, key: str, ctx: _Ctx) -> Condition | None:
    n = _size(c, v, key)
    return None if n is None else Condition("larger_than", str(n), lambda f, _l: f.size > n)


def _cond_smaller_than(c: Checker, v: Any, key: str, ctx: _Ctx) -> Condition | None:
    n = _size(c, v, key)
    return None if n is None else Condition("smaller_than", str(n), lambda f, _l: f.size < n)


def _cond_language(c: Checker, v: Any, key: str, ctx: _Ctx) -> Condition | None:
    values = _strings(c, v, key)
    if values is None:
        return None
    wanted = {x.lower() for x in values}
    for x in sorted(wanted):
        if not re.fullmatch(r"[a-z]{2,3}", x):
            c.error(key, f"{x!r} is not an ISO 639 language code such as 'en' or 'de'")
    return Condition("language", _show(values), lambda f, lang: lang.value in wanted)


def _cond_auto_submitted(c: Checker, v: Any, key: str, ctx: _Ctx) -> Condition | None:
    want = _bool(c, v, key)
    if want is None:
        return None
    return Condition("auto_submitted", _show(v), lambda f, _l: f.machine == want)


def _cond_new_ticket(c: Checker, v: Any, key: str, ctx: _Ctx) -> Condition | None:
    want = _bool(c, v, key)
    if want is None:
        return None
    return Condition("new_ticket", _show(v), lambda f, _l: f.new_ticket is want)


def _cond_days(c: Checker, v: Any, key: str, ctx: _Ctx) -> Condition | None:
    values = _strings(c, v, key)
    if values is None:
        return None
    days = {x.lower()[:3] for x in values}
    for x in sorted(days - set(_DAYS)):
        c.error(key, f"{x!r} is not a day; use {', '.join(_DAYS)}")
    tz = ctx.tz
    return Condition(
        "days", _show(values), lambda f, _l: _DAYS[f.now.astimezone(tz).weekday()] in days
    )


def _cond_hours(c: Checker, v: Any, key: str, ctx: _Ctx) -> Condition | None:
    m = _HOURS.match(v) if isinstance(v, str) else None
    if m is None:
        c.error(key, 'expected "HH:MM-HH:MM" (24-hour clock, e.g. "09:00-17:30")')
        return None
    h1, m1, h2, m2 = (int(x) for x in m.groups())
    start = time(h1, m1)
    end = time(23, 59, 59, 999999) if h2 == 24 else time(h2, m2)
    tz = ctx.tz

    def test(f: Facts, _l: _LanguageCache) -> bool:
        t = f.now.astimezone(tz).time()
        return start <= t < end if start <= end else (t >= start or t < end)  # over midnight

    return Condition("hours", v, test)


CONDITIONS: Mapping[str, Callable[[Checker, Any, str, _Ctx], Condition | None]] = {
    "from": _cond_from,
    "from_domain": _cond_from_domain,
    "to": _cond_to,
    "subject": _cond_subject,
    "body": _cond_body,
    "header": _cond_header,
    "has_attachment": _cond_has_attachment,
    "larger_than": _cond_larger_than,
    "smaller_than": _cond_smaller_than,
    "language": _cond_language,
    "auto_submitted": _cond_auto_submitted,
    "new_ticket": _cond_new_ticket,
    "days": _cond_days,
    "hours": _cond_hours,
}
_WHEN_ONLY = {"timezone"}
_ACTIONS = {
    "queue", "priority", "category", "tags", "assign", "acknowledge", "stop", "drop", "reject",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Ctx:
    addresses: tuple[str, ...]
    queues: tuple[str, ...]
    agents: tuple[str, ...]
    tz: ZoneInfo


def _show(v: Any) -> str:
    if isinstance(v, list) and len(v) == 1:
        v = v[0]
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    return str(v)


def build_rules(
    c: Checker,
    raw: Any,
    base: str,
    *,
    addresses: tuple[str, ...],
    queues: tuple[str, ...],
    agents: tuple[str, ...],
) -> tuple[Rule, ...]:
    """``[[tenants.rules]]`` tables -> Rules; every problem goes to the checker, with its key."""
    if not isinstance(raw, list):
        c.error(f"{base}.rules", "expected [[tenants.rules]] tables")
        return ()
    out: list[Rule] = []
    names: set[str] = set()
    for i, r in enumerate(raw):
        rb = f"{base}.rules[{i}]"
        if not isinstance(r, dict):
            c.error(rb, "expected a table")
            continue
        for k in r:
            if k not in ("name", "when", "unless", "then"):
                c.error(f"{rb}.{k}", "unknown key (a rule has name, when, unless and then)")
        name = r.get("name", f"rule {i + 1}")
        if not isinstance(name, str) or not name.strip():
            c.error(f"{rb}.name", "expected a non-empty string")
            name = f"rule {i + 1}"
        elif name in names:
            c.error(f"{rb}.name", f"duplicate rule name {name!r}")
        names.add(name)
        when = r.get("when", {})
        unless = r.get("unless", {})
        tz = _timezone(c, when, unless, rb)
        ctx = _Ctx(addresses, queues, agents, tz)
        conds = _conditions(c, when, f"{rb}.when", ctx)
        vetoes = _conditions(c, unless, f"{rb}.unless", ctx)
        rule = _actions(c, r.get("then"), f"{rb}.then", ctx, name)
        if rule is not None:
            out.append(
                Rule(
                    name=name,
                    when=conds,
                    unless=vetoes,
                    **{k: getattr(rule, k) for k in _ACTIONS},
                )
            )
    return tuple(out)


def _timezone(c: Checker, when: Any, unless: Any, rb: str) -> ZoneInfo:
    for part, table in (("when", when), ("unless", unless)):
        if isinstance(table, dict) and "timezone" in table:
            name = table["timezone"]
            try:
                return ZoneInfo(name) if isinstance(name, str) else ZoneInfo("")
            except (ZoneInfoNotFoundError, ValueError):
                c.error(f"{rb}.{part}.timezone", f"unknown time zone {name!r}")
    return ZoneInfo("UTC")


def _conditions(c: Checker, raw: Any, base: str, ctx: _Ctx) -> tuple[Condition, ...]:
    if not isinstance(raw, dict):
        c.error(base, "expected a table of conditions")
        return ()
    out: list[Condition] = []
    for key, value in raw.items():
        if key in _WHEN_ONLY:
            continue
        make = CONDITIONS.get(key)
        if make is None:
            c.error(f"{base}.{key}", f"unknown condition; known: {', '.join(CONDITIONS)}")
            continue
        cond = make(c, value, f"{base}.{key}", ctx)
        if cond is not None:
            out.append(cond)
    return tuple(out)


def _actions(c: Checker, raw: Any, base: str, ctx: _Ctx, name: str) -> Rule | None:
    if not isinstance(raw, dict) or not raw:
        c.error(base, 'required: a table of actions, e.g. then = { queue = "billing" }')
        return None
    for key in raw:
        if key not in _ACTIONS:
            c.error(f"{base}.{key}", f"unknown action; known: {', '.join(sorted(_ACTIONS))}")
    values: dict[str, Any] = {}
    for key in ("queue", "priority", "category", "assign"):
        if key in raw:
            v = raw[key]
            if not isinstance(v, str) or not v.strip():
                c.error(f"{base}.{key}", "expected a non-empty string")
                continue
            values[key] = v.strip()
    if "queue" in values and values["queue"] not in ctx.queues:
        c.error(f"{base}.queue", f"unknown queue {values['queue']!r}; queues: {list(ctx.queues)}")
    if "priority" in values:
        values["priority"] = values["priority"].lower()
        if values["priority"] not in _PRIORITIES:
            c.error(f"{base}.priority", f"must be one of {', '.join(_PRIORITIES)}")
    if "assign" in values:
        values["assign"] = values["assign"].lower()
        if values["assign"] not in ctx.agents:
            c.error(f"{base}.assign", f"{values['assign']} is not an agent of this tenant")
    if "tags" in raw:
        tags = _strings(c, raw["tags"], f"{base}.tags")
        if tags is not None:
            for t in tags:
                if not re.fullmatch(r"[\w][\w.:/-]{0,63}", t):
                    c.error(f"{base}.tags", f"{t!r}: letters, digits and . : / - _ only")
            values["tags"] = tuple(dict.fromkeys(tags))
    for key in ("acknowledge", "stop", "drop"):
        if key in raw:
            b = _bool(c, raw[key], f"{base}.{key}")
            if b is not None:
                values[key] = b
    if "reject" in raw:
        m = _REJECT.match(raw["reject"]) if isinstance(raw["reject"], str) else None
        if m is None or m.group(2)[0] != m.group(1)[0]:
            c.error(
                f"{base}.reject",
                'expected "5xx 5.x.x text", e.g. "550 5.7.1 We do not accept this mail"',
            )
        else:
            values["reject"] = Reject(int(m.group(1)), m.group(2), m.group(3).strip())
    if values.get("drop") and "reject" in values:
        c.error(f"{base}.drop", "a rule either drops or rejects, not both")
    return Rule(name=name, **values)
