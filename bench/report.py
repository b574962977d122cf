"""BENCHMARKS.md from the run's JSON, and nothing else.

Why generated: the issue asks for a file with nothing hand-edited. The fixed
"reading" of each figure is the template bench/templates/BENCHMARKS.md.j2, which
quotes the measured numbers; this module computes them (medians, ratios, shares,
which bound holds) and the template only formats and words them. A new run
rewrites the whole file.
"""

from __future__ import annotations

import operator
import re
import statistics
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

MiB = 2**20
TEMPLATES = Path(__file__).parent / "templates"
FIGURES = ("fig1", "fig2", "fig3", "fig4", "fig5", "fig6", "fig7", "fig8", "fig9", "fig10", "fig11")
CORES = 2  # this machine's; the header names it


def _n(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "–"
    return f"{x:,.{digits}f}"


def fmt(s: dict[str, Any] | None, digits: int = 0, scale: float = 1.0) -> str:
    """``median (min–max)`` of a summary; the spread is visible in the range."""
    if not s or s.get("median") is None:
        return "–"
    med, lo, hi = s["median"] / scale, s["min"] / scale, s["max"] / scale
    if len(s.get("runs", [])) <= 1:
        return _n(med, digits)
    return f"{_n(med, digits)} ({_n(lo, digits)}–{_n(hi, digits)})"


def med(s: dict[str, Any] | None) -> float | None:
    return None if not s else s.get("median")


def _para(text: str) -> str:
    """A paragraph written over several template lines is one line of Markdown."""
    return re.sub(r"\s*\n\s*", " ", text.strip())


def render(
    doc: dict[str, Any],
    json_rel: Path,
    ab: dict[str, Any] | None = None,
    ab_web: dict[str, Any] | None = None,
) -> str:
    """BENCHMARKS.md from a run's JSON; ``ab``: bench/ab.py's before/after, if one was run;
    ``ab_web``: bench/ab_web.py's (figure 8), likewise."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=StrictUndefined,
        autoescape=False,
    )
    env.filters.update(fmt=fmt, n=_n, para=_para)
    env.globals.update(med=med, MiB=MiB, cores=CORES)
    figs = doc["figures"]
    figures: list[dict[str, Any]] = []
    for name in FIGURES:
        if name in figs:
            merged = doc.get("merged", {}).get(name)
            figures.append(
                {
                    "name": name,
                    "f": figs[name],
                    "x": _FACTS[name](figs[name], doc),
                    "merged": _merged(merged, figs[name]) if merged else None,
                }
            )
        elif name in doc.get("errors", {}):
            last = doc["errors"][name].strip().splitlines()[-1]
            figures.append({"name": name, "error": last})
    text = env.get_template("BENCHMARKS.md.j2").render(
        doc=doc,
        m=doc["machine"],
        json_rel=str(json_rel),
        figures=figures,
        targets=_targets(figs),
        targets21=_targets21(figs),
        bounds=_bounds(figs),
        ab=ab,
        ab_web=ab_web,
    )
    return text.rstrip() + "\n" + _notes()


#: Hand-written measurements of one change (a before/after beside the run's figures),
#: appended in name order: they stay in BENCHMARKS.md when it is rendered again.
NOTES = Path(__file__).resolve().parent / "results" / "notes"


def _notes() -> str:
    return "".join(
        f"\n{p.read_text(encoding='utf-8').rstrip()}\n" for p in sorted(NOTES.glob("*.md"))
    )


def _merged(m: dict[str, Any], fig: dict[str, Any]) -> dict[str, Any]:
    """A figure measured in a later run than the header's (``--merge``) says so: its
    numbers belong to that run's code and that run's load on the machine."""
    mach = m.get("machine", {})
    return {
        "command": m["command"],
        "started": m["started"],
        "finished": m.get("finished", "?"),
        "git": mach.get("git"),
        "load": ", ".join(f"{x:.2f}" for x in mach.get("loadavg_at_start", [])),
        "runs": fig.get("runs", m["runs"]),
    }


def _codes(f: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    out = []
    for k, cell in f["cells"].items():
        c = cell.get(kind, {})
        codes = c.get("codes", {})
        other = {x: n for x, n in codes.items() if x != "250"}
        out.append({"k": k, "ok": codes.get("250", 0), "sent": c.get("sent", 0), "other": other})
    return out


# Figure 1's parties by the CPU they spend a message at the top K, and the gateway's
# processes and threads among them (bench/fig_smtp.py measures each).
_PARTIES = (
    ("loop", "the daemon's event loop"),
    ("threads", "its writer thread"),
    ("parse", "the parse worker"),
    ("send", "the send worker"),
    ("acks_sink", "the sink taking the acknowledgements"),
    ("client", "the load client"),
)


def _cores_busy(cell: dict[str, Any]) -> dict[str, Any] | None:
    """Cores each party kept busy while the gateway's load ran (its CPU a message times
    the rate), beside the whole machine's: which one is at a core's ceiling, if any."""
    gw = cell["gateway"]
    rate, machine = med(gw["rate"]), med(gw.get("machine_cores"))
    if not rate or machine is None:
        return None
    parts = []
    for key, label in _PARTIES:
        us = med(gw.get(f"{key}_cpu_us_per_msg"))
        if us is not None:
            parts.append((label, us * rate / 1e6))
    top = max(parts, key=lambda p: p[1]) if parts else None
    ready = med(gw.get("ready_threads"))
    # What bounds the rate, said once for figure 1's reading and the targets' paragraph:
    # one thread at a core's ceiling; else the cores, short by the machine's average or
    # by the scheduler's count (the gateway's threads spent, on average, half a thread or
    # more waiting for a free core: bursts leave idle moments between them, so the
    # machine's average can stay under its cores); else waits.
    if top is not None and top[1] >= 0.9:
        bound = "thread"
    elif machine >= 0.9 * CORES or (ready is not None and ready >= 0.5):
        bound = "cores"
    else:
        bound = "waits"
    return {
        "parts": parts,
        "machine": machine,
        "of": CORES,
        "top": top,
        "ready": ready,
        "bound": bound,
    }


def _fig1(f: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    cells = f["cells"]
    kinds = [("sink", "bare aiosmtpd"), ("gateway", "gateway")]
    if "sink_uvloop" in next(iter(cells.values())):
        kinds.insert(1, ("sink_uvloop", "bare aiosmtpd on uvloop"))
    if "gateway_files" in next(iter(cells.values())):
        kinds.append(("gateway_files", "gateway, blobs as files"))
    if "postfix" in next(iter(cells.values())):
        kinds.append(("postfix", "Postfix"))
    ks = list(cells)
    top, first = ks[-1], ks[0]
    g_top = med(cells[top]["gateway"]["rate"])
    cpu_top = med(cells[top]["gateway"].get("server_cpu_us_per_msg"))
    files = []
    if "gateway_files" in cells[top]:
        for k in ks:
            rows, per = med(cells[k]["gateway"]["rate"]), med(cells[k]["gateway_files"]["rate"])
            if per and rows:
                files.append((k, per, per / rows))
    prof = f.get("profile", {})
    return {
        "floor": _floor(f, top),
        "cores": _cores_busy(cells[top]),
        "kinds": kinds,
        "has_postfix": "postfix" in dict(kinds),
        "cpu": {
            kind: [
                (k, c[kind]["server_cpu_us_per_msg"])
                for k, c in cells.items()
                if c[kind].get("server_cpu_us_per_msg")
            ]
            for kind in ("gateway", "sink", "sink_uvloop")
            if kind in cells[top]
        },
        # The gateway's CPU a message by process: its own, the parse workers', the send
        # worker's (runs from before the split have only the first).
        "cpu_split": [
            (k, [(n, c["gateway"].get(f"{n}_cpu_us_per_msg")) for n in ("daemon", "parse", "send")])
            for k, c in cells.items()
            if c["gateway"].get("parse_cpu_us_per_msg")
        ],
        # The daemon's own by thread: its event loop, its other threads (the writer).
        "thread_split": [
            (k, [(n, c["gateway"].get(f"{n}_cpu_us_per_msg")) for n in ("loop", "threads")])
            for k, c in cells.items()
            if c["gateway"].get("loop_cpu_us_per_msg")
        ],
        "codes": {kind: _codes(f, kind) for kind, _ in kinds},
        "top": top,
        "first": first,
        "g_top": g_top,
        "cpu_top": cpu_top,
        "sink_cpu": med(cells[top]["sink"].get("server_cpu_us_per_msg")),
        "busy": cpu_top * g_top / 1e6 if cpu_top and g_top else None,
        "files": files,
        "prof": prof,
        "summ": prof.get("summary") or {},
    }


def _floor(f: dict[str, Any], top: str) -> dict[str, Any] | None:
    """Figure 1's floor (bench/floor.py) at its top K: each part's least CPU a message,
    their sum with the bare sink's session and the mails the outbox sent a message, and
    each of the gateway's processes (and the daemon's threads) beside its part's."""
    fl = f.get("floor")
    if not fl:
        return None
    # The session's floor is the sink on the loop the send's floor ran on (the gateway's).
    loop = fl.get("loop", "asyncio")
    cell = f["cells"][top]
    gw = cell["gateway"]
    sink = cell["sink_uvloop"] if loop == "uvloop" and "sink_uvloop" in cell else cell["sink"]
    queued = [o["backlog"] + o["sent"] for o in gw.get("outbox_at_end") or [] if o]
    mails = statistics.median(queued) / f["mix"]["messages"] if queued else 1.0
    parse, store, send = (med(fl.get(p)) or 0.0 for p in ("parse", "store", "send"))
    session = med(sink.get("server_cpu_us_per_msg")) or 0.0
    total = session + parse + store + send * mails
    beside = [
        (label, ours, least)
        for label, key, least in (
            (
                "the daemon's event loop against the bare sink's session",
                "loop_cpu_us_per_msg",
                session,
            ),
            ("its writer thread against the store's", "threads_cpu_us_per_msg", store),
            ("the parse worker against the parse's", "parse_cpu_us_per_msg", parse),
            ("the send worker against the sends'", "send_cpu_us_per_msg", send * mails),
        )
        if (ours := med(gw.get(key))) is not None
    ]
    return {
        "parse": parse,
        "store": store,
        # the same store with the search index the gateway keeps (None: a run before it)
        "store_search": med(fl.get("store_search")),
        "send": send,
        "session": session,
        "mails": mails,
        "total": total,
        "loop": loop,
        "runs": len(fl["parse"].get("runs") or []),
        # The most beyond its floor first: where the gateway's own work a message is.
        "beside": [
            (label, ours, least, ours / least if least else None)
            for label, ours, least in sorted(beside, key=lambda b: b[2] - b[1])
        ],
        "target_x": 1100 / total if total else None,
    }


