"""Figure 9: SMTP ingest with 1, 2 and 3 gateway instances on one PostgreSQL, beside SQLite.

Why: docs/scaling.md tells admins to add instances on one PostgreSQL database
when one machine is not enough. What an instance adds, and what one database
shared by several costs, is only known by measuring it, and only comparable
inside one run on this shared, noisy machine: so every run measures one
gateway on SQLite (the default) and 1, 2, 3 instances on PostgreSQL, in turn,
on the same mail at the same total concurrency, and the figure is read as the
per-run ratios PostgreSQL N / SQLite 1.

Everything is real and as in production: a private PostgreSQL cluster
(tests/pg_harness.py) with the durability of a production server (fsync,
synchronous_commit and full_page_writes on), one real clamd scanning the
attachment-carrying mail, gateway processes configured as docs/scaling.md says
(a distinct ``[gateway] instance``, one secret and key file, the database
blob store, one ``database_url``), and the load generator in its own process
with K sessions in total spread round-robin across the instances (as senders spread
over equal-preference MX hosts). Each case gets fresh gateway processes and a
fresh database; after a PostgreSQL case the database is dropped and a
CHECKPOINT is forced, so no case pays for its predecessor's dirty pages.

Each instance takes mail of its own before the case is measured (``WARM_COUNT`` mails
of another seed of the generator, none of them the measured mail), then the case waits
for it to go quiet: a fresh process compiles its statements and templates and loads the
language model on its first mail, about a second of CPU a process, which counted into a
few hundred measured messages read as thousands of µs a message and grew with the
number of instances (figure 1 warms its gateway too, fig_smtp ``_warm``). On PostgreSQL
the warmed database is then ANALYZEd, as autovacuum does within a minute of the tables
growing (``autovacuum_naptime``): the writer's statements are prepared, and the generic
plans made while the planner still took the tables for empty read all of the tenant's
Message-IDs and tickets in each first look that names a Message-ID (~240 buffers a look,
~700 rows a message in all, growing with the store), which no instance that has run for
that minute pays (bench/results/notes/analyze29.md). SQLite keeps no statistics unless told
(``ANALYZE``, which the gateway never runs), so its case is as it was.

Besides rate and end-of-DATA latency, each case records the CPU time of every
party (the gateways, all PostgreSQL processes, clamd, the load client, and the
whole machine, which includes whatever else runs on it): with 2 cores that
says what bounds the rate. And each case checks exactly-once storage: as many
stored messages as the SQLite gateway stores for the same mail, and no
(tenant, message_key) twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import secrets
import sqlite3
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import corpus, cpu_seconds, run_load, settle, summary, workdir, write_load
from bench.fig_smtp import _mix
from bench.smtp_client import machine_busy
from tests.daemon import Daemon
from tests.pg_harness import Cluster, pg_bin

#: The server's tuning for the figure. Durability is production's (the defaults, stated);
#: memory is modest, as on a small shared database host. Nothing else is changed.
PG_SETTINGS = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "shared_buffers": "128MB",
    "max_wal_size": "1GB",
}
#: Read back from the server and recorded with the figure: what the numbers were made with.
PG_SHOW = (
    "server_version",
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_sync_method",
    "shared_buffers",
    "max_wal_size",
    "checkpoint_timeout",
    "deadlock_timeout",
    "max_connections",
)
#: Bound on one load run (count is bounded by the corpus).
LOAD_TIMEOUT = 180.0
#: Mails each instance takes before its case is measured (see the module's docstring), at
#: this many sessions; instance i's are the generator's seed WARM_SEED + i.
WARM_COUNT = 150
WARM_K = 4
WARM_SEED = 101
SQLITE_URL = "sqlite+aiosqlite:///var/gateway.db"
#: ANALYZE the warmed PostgreSQL database before the case (the module's docstring says
#: why); False only to measure what it changes (bench/results/notes/analyze29.md).
ANALYZE = True


def case_label(engine: str, n: int) -> str:
    return f"{engine}-{n}"


def fig9(count: int, levels: list[int], instances: list[int], runs: int) -> dict[str, Any]:
    """One PostgreSQL cluster and one clamd for the figure; per run and K, the SQLite
    gateway and then 1..N PostgreSQL instances, each case a fresh set of processes."""
    from tests.clamd_harness import running_clamd

    skipped: dict[str, str] = {}
    try:
        pg_bin()
    except RuntimeError as exc:
        skipped["postgresql"] = str(exc)
    cases = [("sqlite", 1)] + ([] if skipped else [("pg", n) for n in instances])
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(workdir("fig9"))
        clamd = stack.enter_context(running_clamd(tmp / "clamd"))
        cluster: Cluster | None = None
        if not skipped:
            cluster = Cluster(durable=True, settings=PG_SETTINGS).start()
            stack.callback(cluster.stop)  # fast shutdown by the postmaster's pid
        effective = _show(cluster) if cluster is not None else {}
        mails = corpus(count, tmp)
        load = write_load(mails, tmp / "load.pkl")
        warm = [
            write_load(corpus(min(WARM_COUNT, count), tmp, WARM_SEED + i), tmp / f"warm{i}.pkl")
            for i in range(max(n for _, n in cases))
        ]
        raw: dict[str, dict[str, list[dict[str, Any]]]] = {
            str(k): {case_label(e, n): [] for e, n in cases} for k in levels
        }
        seq = 0
        for r in range(runs):
            for k in levels:
                for engine, n in cases:
                    seq += 1
                    res = _case(engine, n, load, warm, k, tmp / f"c{seq}", clamd, cluster)
                    raw[str(k)][case_label(engine, n)].append(res)
                    print(
                        f"  run {r + 1} K={k} {case_label(engine, n)}: {res['rate']:.0f} msg/s "
                        f"p50 {res['p50_ms'] or 0:.1f} p99 {res['p99_ms'] or 0:.1f} ms "
                        f"codes {res['codes']} rows {res['rows']} "
                        f"cores gw {res['cores']['gateways']:.2f} "
                        f"pg {res['cores']['postgresql']:.2f} "
                        f"clamd {res['cores']['clamd']:.2f} "
                        f"machine {res['cores']['machine']:.2f}",
                        flush=True,
                    )
        out: dict[str, Any] = {
            "cells": _cells(raw),
            "raw": raw,
            "mix": _mix(mails),
            "corpus_count": count,
            "warm_count": min(WARM_COUNT, count),
            "analyzed": ANALYZE and not skipped,
            "runs": runs,
            "levels": levels,
            "instances": [n for e, n in cases if e == "pg"],
            "pg_settings": PG_SETTINGS if not skipped else {},
            "pg_effective": effective,
            "pg_version": pg_bin().parent.name if not skipped else None,
            "skipped": skipped,
        }
    return out


def _cells(raw: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    cells: dict[str, Any] = {}
    for k, by_case in raw.items():
        base = by_case["sqlite-1"]
        cell: dict[str, Any] = {}
        for label, rs in by_case.items():
            codes: Counter[str] = Counter()
            for x in rs:
                codes.update(x["codes"])
            c: dict[str, Any] = {
                "rate": summary([x["rate"] for x in rs]),
                "p50_ms": summary([x["p50_ms"] for x in rs if x["p50_ms"] is not None]),
                "p99_ms": summary([x["p99_ms"] for x in rs if x["p99_ms"] is not None]),
                "codes": dict(codes),
                "sent": sum(x["sent"] for x in rs),
                "rows": [x["rows"] for x in rs],
                "duplicate_keys": [x["duplicate_keys"] for x in rs],
                "not_accepted": [x["sent"] - x["accepted"] for x in rs],
                "faults": dict(sum((Counter(x.get("faults", {})) for x in rs), Counter())),
                "deadlocks": [sum(x.get("deadlocks", {}).values()) for x in rs],
                "deadlocks_by_relation": dict(
                    sum((Counter(x.get("deadlocks", {})) for x in rs), Counter())
                ),
                "batches_failed": [x.get("batches_failed", 0) for x in rs],
                "exactly_once": all(_exactly_once(x, b) for x, b in zip(rs, base, strict=True)),
                "ratio_to_sqlite1": summary(
                    [x["rate"] / b["rate"] for x, b in zip(rs, base, strict=True) if b["rate"]]
                ),
            }
            for part in ("gateways", "daemons", "postgresql", "clamd", "client", "machine"):
                c[f"cpu_us_per_msg_{part}"] = summary(
                    [x["cpu_s"][part] / x["accepted"] * 1e6 for x in rs if x["accepted"]]
                )
                c[f"cores_{part}"] = summary([x["cores"][part] for x in rs])
            cell[label] = c
        cells[k] = cell
    return cells


def _exactly_once(x: dict[str, Any], base: dict[str, Any]) -> bool:
    """Every accepted message stored once, judged against the SQLite gateway that took the
    same mail in the same run (the corpus repeats some mails; those are stored once).

    No (tenant, message_key) is stored twice, and the stored count is that of SQLite less
    at most one per message not accepted (a 4xx the sender retries stores nothing; it may
    have been a repeat whose first copy is stored). Fewer rows would be an accepted
    message lost; more, one stored twice under another key.
    """
    refused = x["sent"] - x["accepted"]
    return (
        base["accepted"] == base["sent"]
        and x["duplicate_keys"] == 0
        and base["rows"] - refused <= x["rows"] <= base["rows"]
        and x["rows"] > 0
    )


def _case(
    engine: str,
    n: int,
    load: Path,
    warm: list[Path],
    k: int,
    home: Path,
    clamd: Any,
    cluster: Cluster | None,
) -> dict[str, Any]:
    """Fresh store, ``n`` fresh gateways, each warmed by its own mail (``warm[i]``), one
    load run at total concurrency ``k``; every process started here is stopped again
    before returning. Rows are the load's: those stored after the warm-up."""
    database: str | None = None
    if engine == "pg":
        assert cluster is not None
        database = cluster.new_database("bench")
        url = cluster.url(database)
    else:
        url = SQLITE_URL  # explicit: GATEWAY_TEST_DB must not move the baseline
    gws = _gateways(home, n, url, clamd.address)
    pg_log = cluster.dir / "log" if cluster is not None else None
    log_offset = pg_log.stat().st_size if pg_log is not None and pg_log.exists() else 0
    try:
        with ThreadPoolExecutor(len(gws)) as pool:  # start together, as after a deploy
            list(pool.map(lambda d: d.start(timeout=60), gws))
        procs = [d.proc.pid for d in gws if d.proc is not None]
        for d, mail in zip(gws, warm, strict=False):
            taken = run_load(d.port, mail, WARM_K, timeout=LOAD_TIMEOUT)
            if taken["accepted"] != taken["sent"]:
                raise RuntimeError(f"warm-up mail refused: {taken['codes']}")
        for pid in procs:
            settle(pid)
        if database is not None and ANALYZE:
            assert cluster is not None
            with cluster.connect(database, autocommit=True) as conn:
                conn.execute("ANALYZE")  # what autovacuum would have done by now (above)
        warm_rows = _rows(cluster, database, home)[0]
        before = _cpu(procs, cluster, clamd.pid)
        t0 = time.perf_counter()
        res = run_load([d.port for d in gws], load, k, timeout=LOAD_TIMEOUT)
        wall = time.perf_counter() - t0
        after = _cpu(procs, cluster, clamd.pid)
    finally:
        with ThreadPoolExecutor(len(gws)) as pool:
            list(pool.map(_stop, gws))
    res["cpu_s"] = {p: after[p] - before[p] for p in after}
    res["cores"] = {p: v / wall for p, v in res["cpu_s"].items()}
    res["per_instance"] = [res.get("accepted_per_port", {}).get(str(d.port), 0) for d in gws]
    res["faults"] = _faults(gws)
    res["batches_failed"] = _log_count(gws, '"batch_failed"')
    res["deadlocks"] = _deadlocks(pg_log, log_offset) if database is not None else {}
    rows, res["duplicate_keys"] = _rows(cluster, database, home)
    res["rows"], res["warm_rows"] = rows - warm_rows, warm_rows
    if database is not None:
        assert cluster is not None
        with cluster.connect(autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
            conn.execute("CHECKPOINT")
    return res


def _rows(cluster: Cluster | None, database: str | None, home: Path) -> tuple[int, int]:
    """Stored messages and (tenant, message_key) stored twice, so far."""
    if database is not None:
        assert cluster is not None
        return _pg_counts(cluster, database)
    return _sqlite_counts(home / "gw0" / "var" / "gateway.db")


def _gateways(home: Path, n: int, url: str, scanner: str) -> list[Daemon]:
    """``n`` gateway configs as docs/scaling.md asks: distinct ``instance``, one secret and
    key file, and the database blob store (the default, and what it recommends for
    several instances)."""
    from routing.secrets import load_keyring

    shared = home / "shared"
    shared.mkdir(parents=True)
    (shared / "secret.key").write_text(secrets.token_hex(32))
    load_keyring(shared / "keys.toml")  # made once, before the instances start together
    out = []
    for i in range(n):
        gw_home = home / f"gw{i}"
        (gw_home / "var").mkdir(parents=True)
        gateway = (
            f'instance = "gw{i}"\n'
            f'secret_file = "{shared / "secret.key"}"\nkey_file = "{shared / "keys.toml"}"'
        )
        out.append(Daemon(gw_home, scanner=scanner, database_url=url, gateway_extra=gateway))
    return out


def _faults(gws: list[Daemon]) -> dict[str, int]:
    """Why mail was deferred, from the gateways' own ``pipeline_fault`` log lines (error and
    constraint), so the figure can say what a 451 was rather than only count it."""
    found: Counter[str] = Counter()
    for d in gws:
        with contextlib.suppress(OSError):
            for line in d.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
                if '"pipeline_fault"' not in line:
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                detail = str(rec.get("detail", ""))
                kind = re.search(r"\(psycopg\.errors\.(\w+)\)", detail)
                on = re.search(r'constraint "([^"]+)"', detail)
                found[
                    str(rec.get("error"))
                    + (f" ({kind.group(1)})" if kind else "")
                    + (f" on {on.group(1)}" if on else "")
                ] += 1
    return dict(found)


def _log_count(gws: list[Daemon], needle: str) -> int:
    n = 0
    for d in gws:
        with contextlib.suppress(OSError):
            n += d.log_path.read_text(encoding="utf-8", errors="replace").count(needle)
    return n


def _deadlocks(pg_log: Path | None, offset: int) -> dict[str, int]:
    """Deadlocks PostgreSQL detected (and broke, after ``deadlock_timeout``) during the
    case, by the relation its CONTEXT line names: each one stalled two transactions."""
    if pg_log is None:
        return {}
    try:
        with open(pg_log, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return {}
    found: Counter[str] = Counter()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "ERROR:  deadlock detected" not in line:
            continue
        rel = "?"
        for follow in lines[i + 1 : i + 12]:
            m = re.search(r'in relation "([^"]+)"', follow)
            if m:
                rel = m.group(1)
                break
        found[rel] += 1
    return dict(found)


def _stop(d: Daemon) -> None:
    if d.proc is None:
        return
    try:
        d.stop(timeout=30)
    except Exception:  # a gateway that will not stop is killed; the figure goes on
        d.kill()


def _cpu(gw_pids: list[int], cluster: Cluster | None, clamd_pid: int) -> dict[str, float]:
    """CPU seconds so far of each party; differences over a run say who was busy."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the reaped load clients
    pm = cluster.pid() if cluster is not None else None
    return {
        "gateways": sum(cpu_seconds(p) for p in gw_pids),
        # The daemons alone; the rest of "gateways" is their workers (parse, send), whose
        # work a message does not depend on the number of instances: how much more CPU
        # it takes with more instances is the machine's crowding, not the design's.
        "daemons": sum(cpu_seconds(p, own=True) for p in gw_pids),
        "postgresql": _tree_cpu(pm) if pm is not None else 0.0,
        "clamd": cpu_seconds(clamd_pid),
        "client": children.ru_utime + children.ru_stime,
        "machine": machine_busy(),
    }


def _tree_cpu(root: int) -> float:
    """CPU of a postmaster and its live children, plus what its exited children (backends
    of a closed connection) left in its cutime/cstime."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            f = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        pid = int(stat.parent.name)
        if pid == root:
            total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
        elif int(f[1]) == root:
            total += int(f[11]) + int(f[12])
    return total / tick


def _show(cluster: Cluster) -> dict[str, str]:
    with cluster.connect(autocommit=True) as conn:
        return {name: str(conn.execute(f"SHOW {name}").fetchone()[0]) for name in PG_SHOW}


def _pg_counts(cluster: Cluster, database: str) -> tuple[int, int]:
    with cluster.connect(database, autocommit=True) as conn:
        rows = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
        dups = conn.execute(_DUPLICATES).fetchone()[0]
    return int(rows), int(dups)


def _sqlite_counts(db: Path) -> tuple[int, int]:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as c:
            rows = c.execute("SELECT count(*) FROM messages").fetchone()[0]
            dups = c.execute(_DUPLICATES).fetchone()[0]
    except sqlite3.Error:
        return 0, 0
    return int(rows), int(dups)


_DUPLICATES = (
    "SELECT count(*) FROM (SELECT tenant, message_key FROM messages "
    "GROUP BY tenant, message_key HAVING count(*) > 1) AS d"
)
