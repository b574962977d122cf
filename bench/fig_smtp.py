"""Figures 1 and 2: SMTP ingest against the bare aiosmtpd ceiling and Postfix, in one run.

Figure 1 is the corpus mix without the messages the gateway would hand to
clamd (attachments, enclosed messages): without a scanner those are deferred
with 451, which measures nothing. Figure 2 is the whole mix with a real clamd
in the path. For each run and each K the servers run in turn (sink, gateway,
Postfix), each a fresh process, the gateway with a fresh store; the load
generator is its own process (bench/smtp_client.py). Reported per cell: the
median and spread of msg/s (250s only), p50/p99 from the end of DATA to the
reply, and the median of the per-run ratios gateway/sink and postfix/sink.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import floor
from bench import postfix as pf
from bench.common import (
    PY,
    ROOT,
    Mail,
    Sink,
    corpus,
    count_rows,
    cpu_seconds,
    loop_cpu_seconds,
    run_load,
    runnable_wait_seconds,
    settle,
    summary,
    workdir,
    worker_cpu_seconds,
    write_load,
)
from gateway.loop import loop_name
from tests.daemon import Daemon
from tests.mail import make_mail


def _one(kind: str, load: Path, k: int, work: Path, scanner: str | None) -> dict[str, Any]:
    """One fresh server of ``kind``, one load run at K, the server stopped again."""
    if kind in ("sink", "sink_uvloop"):
        sink = Sink(loop="uvloop" if kind == "sink_uvloop" else "asyncio")
        try:
            settle(sink.proc.pid)
            cpu0 = cpu_seconds(sink.proc.pid)
            res = run_load(sink.port, load, k)
            res["server_cpu_s"] = cpu_seconds(sink.proc.pid) - cpu0
        finally:
            sink.stop()
        return res
    if kind == "postfix":
        server = pf.Postfix(work).start()
        try:
            return run_load(server.port, load, k)
        finally:
            server.stop()
    # "gateway_files": the same gateway with [gateway] blobs = "files" (each blob a file,
    # fsynced with its folder before the commit) instead of the default rows.
    blobs = "files" if kind == "gateway_files" else None
    # Both tenants' outbound accounts point at a bare sink (its own process), so the
    # acknowledgements go out during the run and the rate counts only with the outbox
    # keeping up: its depth at the end of the load is reported beside the rate.
    outbox_sink = Sink()
    account = (
        f'[tenants.outbound]\nhost = "127.0.0.1"\nport = {outbox_sink.port}\nsecurity = "none"\n'
    )
    gw = Daemon(
        work, scanner=scanner or "127.0.0.1:9", blobs=blobs, acme_extra=account, extra=account
    )
    try:
        gw.start()
        assert gw.proc is not None
        settle(gw.proc.pid)
        _warm(gw)  # the language model, loaded by the first mail that needs it, is no run's
        cpu0, own0 = cpu_seconds(gw.proc.pid), cpu_seconds(gw.proc.pid, own=True)
        loop0, acks0 = loop_cpu_seconds(gw.proc.pid), cpu_seconds(outbox_sink.proc.pid)
        ready0 = runnable_wait_seconds(gw.proc.pid)
        kids0 = worker_cpu_seconds(gw.proc.pid)
        res = run_load(gw.port, load, k)
        # All of the gateway's processes (its parse workers too); the daemon's own beside.
        res["server_cpu_s"] = cpu_seconds(gw.proc.pid) - cpu0
        res["daemon_cpu_s"] = cpu_seconds(gw.proc.pid, own=True) - own0
        # ... and the daemon's by thread: the event loop, the others (the writer)
        res["loop_cpu_s"] = loop_cpu_seconds(gw.proc.pid) - loop0
        res["threads_cpu_s"] = res["daemon_cpu_s"] - res["loop_cpu_s"]
        res["acks_sink_cpu_s"] = cpu_seconds(outbox_sink.proc.pid) - acks0
        # ... and how long its threads were ready to run with no core free for them
        res["ready_wait_s"] = runnable_wait_seconds(gw.proc.pid) - ready0
        kids = worker_cpu_seconds(gw.proc.pid)
        for kind, secs in kids.items():  # the parse workers and the send worker apart
            res[f"{kind}_cpu_s"] = secs - kids0[kind]
        res["outbox"] = _outbox_depth(work / "var" / "gateway.db")
        res["outbox"]["drained_s"] = _drained(work / "var" / "gateway.db")
    finally:
        gw.stop()
        outbox_sink.stop()
    res["rows"] = count_rows(work / "var" / "gateway.db")
    return res


def gateway_loop() -> str:
    """The loop the bench's daemons run: ``GATEWAY_TEST_LOOP`` (tests/daemon.py) or
    ``auto``, as gateway/loop.py resolves it here."""
    return loop_name(os.environ.get("GATEWAY_TEST_LOOP") or "auto")


def _warm(gw: Daemon) -> None:
    """One mail whose language must be detected, then quiet: the model's load (about
    0.6 s of CPU, once per process, routing/language.py) is start-up work, not a cost
    per message of the run; before it was loaded lazily it was loaded at start."""
    body = "The printer on the third floor prints only blank pages since this morning."
    code, text = gw.send(make_mail(sender="warm@client.test", body=body), sender="warm@client.test")
    if code != 250:
        raise RuntimeError(f"warm-up mail refused: {code} {text}")
    assert gw.proc is not None
    settle(gw.proc.pid)


def _outbox_depth(db: Path) -> dict[str, int]:
    """The outbox by status the moment the load ends (pending + sending = the backlog)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT status, count(*) FROM outbox GROUP BY status").fetchall()
    by = {str(s): int(n) for s, n in rows}
    return {"backlog": by.get("pending", 0) + by.get("sending", 0), "sent": by.get("sent", 0)}


