"""Deterministic crash points for the fault tests (RELIABILITY.md section 5).

``GATEWAY_TEST_CRASH_AT=<point>`` makes the process SIGKILL itself when it
reaches that point: the kill is real, only its timing is chosen. Unset, this
is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

__all__ = ["crash_point"]

_POINT = os.environ.get("GATEWAY_TEST_CRASH_AT", "")


def crash_point(name: str) -> None:
    if _POINT and _POINT == name:
        os.kill(os.getpid(), signal.SIGKILL)
