"""What a stage answers: typed values, not exceptions ("no" is an answer).

``gateway.intake.replies`` is the one place that chooses, for each
:class:`Reason`, the SMTP (and LMTP) reply, the IMAP action and the exit
code for the MTA pipe; a Reject or Defer carries the reply it was given
there, so every intake reads the same words.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "Accepted",
    "Defer",
    "Drop",
    "Outcome",
    "Quarantine",
    "Reason",
    "Reject",
    "Stored",
]


class Reason(StrEnum):
    """Why a message was refused, deferred, dropped or set aside: the key of the answer table."""

    # Refused for good (5xx): nothing is stored.
    NO_SUCH_RECIPIENT = "no-such-recipient"
    BAD_SENDER = "bad-sender"
    TOO_BIG = "too-big"
    TOO_BIG_TO_FETCH = "too-big-to-fetch"  # IMAP: the server's size, known before FETCH
    HEADER_TOO_LARGE = "header-too-large"
    TOO_COMPLEX = "too-complex"  # MIME nesting or part count over the limits
    UNREADABLE = "unreadable"
    LOOP = "loop"
    INFECTED = "infected"
    TOO_COMPLEX_TO_SCAN = "too-complex-to-scan"  # clamd hit a scan limit (zip bomb)
    UNSCANNABLE = "unscannable"  # over clamd's stream limit: can never be scanned
    RULE = "rule"  # a tenant's rule said reject, with its own reply
    # Deferred (4xx): nothing is stored, the sender retries.
    SHUTTING_DOWN = "shutting-down"
    TOO_MANY_RECIPIENTS = "too-many-recipients"
    SCANNER_UNAVAILABLE = "scanner-unavailable"
    TIMEOUT = "timeout"
    STORE_UNAVAILABLE = "store-unavailable"
    FAULT = "fault"
    # Accepted and not kept (250).
    DUPLICATE = "duplicate"
    RULE_DROP = "rule-drop"
    # Set aside for a person (IMAP only).
    DEFERRED_TOO_OFTEN = "deferred-too-often"


@dataclass(frozen=True, slots=True)
class Stored:
    """What one tenant kept of a message; ``drop`` says why it kept nothing new."""

    tenant: str
    ticket_ref: str | None
    thread_by: str  # token | references | tag | new | none
    flagged: tuple[str, ...] = ()
    drop: Reason | None = None  # DUPLICATE or RULE_DROP

    @property
    def duplicate(self) -> bool:
        return self.drop is Reason.DUPLICATE


@dataclass(frozen=True, slots=True)
class Accepted:
    """Committed for every tenant the envelope named (250; exit 0).

    ``queued_as``: the arrival's opaque id, the only thing the 250 names (never a
    ticket ref, which would let anyone probe refs); logged and stored with the message.
    """

    stored: tuple[Stored, ...]
    queued_as: str = ""


@dataclass(frozen=True, slots=True)
class Drop(Accepted):
    """Accepted and not kept: every tenant had it already or a rule dropped it.

    Still an Accepted: the sender must not retry (250) and the IMAP message
    is done; only the audit log (a rule's drop) or nothing (a duplicate)
    shows it came.
    """

    @property
    def reason(self) -> Reason:
        reasons = {s.drop for s in self.stored}
        return Reason.DUPLICATE if reasons == {Reason.DUPLICATE} else Reason.RULE_DROP


@dataclass(frozen=True, slots=True)
class Reject:
    """Permanent: the sender must not retry (5xx); nothing is stored."""

    reason: Reason
    code: int
    enhanced: str
    text: str
    rule: str | None = None  # the rule that said no (Reason.RULE)
    tenant: str | None = None  # the tenant whose rule it is: only its audit log hears


@dataclass(frozen=True, slots=True)
class Defer:
    """Temporary: nothing was stored; the sender retries (4xx)."""

    reason: Reason
    text: str
    code: int = 451
    enhanced: str = "4.3.0"


@dataclass(frozen=True, slots=True)
class Quarantine:
    """Set aside for a person to look at (the IMAP quarantine folder), with why."""

    reason: Reason
    text: str


Outcome = Accepted | Reject | Defer | Quarantine
"""``Drop`` is an ``Accepted``; ``Quarantine`` comes only from the IMAP intake."""