def _drained(db: Path, limit: float = 10.0) -> float | None:
    """Seconds after the load's end until nothing is left to send (None: not within
    ``limit``). A backlog that drains in a fraction of a second is mail in the outbox's
    pipeline (claimed, sending, its outcome not yet written: outbound/delivery.py paces
    them), not the outbox falling behind, which would take seconds to drain."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if _outbox_depth(db)["backlog"] == 0:
            return round(time.monotonic() - start, 3)
        time.sleep(0.01)
    return None


def _cells(
    load: Path, levels: list[int], runs: int, kinds: list[str], scanner: str | None, tmp: Path
) -> dict[str, Any]:
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {
        str(k): {kind: [] for kind in kinds} for k in levels
    }
    n = 0
    for r in range(runs):
        for k in levels:
            for kind in kinds:  # interleaved: sink, gateway, postfix, sink, gateway, ...
                n += 1
                res = _one(kind, load, k, tmp / f"{kind}-{r}-{k}-{n}", scanner)
                raw[str(k)][kind].append(res)
                print(
                    f"  run {r + 1} K={k} {kind}: {res['rate']:.0f} msg/s "
                    f"p50 {res['p50_ms'] or 0:.1f} p99 {res['p99_ms'] or 0:.1f} ms "
                    f"codes {res['codes']}",
                    flush=True,
                )
    cells: dict[str, Any] = {}
    for k, by_kind in raw.items():
        cell: dict[str, Any] = {}
        for kind, rs in by_kind.items():
            codes: Counter[str] = Counter()
            for x in rs:
                codes.update(x["codes"])
            cell[kind] = {
                "rate": summary([x["rate"] for x in rs]),
                "p50_ms": summary([x["p50_ms"] for x in rs if x["p50_ms"] is not None]),
                "p99_ms": summary([x["p99_ms"] for x in rs if x["p99_ms"] is not None]),
                "codes": dict(codes),
                "sent": sum(x["sent"] for x in rs),
            }
            # all of the server's processes; the daemon alone, its parse workers, its send
            # worker; the daemon's event loop and its other threads; the sink the gateway's
            # acknowledgements go to; the load client
            for name in (
                "server",
                "daemon",
                "parse",
                "send",
                "loop",
                "threads",
                "acks_sink",
                "client",
            ):
                key = f"{name}_cpu_s"
                cpu = [x[key] / x["accepted"] * 1e6 for x in rs if x.get("accepted") and key in x]
                if cpu:
                    cell[kind][f"{name}_cpu_us_per_msg"] = summary(cpu)
            # cores busy while the load ran: every process on the machine (noise included)
            busy = [
                x["machine_busy_s"] / x["secs"]
                for x in rs
                if x.get("secs") and "machine_busy_s" in x
            ]
            if busy:
                cell[kind]["machine_cores"] = summary(busy)
            # the server's threads ready to run with no core free, on average over the run
            ready = [
                x["ready_wait_s"] / x["secs"] for x in rs if x.get("secs") and "ready_wait_s" in x
            ]
            if ready:
                cell[kind]["ready_threads"] = summary(ready)
            if kind.startswith("gateway"):
                cell[kind]["rows"] = [x["rows"] for x in rs]
                cell[kind]["outbox_at_end"] = [x.get("outbox") for x in rs]
        for kind in kinds[1:]:
            cell[f"ratio_{kind}_sink"] = _ratio(by_kind[kind], by_kind["sink"])
        # the gateway beside a sink on its own loop, and beside Postfix
        for other in ("sink_uvloop", "postfix"):
            if other in kinds:
                cell[f"ratio_gateway_{other}"] = _ratio(by_kind["gateway"], by_kind[other])
        cells[k] = cell
    return {"cells": cells, "raw": raw}


def _ratio(runs: list[dict[str, Any]], ceilings: list[dict[str, Any]]) -> dict[str, Any]:
    """The median and spread of each run's rate over the ceiling's in the same round."""
    return summary([r["rate"] / c["rate"] for r, c in zip(runs, ceilings, strict=True)])


def _mix(mails: list[Mail]) -> dict[str, Any]:
    sizes = sorted(len(m.data) for m in mails)
    return {
        "messages": len(mails),
        "waves": len({m.wave for m in mails}),
        "bytes_total": sum(sizes),
        "bytes_median": sizes[len(sizes) // 2] if sizes else 0,
        "with_attachments": sum(m.scan for m in mails),
    }


def fig1(count: int, levels: list[int], runs: int, results: Path, profile: bool) -> dict[str, Any]:
    """SMTP ingest without a scanner: text-only part of the mix; plus Postfix and a profile."""
    with workdir("fig1") as tmp:
        mails = corpus(count, tmp)
        text_only = [m for m in mails if not m.scan]
        load = write_load(text_only, tmp / "load.pkl")
        why_not = pf.available()
        # The bare sink runs aiosmtpd's default loop (asyncio's), the ceiling issue 21's
        # targets name; where the gateway runs uvloop, a second sink runs on it, the
        # like-for-like ceiling (and the floor's SMTP session, bench/floor.py).
        loop = gateway_loop()
        sinks = ["sink"] + (["sink_uvloop"] if loop == "uvloop" else [])
        kinds = sinks + ["gateway", "gateway_files"] + ([] if why_not else ["postfix"])
        out = _cells(load, levels, runs, kinds, None, tmp)
        out["gateway_loop"] = loop
        out["mix"] = _mix(text_only)
        out["mix"]["left_out_for_scanning"] = len(mails) - len(text_only)
        out["corpus_count"] = count
        out["skipped"] = {"postfix": why_not} if why_not else {}
        # The least each part could cost on the same mail (bench/floor.py), once a run.
        out["floor"] = floor.measure([m.data for m in text_only], runs, loop)
        if profile:
            out["profile"] = profile_gateway(load, max(levels), tmp, results)
    return out


def fig2(count: int, levels: list[int], runs: int) -> dict[str, Any]:
    """The whole mix, attachments scanned by a real clamd (one clamd for the figure)."""
    from tests.clamd_harness import running_clamd

    with workdir("fig2") as tmp, running_clamd(tmp / "clamd") as clamd:
        mails = corpus(count, tmp)
        load = write_load(mails, tmp / "load.pkl")
        out = _cells(load, levels, runs, ["sink", "gateway"], clamd.address, tmp)
        out["mix"] = _mix(mails)
        out["corpus_count"] = count
        out["skipped"] = {}
    return out


def profile_gateway(load: Path, k: int, tmp: Path, results: Path) -> dict[str, Any]:
    """py-spy on the gateway during one extra figure-1 run at K: a flame graph and a
    top-functions summary, saved under ``results`` (not counted in the figures)."""
    spy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
    if not Path(spy).exists():
        return {"skipped": "py-spy not installed (pip install -e '.[bench]')"}
    results.mkdir(parents=True, exist_ok=True)
    files = {
        "flamegraph": results / "fig1-profile.svg",
        "raw": results / "fig1-profile.collapsed.txt",
    }
    rates = {}
    for fmt, dest in files.items():
        # As in the figure: acknowledgements go out to a bare sink during the run, and
        # the start-up work is over before py-spy looks.
        outbox_sink = Sink()
        account = (
            f'[tenants.outbound]\nhost = "127.0.0.1"\nport = {outbox_sink.port}\n'
            'security = "none"\n'
        )
        gw = Daemon(tmp / f"profile-{fmt}", acme_extra=account, extra=account).start()
        assert gw.proc is not None
        _warm(gw)  # the language model's load (start-up work) before py-spy looks
        spy_proc = subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(gw.proc.pid),
                "--threads",
                "--rate",
                "250",
                "--format",
                fmt,
                "-o",
                str(dest),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            time.sleep(1.0)  # py-spy attaches
            rates[fmt] = run_load(gw.port, load, k)["rate"]
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(spy_proc.pid, signal.SIGINT)
            try:
                spy_proc.wait(60)
            except subprocess.TimeoutExpired:
                spy_proc.kill()
                spy_proc.wait()
            gw.stop()
            outbox_sink.stop()
    top = top_functions(files["raw"]) if files["raw"].exists() else "(no samples)"
    text_path = results / "fig1-profile-top.txt"
    text_path.write_text(top, encoding="utf-8")
    return {
        "k": k,
        "rate_under_profiler": rates,
        "svg": _rel(files["flamegraph"]) if files["flamegraph"].exists() else None,
        "top": _rel(text_path),
        "collapsed": _rel(files["raw"]) if files["raw"].exists() else None,
        "summary": top_summary(files["raw"]) if files["raw"].exists() else {},
    }


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


#: Leaf frames where a thread waits rather than works (a queue get, the selector, a
#: condition); py-spy does not recognise these C-level waits as idle.
IDLE_LEAVES = (
    "_worker (",
    "WorkerThread.run (",
    "_connection_worker_thread (",
    "EpollSelector.select (",
    "Condition.wait (",
    "Event.wait (",
    "Writer._next (",  # the store writer's thread waiting for a unit (store/writer.py)
)


def _stacks(raw: Path, busy_only: bool = True) -> list[tuple[list[str], int]]:
    """Collapsed stacks (thread first), without the waiting ones when ``busy_only``."""
    out = []
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not (stack and n.isdigit()):
            continue
        frames = stack.split(";")
        if busy_only and frames[-1].startswith(IDLE_LEAVES):
            continue
        out.append((frames, int(n)))
    return out


def _fn(frame: str) -> str:
    """``name (path/to/file.py:123)`` -> ``name (file.py)``: lines vary, functions do not."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    parts = where.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else where
    return f"{name} ({short})" if where else name


