"""Deterministic crash points for the fault tests (docs/architecture.md, "Tests").

``GATEWAY_TEST_CRASH_AT=<point>`` makes the process SIGKILL itself when it
reaches that point: the kill is real, only its timing is chosen. Unset, this
is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
from typing import Any

__all__ = ["crash_point", "is_message_commit", "message_commit"]

_POINT = os.environ.get("GATEWAY_TEST_CRASH_AT", "")


def crash_point(name: str) -> None:
    if _POINT and _POINT == name:
        os.kill(os.getpid(), signal.SIGKILL)


_MESSAGE_COMMIT = "_gateway_message_commit"


def message_commit(work: Any) -> Any:
    """Mark a writer unit as a message's commit: only those trip ``before_commit``.

    The daemon also commits housekeeping (outbox claims, IMAP positions) from
    its first second; a fault test means the commit of the mail it sends.
    """
    setattr(work, _MESSAGE_COMMIT, True)
    return work


def is_message_commit(work: Any) -> bool:
    return bool(getattr(work, _MESSAGE_COMMIT, False))