def _fig2(f: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    top = list(f["cells"])[-1]
    return {
        "kinds": [("sink", "bare aiosmtpd"), ("gateway", "gateway + clamd")],
        "codes": {"gateway": _codes(f, "gateway")},
        "top": top,
        "f1": doc["figures"].get("fig1", {}).get("cells", {}).get(top),
    }


def _none(f: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    return {}


def _fig5(f: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    sizes = [str(s) for s in f["sizes"]]
    first, last = sizes[0], sizes[-1]
    lo, hi = _max_summary(f, first), _max_summary(f, last)
    r_lo, r_hi = med(f["cells"][first]["rate"]), med(f["cells"][last]["rate"])
    stall = bool(lo.get("median") and hi.get("median") and r_lo and r_hi)
    p99 = med(f["cells"][last]["p99_ms"])
    return {
        "max_to_p99": hi["median"] / p99 if hi.get("median") and p99 else None,
        "sizes": sizes,
        "first": first,
        "last": last,
        "max": {s: _max_summary(f, s) for s in sizes},
        "growth": med(f["cells"][last][f"ratio_p50_to_{first}"]) or 0,
        "stall": stall and hi["median"] >= 5 * lo["median"],
        "lo": lo,
        "hi": hi,
        "r_lo": r_lo,
        "r_hi": r_hi,
    }


def _fig6(f: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    s, i = f["smtp"], f["imap"]
    return {
        "msg_mib": s["message_bytes"] / MiB,
        "backlog_mib": (med(i["peak_rss"]) or 0) / MiB - (med(i["rss_after_start"]) or 0) / MiB,
        "backlog_rate": (med(i["drained_in_window"]) or 0) / i["window_s"],
        "fig4_rate": med(doc["figures"].get("fig4", {}).get("rate")),
    }


def _fig8(f: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    target = 0.15 * (med(f["bare_rate"]) or 0)  # issue 21's target for this figure
    return {
        "bare_times": 1 / (med(f["ratio_gateway_bare"]) or 1),
        "target_rate": target,
        "budget_us": 1e6 / target if target else 0,
    }


_FIG9_CASES = {
    "sqlite-1": "SQLite, 1 gateway",
    "pg-1": "PostgreSQL, 1 instance",
    "pg-2": "PostgreSQL, 2 instances",
    "pg-3": "PostgreSQL, 3 instances",
}


def _fig9_label(case: str) -> str:
    engine, n = case.split("-")
    return _FIG9_CASES.get(case, f"{'PostgreSQL' if engine == 'pg' else engine}, {n}")


def _fig9(f: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    cells = f["cells"]
    rows = []
    faults: dict[str, int] = {}
    for k, cell in cells.items():
        for case, c in cell.items():
            rows.append(f"K={k} {case} {c['rows']}")
            for name, n in c.get("faults", {}).items():
                faults[name] = faults.get(name, 0) + n
    top = list(cells)[-1]
    cell = cells[top]
    pg = [c for c in cell if c.startswith("pg-")]
    x: dict[str, Any] = {
        "labels": {case: _fig9_label(case) for c in cells.values() for case in c},
        "ours": {(k, case): _ours(c) for k, cl in cells.items() for case, c in cl.items()},
        "rows": rows,
        "faults": dict(sorted(faults.items())),
        "deadlock_faults": any("DeadlockDetected" in name for name in faults),
        "counter_faults": any("ticket_counters" in name for name in faults),
        "top": top,
        "cell": cell,
        "pg": pg,
    }
    if not pg:
        return x
    last = pg[-1]
    one = cell[pg[0]]
    dl = {case: med(_as_summary(cell[case].get("deadlocks"))) or 0 for case in pg}
    rels: dict[str, Any] = {}
    for case in pg:
        rels.update(cell[case].get("deadlocks_by_relation", {}))
    timeout_s = _seconds(f.get("pg_effective", {}).get("deadlock_timeout", "1s"))
    total = _cpu_total(cell[last])
    x.update(
        last=last,
        n_last=last.split("-")[1],
        one=one,
        cpu_one=_cpu_total(one),
        cpu_sqlite=_cpu_total(cell["sqlite-1"]),
        one_bound=(med(one.get("cores_gateways")) or 0) >= 0.8,
        dl=dl,
        deadlocks=any(dl[c] for c in pg[1:]),
        rels=sorted(rels),
        timeout_s=timeout_s,
        shares=[
            (c.split("-")[1], k, share)
            for k in cells
            for c in pg[1:]
            if (share := _stall_share(f, k, c, timeout_s)) is not None
        ],
        total=total,
        split=_fig9_split(one, cell[last]),
        saturated=(med(cell[last].get("cores_machine")) or 0) >= 0.9 * CORES,
        cap=CORES * 1e6 / (total or 1),
    )
    return x


def _fig9_split(one: dict[str, Any], last: dict[str, Any]) -> dict[str, Any] | None:
    """The gateways' CPU a message, one instance and the most, as their daemons' and their
    workers' (parse, send: the rest); None for a run from before the daemons were counted."""
    out: dict[str, Any] = {}
    for name, c in (("one", one), ("last", last)):
        gw, daemons = med(c.get("cpu_us_per_msg_gateways")), med(c.get("cpu_us_per_msg_daemons"))
        if gw is None or daemons is None:
            return None
        out[name] = {"daemons": daemons, "workers": gw - daemons}
    for part in ("daemons", "workers"):
        out[f"{part}_x"] = out["last"][part] / out["one"][part] if out["one"][part] else None
    return out


def _fig10(f: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    """Tools best first; the failures of ours by client (the part of the name after NN-)."""
    tools = f["tools"]
    scored = sorted((t for t in tools if "exact" in tools[t]), key=lambda t: -tools[t]["exact"])
    return {
        "scored": scored,
        "absent": [t for t in tools if "absent" in tools[t]],
        "ours_failed": [n.split("-", 1)[-1] for n in tools.get("ours", {}).get("failed", [])],
    }


def _fig11(f: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    """Each engine's slowest query class at the median, against "well under a second"."""
    worst = []
    for engine, g in (("SQLite", f), ("PostgreSQL", f.get("postgresql"))):
        if g:
            name = max(g["cells"], key=lambda k, g=g: med(g["cells"][k]["p50_ms"]) or 0)
            worst.append({"engine": engine, "query": name, "ms": med(g["cells"][name]["p50_ms"])})
    return {"worst": worst}


_FACTS = {
    "fig1": _fig1,
    "fig2": _fig2,
    "fig3": _none,
    "fig4": _none,
    "fig5": _fig5,
    "fig6": _fig6,
    "fig7": _none,
    "fig8": _fig8,
    "fig9": _fig9,
    "fig10": _fig10,
    "fig11": _fig11,
}


def _targets(figs: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets: what, the measured value as text, met (None: not measured)."""
    rows: list[dict[str, Any]] = []

    def row(what: str, value: float | None, ok: bool | None, text: str) -> None:
        met = None if ok is None or value is None else ok
        rows.append({"what": what, "text": text, "met": met})

    f1 = figs.get("fig1", {}).get("cells", {})
    if f1:
        top, first = list(f1)[-1], next(iter(f1))
        r = med(f1[top].get("ratio_gateway_sink"))
        row(
            f"figure 1, K={top}: >= 0.30 of the bare aiosmtpd ceiling",
            r,
            r is not None and r >= 0.30,
            _n(r, 2),
        )
        v = med(f1[first]["gateway"]["rate"])
        row(
            f"figure 1, K={first}: >= 250 msg/s for a single sender",
            v,
            v is not None and v >= 250,
            _n(v),
        )
        if "8" in f1:
            p = med(f1["8"]["gateway"]["p99_ms"])
            row("figure 1, K=8: p99 < 50 ms", p, p is not None and p < 50, f"{_n(p, 1)} ms")
        if "ratio_gateway_postfix" in f1[top]:
            g = med(f1[top]["ratio_gateway_postfix"])
            pf = med(f1[top]["ratio_postfix_sink"])
            row(
                f"goal, K={top}: the rate at which Postfix durably queues the same mail "
                f"(Postfix here: {_n(pf, 2)} of the ceiling)",
                g,
                g is not None and g >= 1.0,
                f"gateway / Postfix {_n(g, 2)}",
            )
    f5 = figs.get("fig5")
    if f5:
        sizes = [str(s) for s in f5["sizes"]]
        g = med(f5["cells"][sizes[-1]][f"ratio_p50_to_{sizes[0]}"])
        row(
            f"figure 5: < 2x from {int(sizes[0]):,} to {int(sizes[-1]):,} stored",
            g,
            g is not None and g < 2,
            f"{_n(g, 2)}x",
        )
    return rows


def _targets21(figs: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 21's table, each row from this run: what, its target, the measured value as
    text, met (None: the figure was not measured, or not that row of it)."""
    rows: list[dict[str, Any]] = []
    tests = {">=": operator.ge, "<=": operator.le, "<": operator.lt}

    def row(
        what: str, value: float | None, op: str, bound: float, text: str, unit: str = ""
    ) -> None:
        """``op`` and ``bound``: the target, both shown and tested from these alone."""
        met = None if value is None else tests[op](value, bound)
        rows.append({"what": what, "target": f"{op} {bound:,}{unit}", "text": text, "met": met})

    def at(*path: str) -> float | None:
        node: Any = figs
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        return med(node) if isinstance(node, dict) else None

    r = at("fig1", "cells", "32", "ratio_gateway_sink")
    row("1, K=32: gateway / bare aiosmtpd", r, ">=", 0.35, _n(r, 2))
    for k in ("8", "32"):
        r = at("fig1", "cells", k, "ratio_gateway_postfix")
        row(f"1, K={k}: gateway / Postfix durable queue", r, ">=", 1.0, _n(r, 2))
    r = at("fig1", "cells", "1", "ratio_gateway_postfix")
    rate = at("fig1", "cells", "1", "gateway", "rate")
    row("1, K=1: gateway / Postfix", r, ">=", 0.5, f"{_n(r, 2)} ({_n(rate)} msg/s)")
    cpu = at("fig1", "cells", "32", "gateway", "server_cpu_us_per_msg")
    sink = at("fig1", "cells", "32", "sink", "server_cpu_us_per_msg")
    row(
        "1, CPU per message at K=32 (the bare sink's)",
        cpu,
        "<=",
        1100,
        f"{_n(cpu)} µs ({_n(sink)})",
        " µs",
    )
    r = at("fig3", "lmtp", "ratio_lmtp_smtp")
    row("3, MTA handoff: LMTP / SMTP K=1", r, ">=", 0.9, _n(r, 2))
    r = at("fig4", "ratio_imap_smtp")
    row("4, IMAP backlog drain / one SMTP session", r, ">=", 0.9, _n(r, 2))
    r = at("fig6", "smtp", "ratio_gateway_sink")
    row("6, peak RSS, 32 x 10 MB messages / bare aiosmtpd", r, "<=", 1.5, f"{_n(r, 2)}x", "x")
    r = at("fig7", "ratio_gateway_bare")
    kept = at("fig7", "ratio_gateway_bare_reused")
    row(
        "7, outbox worker / bare aiosmtplib loop (one that keeps its connections)",
        r,
        ">=",
        0.6,
        f"{_n(r, 2)} ({_n(kept, 2)})",
    )
    r = at("fig8", "ratio_gateway_bare")
    row("8, client ticket page / bare aiohttp page", r, ">=", 0.15, _n(r, 2))
    cells9 = figs.get("fig9", {}).get("cells") or {"32": {}}
    for k in cells9:
        r = at("fig9", "cells", k, "pg-1", "ratio_to_sqlite1")
        row(f"9, K={k}: one instance on PostgreSQL / one on SQLite", r, ">=", 0.8, _n(r, 2))
    for k, cell9 in cells9.items():
        pgs = [c for c in cell9 if c.startswith("pg-")]
        three = None
        if len(pgs) > 1 and _cpu_total(cell9[pgs[0]]):
            three = _cpu_total(cell9[pgs[-1]]) / _cpu_total(cell9[pgs[0]])
        n = pgs[-1].split("-")[1] if pgs else "3"
        what = f"9, K={k}: CPU per message of all parties, {n} instances / one"
        row(what, three, "<=", 1.2, f"{_n(three, 2)}x", "x")
    f5 = figs.get("fig5")
    ratio = _fig5(f5, {})["max_to_p99"] if f5 else None
    last = f"{int(f5['sizes'][-1]):,}" if f5 else "1,000,000"
    row(
        f"5, slowest reply at {last} stored / that size's p99",
        ratio,
        "<",
        10,
        f"{_n(ratio, 1)}x",
        "x",
    )
    return rows


def _bounds(figs: dict[str, Any]) -> dict[str, Any] | None:
    """What bounds the missed SMTP targets, in this run's own numbers."""
    f1 = figs.get("fig1", {}).get("cells", {})
    if not f1:
        return None
    top, first = list(f1)[-1], next(iter(f1))
    sink = med(f1[top]["sink"]["rate"]) or 0
    cpu_top = med(f1[top]["gateway"].get("server_cpu_us_per_msg"))
    cpu_one = med(f1[first]["gateway"].get("server_cpu_us_per_msg"))
    if not (sink and cpu_top and cpu_one):
        return None
    need_top = 1e6 / (0.30 * sink)
    k8 = med(f1["8"]["gateway"]["rate"]) if "8" in f1 else None
    prof = figs["fig1"].get("profile", {}).get("summary") or {}
    tops = prof.get("top_self") or {}
    # Bound by the machine's cores rather than by one thread's: the gateway's CPU a message
    # that leaves room for the target rate beside the sink and the client's share.
    cores = _cores_busy(f1[top])
    others = sum(
        med(f1[top]["gateway"].get(f"{p}_cpu_us_per_msg")) or 0 for p in ("acks_sink", "client")
    )
    used = cores["machine"] if cores else CORES  # bursts leave some of the cores idle
    need_machine = used * 1e6 / (0.30 * sink) - others
    return {
        "cores": cores,
        "others": others,
        "need_machine": need_machine,
        "over_machine": cpu_top / need_machine if need_machine > 0 else None,
        "top": top,
        "cpu_top": cpu_top,
        "cpu_one": cpu_one,
        "target_rate": 0.30 * sink,
        "need_top": need_top,
        "over": cpu_top / need_top,
        "k8": k8,
        "k8_wait_ms": 8 / k8 * 1000 if k8 else None,
        "profiled": bool(tops),
        "blob": sum(v for k, v in tops.items() if "store/blobs.py" in k or "Path.stat" in k),
        "areas": prof.get("areas_inclusive") or {},
        "fig9": _fig9_bounds(figs.get("fig9") or {}),
        "floor": _floor(figs["fig1"], top),
    }


def _fig9_bounds(f9: dict[str, Any]) -> dict[str, Any] | None:
    """Figure 9 at its top K (its reading's facts, ``_fig9``): the cores one PostgreSQL
    instance's gateway keeps busy, and the workers' CPU ratio of the most instances to
    one (``_fig9_split``)."""
    if not f9.get("cells"):
        return None
    x = _fig9(f9, {})
    if len(x["pg"]) < 2:
        return None
    return {
        "top": x["top"],
        "n": x["n_last"],
        "one_cores": med(x["one"].get("cores_gateways")),
        "workers_x": x["split"]["workers_x"] if x["split"] else None,
    }


def _max_summary(f: dict[str, Any], size: str) -> dict[str, Any]:
    from bench.common import summary

    return summary([r["max_ms"] for r in f.get("raw", {}).get(size, []) if r.get("max_ms")])


def _ours(c: dict[str, Any]) -> dict[str, Any]:
    """Cores the figure's own processes kept busy, per run (gateways + PostgreSQL + clamd +
    load client)."""
    from bench.common import summary

    parts = [c[f"cores_{p}"]["runs"] for p in ("gateways", "postgresql", "clamd", "client")]
    return summary([sum(v) for v in zip(*parts, strict=True)])


def _cpu_total(c: dict[str, Any]) -> float:
    parts = ("gateways", "postgresql", "clamd", "client")
    return sum(med(c.get(f"cpu_us_per_msg_{p}")) or 0 for p in parts)


def _seconds(setting: str) -> float:
    """A PostgreSQL time setting as SHOW prints it (``1s``, ``500ms``, ``1min``)."""
    for unit, scale in (("ms", 1e-3), ("min", 60.0), ("s", 1.0), ("h", 3600.0)):
        if setting.endswith(unit):
            return float(setting[: -len(unit)]) * scale
    return float(setting) * 1e-3  # a bare number is milliseconds


def _stall_share(f: dict[str, Any], k: str, case: str, timeout_s: float) -> float | None:
    """Seconds of batch stalls (deadlock_timeout each) per second of the case's load run."""
    runs = f.get("raw", {}).get(k, {}).get(case, [])
    shares = [
        sum(r.get("deadlocks", {}).values()) * timeout_s / r["secs"] for r in runs if r["secs"]
    ]
    return med(_as_summary(shares))


def _as_summary(values: list[float] | None) -> dict[str, Any]:
    from bench.common import summary

    return summary(values or [])