def _thread_role(frames: list[str]) -> str:
    """Name a sample's thread by what it runs (py-spy labels threads by id only)."""
    text = ";".join(frames)
    if "store/writer.py" in text:
        return "writer thread"
    if "futures/thread.py" in text or "threading.py" in text:
        return "other threads (asyncio.to_thread: blobs, big parses)"
    return "event loop (main thread)"


def top_summary(raw: Path) -> dict[str, Any]:
    """Shares of samples by thread and by area (our packages, SQLite, aiosmtpd, ...)."""
    stacks = _stacks(raw)
    total = sum(n for _, n in stacks) or 1
    threads: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    for frames, n in stacks:
        threads[_thread_role(frames)] += n
        seen = set()
        for f in frames[1:]:
            for area, needle in _AREAS:
                if needle in f and area not in seen:
                    seen.add(area)
                    areas[area] += n
    self_c: Counter[str] = Counter()
    for frames, n in stacks:
        self_c[_fn(frames[-1])] += n
    return {
        "samples": total,
        "top_self": {k: v / total for k, v in self_c.most_common(8)},
        "threads": {k: v / total for k, v in threads.most_common(6)},
        "areas_inclusive": {k: v / total for k, v in areas.most_common()},
    }


_AREAS = [
    ("aiosmtpd (SMTP protocol)", "aiosmtpd/"),
    ("parsers/ (MIME parse, body, quotes)", "parsers/"),
    ("routing/ (tenants, rules, threading)", "routing/"),
    ("store/ (writer thread, repos)", "store/"),
    ("outbound/ (acknowledgements)", "outbound/"),
    ("sqlalchemy", "sqlalchemy/"),
    ("sqlite3 execute/commit", "sqlite3"),
    ("structlog (logging)", "structlog/"),
    ("flanker", "flanker/"),
    ("stdlib email", "email/"),
    ("asyncio event loop", "asyncio/"),
]


def top_functions(raw: Path, n: int = 30) -> str:
    """Self and inclusive sample shares of the hottest functions, as plain text."""
    stacks = _stacks(raw)
    total = sum(c for _, c in stacks) or 1
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    for frames, c in stacks:
        fns = [_fn(f) for f in frames[1:]] or ["(thread idle)"]
        self_c[fns[-1]] += c
        for f in set(fns):
            incl[f] += c
    waiting = sum(c for _, c in _stacks(raw, busy_only=False)) - total
    lines = [
        f"py-spy samples: {total} busy (250 Hz, gateway process, all threads); "
        f"{waiting} more were threads waiting in a queue get, the selector or a "
        "condition, left out below",
        "",
    ]
    lines.append("self %   function")
    lines += [f"{v / total * 100:6.1f}   {k}" for k, v in self_c.most_common(n)]
    lines += ["", "incl %   function"]
    lines += [f"{v / total * 100:6.1f}   {k}" for k, v in incl.most_common(n)]
    return "\n".join(lines) + "\n"
