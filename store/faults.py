"""Deterministic crash points for the fault tests (tests/test_faults.py).

``GATEWAY_TEST_CRASH_AT=<point>`` makes the process SIGKILL itself when it
reaches that point: the kill is real, only its timing is chosen. Unset, this
is one dictionary lookup. Every point is named below, so a test and the code
that crashes agree on one spelling.

``GATEWAY_TEST_FAIL_REACTION=<reaction>`` makes that reaction to a stored mail
raise instead (see ``outbound/guard.py``): the clock has no input a
test could make fail for real, and one hook for all keeps the test uniform.
"""

from __future__ import annotations

import os
import signal
from typing import Any, Final

__all__ = [
    "AFTER_BLOB_FSYNC",
    "AFTER_COMMIT_BEFORE_REPLY",
    "BEFORE_COMMIT",
    "IMAP_AFTER_COMMIT_BEFORE_MOVE",
    "POINTS",
    "InjectedFault",
    "crash_point",
    "fail_reaction",
    "is_message_commit",
    "message_commit",
]

#: The file blob store's moment: the blobs are durable, the rows not yet.
AFTER_BLOB_FSYNC: Final = "after_blob_fsync"
#: A message's rows are written, the transaction not yet committed.
BEFORE_COMMIT: Final = "before_commit"
#: Committed, the sender not yet answered (the RFC 1047 window).
AFTER_COMMIT_BEFORE_REPLY: Final = "after_commit_before_reply"
#: Committed, the IMAP message not yet moved out of its folder.
IMAP_AFTER_COMMIT_BEFORE_MOVE: Final = "imap_after_commit_before_move"

POINTS: Final = frozenset(
    {AFTER_BLOB_FSYNC, BEFORE_COMMIT, AFTER_COMMIT_BEFORE_REPLY, IMAP_AFTER_COMMIT_BEFORE_MOVE}
)

_POINT = os.environ.get("GATEWAY_TEST_CRASH_AT", "")


def crash_point(name: str) -> None:
    if _POINT and _POINT == name:
        os.kill(os.getpid(), signal.SIGKILL)


_FAIL_REACTION = os.environ.get("GATEWAY_TEST_FAIL_REACTION", "")


class InjectedFault(RuntimeError):
    """The failure a fault test asked for; nothing else raises it."""


def fail_reaction(name: str) -> None:
    if _FAIL_REACTION and _FAIL_REACTION == name:
        raise InjectedFault(f"injected fault in reaction {name!r}")


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
