"""The benchmark harness cannot rot: ``python -m bench --smoke`` runs every figure with tiny
counts (real clamd and Dovecot, as CI installs them; Postfix and wrk are skipped or replaced
when absent, and the output says so) and the JSON has numbers for every figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.daemon import ROOT

FIGURES = ("fig1", "fig2", "fig3", "fig4", "fig5", "fig6", "fig7", "fig8")


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
    assert set(doc["figures"]) == set(FIGURES)
    for name in FIGURES:
        medians = _medians(doc["figures"][name])
        assert medians and all(m == m for m in medians), name  # numbers, none NaN
    fig1 = doc["figures"]["fig1"]["cells"]
    for cell in fig1.values():
        assert cell["gateway"]["rate"]["median"] > 0
        assert cell["gateway"]["codes"].get("250", 0) == cell["gateway"]["sent"]
    md = (tmp_path / "BENCHMARKS.md").read_text()
    assert "SMOKE RUN" in md and "## 8. Web" in md
