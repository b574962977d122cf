"""The one clock: every part of the daemon and the command line reads time here.

A test cannot wait out a 15-minute lockout or a month's report, so the real
clock can be shifted by the seconds written in ``$GATEWAY_TEST_CLOCK_FILE``;
the shift is read on every call, so a test moves time by rewriting the file.
Unset, it is the store's clock (UTC, aware).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from store import repos

__all__ = ["Clock", "system_clock"]

Clock = Callable[[], datetime]


def system_clock() -> Clock:
    """The real clock, shifted by the seconds in $GATEWAY_TEST_CLOCK_FILE (tests only)."""
    path = os.environ.get("GATEWAY_TEST_CLOCK_FILE")

    def now() -> datetime:
        offset = 0.0
        if path:
            try:
                offset = float(Path(path).read_text() or 0)
            except (OSError, ValueError):
                offset = 0.0
        return repos.now() + timedelta(seconds=offset)

    return now
