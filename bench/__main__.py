"""``python -m bench``: every figure of issue #9 in one run, to JSON and BENCHMARKS.md.

    python -m bench                      # all figures, 5 runs each, BENCHMARKS.md + bench/results/
    python -m bench --only fig1,fig5     # some figures (the files then hold only those)
    python -m bench --smoke              # tiny counts, 1 run, into a temp dir (CI)
    python -m bench --runs 7 --out DIR
    python -m bench --only fig9 --merge  # one figure again; the others stay from their run

Why one entry point: the figures are only comparable, and only reproducible,
if one command measures all of them the same way on the same machine. The
JSON is written after every figure, so an interrupted run keeps what it
measured; BENCHMARKS.md is generated from the JSON alone (bench/report.py, with
the prose in bench/templates/BENCHMARKS.md.j2).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.common import ROOT, machine

FIGURES = ("fig1", "fig2", "fig3", "fig4", "fig5", "fig6", "fig7", "fig8", "fig9", "fig10", "fig11")


@dataclass(frozen=True)
class Counts:
    """How much each figure does per run. ``full`` is the committed run; ``smoke`` keeps CI
    under a minute while still going through every code path but the profiler."""

    fig1_corpus: int = 2000
    fig1_levels: list[int] = field(default_factory=lambda: [1, 8, 32])
    fig1_profile: bool = True
    fig2_corpus: int = 600
    fig2_levels: list[int] = field(default_factory=lambda: [1, 8, 32])
    fig3_per_run: int = 30
    fig3_corpus: int = 200
    fig3_lmtp_corpus: int = 600
    fig4_corpus: int = 1000
    fig4_latency: int = 50
    fig5_sizes: list[int] = field(default_factory=lambda: [10_000, 100_000, 1_000_000])
    fig5_replies: int = 200
    fig6_conc: int = 32
    fig6_attachment: int = 7 * 2**20
    fig6_backlog: int = 50_000
    fig6_window: float = 20.0
    fig7_mails: int = 1000
    fig8_conc: int = 8
    fig8_secs: float = 10.0
    fig9_corpus: int = 600
    fig9_max_runs: int = 3  # 4 cases x 2 levels per run, ~90 s a run: 3 keep it near 5 min
    fig9_levels: list[int] = field(default_factory=lambda: [8, 32])
    fig9_instances: list[int] = field(default_factory=lambda: [1, 2, 3])
    fig11_messages: int = 1_000_000
    fig11_rounds: int = 20
    fig11_budget_s: float = 600.0  # each engine's fill stops here and says how far it got
    fig11_pg_messages: int = 1_000_000


SMOKE = Counts(
    fig1_corpus=60,
    fig1_levels=[1, 4],
    fig1_profile=False,
    fig2_corpus=40,
    fig2_levels=[4],
    fig3_per_run=2,
    fig3_corpus=40,
    fig3_lmtp_corpus=40,
    fig4_corpus=40,
    fig4_latency=2,
    fig5_sizes=[400, 800, 2000],
    fig5_replies=5,
    fig6_conc=4,
    fig6_attachment=200_000,
    fig6_backlog=100,
    fig6_window=0.5,
    fig7_mails=20,
    fig8_conc=4,
    fig8_secs=1.0,
    fig9_corpus=40,
    fig9_levels=[4],
    fig9_instances=[1, 2],
    fig11_messages=2000,
    fig11_rounds=2,
    fig11_pg_messages=2000,
)


def run_figure(name: str, c: Counts, runs: int, results: Path) -> dict[str, Any]:
    from bench import (
        fig_imap,
        fig_instances,
        fig_memory,
        fig_outbox,
        fig_pipe,
        fig_replies,
        fig_search,
        fig_smtp,
        fig_threading,
        fig_web,
    )

    if name == "fig1":
        return fig_smtp.fig1(c.fig1_corpus, c.fig1_levels, runs, results, c.fig1_profile)
    if name == "fig2":
        return fig_smtp.fig2(c.fig2_corpus, c.fig2_levels, runs)
    if name == "fig3":
        out = fig_pipe.fig3(c.fig3_corpus, c.fig3_per_run, runs)
        out["lmtp"] = fig_pipe.fig3_lmtp(c.fig3_lmtp_corpus, runs)
        return out
    if name == "fig4":
        return fig_imap.fig4(c.fig4_corpus, c.fig4_latency, runs)
    if name == "fig5":
        return fig_threading.fig5(c.fig5_sizes, c.fig5_replies, runs)
    if name == "fig6":
        return {
            "smtp": fig_memory.fig6a(c.fig6_conc, c.fig6_attachment, runs),
            "imap": fig_imap.backlog_memory(c.fig6_backlog, c.fig6_window, runs),
        }
    if name == "fig7":
        return fig_outbox.fig7(c.fig7_mails, runs)
    if name == "fig8":
        return fig_web.fig8(c.fig8_conc, c.fig8_secs, runs)
    if name == "fig9":
        return fig_instances.fig9(
            c.fig9_corpus, c.fig9_levels, c.fig9_instances, min(runs, c.fig9_max_runs)
        )
    if name == "fig10":
        return fig_replies.fig10()  # a score, not a timing: one pass is the figure
    if name == "fig11":
        return fig_search.fig11(
            c.fig11_messages, c.fig11_rounds, runs, c.fig11_budget_s, c.fig11_pg_messages
        )
    raise ValueError(name)


def _json_path(out: Path) -> Path:
    return (
        out / "bench" / "results" / "benchmarks.json"
        if out == ROOT
        else out / "results" / ("benchmarks.json")
    )


def _ab(json_path: Path) -> dict[str, Any] | None:
    """bench/ab.py's before/after beside the run's JSON (its own run, its own date)."""
    from bench.ab import medians

    path = json_path.parent / "ab.json"
    if not path.exists():
        return None
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["medians"] = medians(doc["rounds"])
    return dict(doc)


def _ab_web(json_path: Path) -> dict[str, Any] | None:
    """bench/ab_web.py's before/after of figure 8, beside the run's JSON, if one was run."""
    path = json_path.parent / "ab_web.json"
    return dict(json.loads(path.read_text(encoding="utf-8"))) if path.exists() else None


def render_only(out: Path) -> int:
    """BENCHMARKS.md from the JSON already there: the figures stay those of the run."""
    from bench.report import render

    json_path = _json_path(out)
    doc = json.loads(json_path.read_text(encoding="utf-8"))
    md = render(doc, json_path.relative_to(out), _ab(json_path), _ab_web(json_path))
    (out / "BENCHMARKS.md").write_text(md, encoding="utf-8")
    print(f"wrote {out / 'BENCHMARKS.md'} from {json_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=None, help="runs per figure (default 5; smoke 1)")
    ap.add_argument("--only", default=",".join(FIGURES), help="comma-separated figures")
    ap.add_argument("--smoke", action="store_true", help="tiny counts, 1 run, temp output")
    ap.add_argument("--out", type=Path, default=None, help="folder for BENCHMARKS.md + JSON")
    ap.add_argument(
        "--render",
        action="store_true",
        help="measure nothing: write BENCHMARKS.md again from the JSON in --out (after a "
        "change to bench/report.py or bench/templates/BENCHMARKS.md.j2)",
    )
    ap.add_argument(
        "--merge",
        action="store_true",
        help="keep the other figures of the JSON already in --out and replace only the "
        "measured ones (each merged figure says when and on what it was measured)",
    )
    args = ap.parse_args(argv)
    if args.render:
        return render_only(args.out or ROOT)
    only = [f.strip() for f in args.only.split(",") if f.strip()]
    unknown = set(only) - set(FIGURES)
    if unknown:
        ap.error(f"unknown figures: {', '.join(sorted(unknown))}")
    counts = SMOKE if args.smoke else Counts()
    runs = args.runs if args.runs is not None else (1 if args.smoke else 5)
    if runs < 1:
        ap.error("--runs must be at least 1")
    out = args.out or (Path(tempfile.mkdtemp(prefix="bench-smoke-")) if args.smoke else ROOT)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "bench" / "results" if out == ROOT else out / "results"
    results.mkdir(parents=True, exist_ok=True)
    json_path = results / "benchmarks.json"
    command = shlex.join(["python", "-m", "bench", *(argv if argv is not None else sys.argv[1:])])
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    doc: dict[str, Any] = {
        "command": command,
        "started": started,
        "smoke": args.smoke,
        "runs": runs,
        "counts": asdict(counts),
        "machine": machine(),
        "figures": {},
        "errors": {},
    }
    if args.merge and json_path.exists():
        # The header (command, date, machine) stays that of the run that measured the
        # other figures; each figure measured now carries its own in "merged".
        this_run = doc
        doc = json.loads(json_path.read_text(encoding="utf-8"))
        doc.setdefault("merged", {})
        for name in only:
            doc["merged"][name] = {
                "command": command,
                "started": started,
                "runs": runs,
                "counts": {k: v for k, v in this_run["counts"].items() if k.startswith(name)},
                "machine": this_run["machine"],
            }
            doc["figures"].pop(name, None)
            doc["errors"].pop(name, None)
    for name in only:
        print(f"== {name}", flush=True)
        t0 = time.monotonic()
        try:
            doc["figures"][name] = run_figure(name, counts, runs, results)
            doc["figures"][name]["wall_s"] = time.monotonic() - t0
        except Exception:  # one broken figure must not lose the others
            doc["errors"][name] = traceback.format_exc()[-4000:]
            print(doc["errors"][name], file=sys.stderr, flush=True)
        if args.merge and name in doc.get("merged", {}):
            doc["merged"][name]["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        else:
            doc["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        json_path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    from bench.report import render

    md = out / "BENCHMARKS.md"
    md.write_text(
        render(doc, json_path.relative_to(out), _ab(json_path), _ab_web(json_path)),
        encoding="utf-8",
    )
    print(f"wrote {md} and {json_path}")
    return 1 if doc["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
