"""The project's mail corpus: a seeded helpdesk mix, and what a correct helpdesk does with it.

``gen_corpus.py`` writes it with the standard library alone, so a peer helpdesk can be
scored on the same mail; ``README.md`` here is the delivery contract a feeder follows.
It lives inside the repository so that a clone from anywhere runs its tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["GEN", "generate"]

GEN = Path(__file__).resolve().with_name("gen_corpus.py")


def generate(out: Path, count: int, seed: int) -> dict[str, Any]:
    """Write ``count`` messages (seeded, so every run sees the same mail) to ``out`` and
    return its ``expectations.json``: the scorecard the tests grade the gateway by."""
    subprocess.run(
        [sys.executable, str(GEN), str(out), "--count", str(count), "--seed", str(seed)],
        check=True,
        capture_output=True,
    )
    result: dict[str, Any] = json.loads((out / "expectations.json").read_text(encoding="utf-8"))
    return result
