"""The conditions a rule's ``when`` and ``unless`` may name, each built from its config value.

A builder checks the value (reporting through the config checker, with its
key) and returns a Condition whose test reads only the Facts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import time
from typing import Any
from zoneinfo import ZoneInfo

from routing.rules.engine import Condition, Facts, _LanguageCache
from routing.schema import Checker

__all__ = ["CONDITIONS", "Ctx", "boolean", "strings"]

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")
_REGEX_BUDGET = 100_000  # characters of body a body regex looks at


@dataclass(frozen=True, slots=True)
class Ctx:
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


def strings(c: Checker, value: Any, key: str) -> list[str] | None:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        c.error(key, "expected a string or a non-empty list of strings")
        return None
    return value


def _regex(c: Checker, value: Any, key: str) -> list[re.Pattern[str]] | None:
    values = strings(c, value, key)
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


def boolean(c: Checker, value: Any, key: str) -> bool | None:
    if not isinstance(value, bool):
        c.error(key, "expected true or false")
        return None
    return value


def _size(c: Checker, value: Any, key: str) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        c.error(key, "expected a size in bytes (an integer, 0 or more)")
        return None
    return value


def _cond_from(c: Checker, v: Any, key: str, ctx: Ctx) -> Condition | None:
    values = strings(c, v, key)
    if values is None:
        return None
    wanted = {x.lower() for x in values}
    return Condition("from", _show(values), lambda f, _l: f.sender in wanted)


def _cond_from_domain(c: Checker, v: Any, key: str, ctx: Ctx) -> Condition | None:
    values = strings(c, v, key)
    if values is None:
        return None
    domains = tuple(x.lower().lstrip("@").lstrip(".") for x in values)

    def test(f: Facts, _l: _LanguageCache) -> bool:
        dom = f.sender.rpartition("@")[2]
        return bool(dom) and any(dom == d or dom.endswith("." + d) for d in domains)

    return Condition("from_domain", _show(values), test)


def _cond_to(c: Checker, v: Any, key: str, ctx: Ctx) -> Condition | None:
    values = strings(c, v, key)
    if values is None:
        return None
    wanted = {x.lower() for x in values}
    for x in sorted(wanted - set(ctx.addresses)):
        c.error(key, f"{x} is not one of this tenant's addresses {list(ctx.addresses)}")
    return Condition("to", _show(values), lambda f, _l: f.recipient in wanted)


def _cond_subject(c: Checker, v: Any, key: str, ctx: Ctx) -> Condition | None:
    pats = _regex(c, v, key)
    if pats is None:
        return None
    return Condition(
        "subject", _show(v), lambda f, _l: any(p.search(f.parsed.subject) for p in pats)
    )


def _cond_body(c: Checker, v: Any, key: str, ctx: Ctx) -> Condition | None:
    pats = _regex(c, v, key)
    if pats is None:
        return None

    def test(f: Facts, _l: _LanguageCache) -> bool:
        text = f.parsed.text[:_REGEX_BUDGET]
        return any(p.search(text) for p in pats)

    return Condition("body", _show(v), test)


def _cond_header(c: Checker, v: Any, key: str, ctx: Ctx) -> Condition | None:
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


def _cond_has_attachment(c: Checker, v: Any, key: str, ctx: Ctx) -> Condition | None:
    want = boolean(c, v, key)
    if want is None:
        return None
    return Condition(
        "has_attachment",
        _show(v),
        lambda f, _l: any(not a.inline for a in f.parsed.attachments) == want,
    )


def _cond_larger_than(c: Checker, v: Any, key: str, ctx: Ctx) -> Condition | None:
    n = _size(c, v, key)
    return None if n is None else Condition("larger_than", str(n), lambda f, _l: f.size > n)


def _cond_smaller_than(c: Checker, v: Any, key: str, ctx: Ctx) -> Condition | None:
    n = _size(c, v, key)
    return None if n is None else Condition("smaller_than", str(n), lambda f, _l: f.size < n)


def _cond_language(c: Checker, v: Any, key: str, ctx: Ctx) -> Condition | None:
    values = strings(c, v, key)
    if values is None:
        return None
    wanted = {x.lower() for x in values}
    for x in sorted(wanted):
        if not re.fullmatch(r"[a-z]{2,3}", x):
            c.error(key, f"{x!r} is not an ISO 639 language code such as 'en' or 'de'")
    return Condition("language", _show(values), lambda f, lang: lang.value in wanted)


def _cond_auto_submitted(c: Checker, v: Any, key: str, ctx: Ctx) -> Condition | None:
    want = boolean(c, v, key)
    if want is None:
        return None
    return Condition("auto_submitted", _show(v), lambda f, _l: f.machine == want)


def _cond_new_ticket(c: Checker, v: Any, key: str, ctx: Ctx) -> Condition | None:
    want = boolean(c, v, key)
    if want is None:
        return None
    return Condition("new_ticket", _show(v), lambda f, _l: f.new_ticket is want)


def _cond_days(c: Checker, v: Any, key: str, ctx: Ctx) -> Condition | None:
    values = strings(c, v, key)
    if values is None:
        return None
    days = {x.lower()[:3] for x in values}
    for x in sorted(days - set(_DAYS)):
        c.error(key, f"{x!r} is not a day; use {', '.join(_DAYS)}")
    tz = ctx.tz
    return Condition(
        "days", _show(values), lambda f, _l: _DAYS[f.now.astimezone(tz).weekday()] in days
    )


def _cond_hours(c: Checker, v: Any, key: str, ctx: Ctx) -> Condition | None:
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


CONDITIONS: Mapping[str, Callable[[Checker, Any, str, Ctx], Condition | None]] = {
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
