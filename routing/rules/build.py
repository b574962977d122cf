"""``[[tenants.rules]]`` tables -> Rules, every problem reported with its key."""

from __future__ import annotations

import re
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from routing.commands import PRIORITIES
from routing.rules.conditions import CONDITIONS, Ctx, boolean, strings
from routing.rules.engine import Condition, Reject, Rule
from routing.schema import Checker

__all__ = ["build_rules"]

_REJECT = re.compile(r"^(5[0-5]\d) (5\.\d{1,3}\.\d{1,3}) (\S.*)$")
_WHEN_ONLY = {"timezone"}
_ACTIONS = {
    "queue", "priority", "category", "tags", "assign", "acknowledge", "stop", "drop", "reject",
}  # fmt: skip


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
    out: list[Rule] = []
    names: set[str] = set()
    for i, rb, r in c.tables(raw, f"{base}.rules", "tenants.rules"):
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
        ctx = Ctx(addresses, queues, agents, tz)
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


def _conditions(c: Checker, raw: Any, base: str, ctx: Ctx) -> tuple[Condition, ...]:
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


def _actions(c: Checker, raw: Any, base: str, ctx: Ctx, name: str) -> Rule | None:
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
        if values["priority"] not in PRIORITIES:
            c.error(f"{base}.priority", f"must be one of {', '.join(PRIORITIES)}")
    if "assign" in values:
        values["assign"] = values["assign"].lower()
        if values["assign"] not in ctx.agents:
            c.error(f"{base}.assign", f"{values['assign']} is not an agent of this tenant")
    if "tags" in raw:
        tags = strings(c, raw["tags"], f"{base}.tags")
        if tags is not None:
            for t in tags:
                if not re.fullmatch(r"[\w][\w.:/-]{0,63}", t):
                    c.error(f"{base}.tags", f"{t!r}: letters, digits and . : / - _ only")
            values["tags"] = tuple(dict.fromkeys(tags))
    for key in ("acknowledge", "stop", "drop"):
        if key in raw:
            b = boolean(c, raw[key], f"{base}.{key}")
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
