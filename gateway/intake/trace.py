"""The canonical ``message`` log line of the pipeline (gateway/intake/pipeline.py),
filled in as the stages run: one line per message, what happened to it and why."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["TIMELINE", "Trace"]

# Stage times (ms) on each ``message`` line, for bench/fig_timeline.py: where a lone
# sender's latency goes. Off by default: a log field nobody reads is CPU for nothing.
TIMELINE = os.environ.get("GATEWAY_TIMELINE") == "1"


@dataclass(slots=True)
class Trace:
    """The canonical ``message`` log line, filled in as the stages run; only logged."""

    source: str
    size: int
    tenants: list[str] = field(default_factory=list)
    kind: str | None = None
    attachments: int | None = None
    scan: str | None = None
    scan_detail: str | None = None
    signature: str | None = None
    auth: str | None = None
    queued_as: str | None = None  # the id the 250 names: find the message by it
    rule: str | None = None
    error: str | None = None
    stages: dict[str, float] | None = None  # ms since the start, with GATEWAY_TIMELINE=1
    started: float = 0.0

    def fields(self) -> dict[str, Any]:
        """The set fields by name: read straight off the slots (``asdict`` deep-copied
        every value first, a third of the log line's cost)."""
        out = {}
        for name in _LOGGED:
            v = getattr(self, name)
            if v is not None and v != []:
                out[name] = v
        return out

    def mark(self, stage: str, at: float | None = None) -> None:
        if self.stages is not None:
            at = time.perf_counter() if at is None else at
            self.stages[stage] = round((at - self.started) * 1000, 3)


_LOGGED = tuple(f.name for f in fields(Trace) if f.name != "started")
