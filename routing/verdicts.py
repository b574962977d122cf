"""What a stage answers: typed values, not exceptions ("no" is an answer).

``gateway.intake.replies`` is the one place that turns these into SMTP replies, exit
codes for the MTA pipe, or IMAP actions.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Accepted", "Defer", "Outcome", "Reject", "Stored"]


@dataclass(frozen=True, slots=True)
class Stored:
    tenant: str
    ticket_ref: str | None
    thread_by: str  # token | references | tag | new | none
    duplicate: bool = False
    flagged: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Accepted:
    stored: tuple[Stored, ...]


@dataclass(frozen=True, slots=True)
class Reject:
    """Permanent: the sender must not retry (5xx; exit 65/67/69)."""

    code: int
    enhanced: str
    text: str
    exit_code: int = 65


@dataclass(frozen=True, slots=True)
class Defer:
    """Temporary: nothing was stored; the sender retries (4xx; exit 75)."""

    text: str
    code: int = 451
    enhanced: str = "4.3.0"


Outcome = Accepted | Reject | Defer
