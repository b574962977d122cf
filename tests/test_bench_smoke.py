"""The benchmark harness cannot rot: ``python -m bench --smoke`` runs every figure with tiny
counts (real clamd, Dovecot and PostgreSQL, as CI installs them; Postfix and wrk are skipped
or replaced when absent, and the output says so) and the JSON has numbers for every figure.
Figure 9 runs SQLite and 1 and 2 PostgreSQL instances on 40 messages (about 12 s)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.daemon import ROOT

FIGURES = ("fig1", "fig2", "fig3", "fig4", "fig5", "fig6", "fig7", "fig8", "fig9", "fig11")
SCORES = ("fig10",)  # exact-match counts, not timings: no medians


def _medians(node: object) -> list[float]:
    """Every ``median`` in a figure's JSON."""
    if isinstance(node, dict):
        found = [node["median"]] if isinstance(node.get("median"), int | float) else []
        return found + [m for v in node.values() for m in _medians(v)]
    if isinstance(node, list):
        return [m for v in node for m in _medians(v)]
    return []


def test_smoke_run_measures_every_figure(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    doc = json.loads((tmp_path / "results" / "benchmarks.json").read_text())
    assert doc["errors"] == {}
    assert set(doc["figures"]) == set(FIGURES + SCORES)
    for name in FIGURES:
        medians = _medians(doc["figures"][name])
        assert medians and all(m == m for m in medians), name  # numbers, none NaN
    fig1 = doc["figures"]["fig1"]["cells"]
    for cell in fig1.values():
        assert cell["gateway"]["rate"]["median"] > 0
        assert cell["gateway"]["codes"].get("250", 0) == cell["gateway"]["sent"]
        # the daemon's CPU by thread, as the report says it: the loop and the others
        assert {"loop_cpu_us_per_msg", "threads_cpu_us_per_msg"} <= set(cell["gateway"])
    # figure 1's floor: each part measured, and said beside the gateway's processes
    floor = doc["figures"]["fig1"]["floor"]
    parts = ("parse", "store", "store_search", "send")
    assert all(floor[part]["median"] > 0 for part in parts), floor
    # ... on the gateway's loop, with a bare sink on that loop too where it is uvloop
    loop = doc["figures"]["fig1"]["gateway_loop"]
    assert floor["loop"] == loop
    assert all(("sink_uvloop" in cell) == (loop == "uvloop") for cell in fig1.values())
    fig9 = doc["figures"]["fig9"]
    assert fig9["skipped"] == {}, fig9["skipped"]  # CI installs PostgreSQL: no silent skip
    for cell in fig9["cells"].values():
        assert set(cell) == {"sqlite-1", "pg-1", "pg-2"}
        for case in cell.values():
            assert case["rate"]["median"] > 0
            assert case["exactly_once"], case
    ours = doc["figures"]["fig10"]["tools"]["ours"]
    assert ours["total"] >= 60 and ours["exact"] > 0, ours
    md = (tmp_path / "BENCHMARKS.md").read_text()
    assert "The daemon's own by thread" in md
    assert "The floor (`bench/floor.py`" in md and "against the store's" in md
    assert "SMOKE RUN" in md and "## 8. Web" in md and "## 9. Several gateway instances" in md


def test_the_committed_benchmarks_md_is_the_render_of_the_committed_json() -> None:
    """BENCHMARKS.md is generated (bench/report.py and its template): the file in the repo
    is exactly what ``python -m bench --render`` makes from bench/results/benchmarks.json
    (and bench/ab.py's ab.json and bench/ab_web.py's ab_web.json beside it, when there
    are)."""
    from bench.__main__ import _ab, _ab_web
    from bench.report import render

    rel = Path("bench") / "results" / "benchmarks.json"
    doc = json.loads((ROOT / rel).read_text(encoding="utf-8"))
    expected = render(doc, rel, _ab(ROOT / rel), _ab_web(ROOT / rel))
    assert expected == (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
