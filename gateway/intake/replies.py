"""The one table from verdicts and faults to SMTP replies, IMAP actions and exit codes.

Every reply we send carries an enhanced status code (RFC 3463), including
the ones aiosmtpd writes itself, and none of our own faults is ever a 5xx:
a permanent code makes the sending MTA bounce, and the mail is lost. The
SMTP reply serves LMTP unchanged (RFC 2033 uses the same codes, one reply
per recipient). docs/daemon.md "SMTP answers" lists the same replies;
tests/test_stages.py holds the two together.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum

from outbound.random_ids import random_hex
from parsers.errors import HeaderTooLarge, ParseError, StructureTooDeep
from routing.verdicts import Accepted, Defer, Outcome, Quarantine, Reason, Reject
from store.errors import StoreUnavailable

__all__ = [
    "ANSWERS",
    "QUEUED",
    "Answer",
    "ImapAction",
    "defer",
    "enhance",
    "exit_code",
    "imap_action",
    "outcome_for_exception",
    "quarantine",
    "queue_id",
    "reject",
    "smtp_reply",
    "verdict",
]


class ImapAction(StrEnum):
    """What the IMAP intake does with the message in the server's folder."""

    LEAVE = "leave"  # offered again on the next pass
    DONE = "move-done"  # to the processed folder
    QUARANTINE = "quarantine"  # to the quarantine folder, with an audit event


@dataclass(frozen=True, slots=True)
class Answer:
    """The answer to one reason, in each intake's terms."""

    code: int  # 0: none of its own (a rule's reply is the rule's; a quarantine has none)
    enhanced: str
    text: str  # may hold ``{detail}``
    imap: ImapAction
    exit: int  # for the MTA pipe (``gateway ingest``), sysexits.h

    @property
    def smtp(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"


_Q, _LEAVE, _DONE = ImapAction.QUARANTINE, ImapAction.LEAVE, ImapAction.DONE
QUEUED = "OK queued as {detail}"  # every 250 to DATA: the arrival's opaque id, no ref

ANSWERS: dict[Reason, Answer] = {
    Reason.NO_SUCH_RECIPIENT: Answer(550, "5.1.1", "No such recipient here", _Q, os.EX_NOUSER),
    Reason.BAD_SENDER: Answer(553, "5.1.7", "Bad sender address syntax", _Q, os.EX_DATAERR),
    Reason.TOO_BIG: Answer(552, "5.3.4", "Message too big for system", _Q, os.EX_DATAERR),
    Reason.TOO_BIG_TO_FETCH: Answer(
        552, "5.3.4", "message of {detail} bytes is over the limit", _Q, os.EX_DATAERR
    ),
    Reason.HEADER_TOO_LARGE: Answer(552, "5.3.4", "Message header too large", _Q, os.EX_DATAERR),
    Reason.TOO_COMPLEX: Answer(554, "5.6.0", "Message structure over limits", _Q, os.EX_DATAERR),
    Reason.UNREADABLE: Answer(554, "5.6.0", "Message cannot be read", _Q, os.EX_DATAERR),
    Reason.LOOP: Answer(554, "5.4.0", "Too many hops, mail loop suspected", _Q, os.EX_DATAERR),
    Reason.INFECTED: Answer(
        554, "5.7.1", "Message content rejected: virus found ({detail})", _Q, os.EX_UNAVAILABLE
    ),
    Reason.TOO_COMPLEX_TO_SCAN: Answer(
        554, "5.7.1", "Message content rejected: too complex to scan", _Q, os.EX_UNAVAILABLE
    ),
    Reason.UNSCANNABLE: Answer(
        552, "5.3.4", "Message too big to be scanned", _Q, os.EX_UNAVAILABLE
    ),
    Reason.RULE: Answer(0, "", "", _Q, os.EX_UNAVAILABLE),
    Reason.SHUTTING_DOWN: Answer(
        421, "4.3.2", "Service shutting down, try again later", _LEAVE, os.EX_TEMPFAIL
    ),
    Reason.TOO_MANY_RECIPIENTS: Answer(452, "4.5.3", "Too many recipients", _LEAVE, os.EX_TEMPFAIL),
    Reason.SCANNER_UNAVAILABLE: Answer(
        451, "4.7.1", "Virus scanner unavailable, try again later", _LEAVE, os.EX_TEMPFAIL
    ),
    Reason.TIMEOUT: Answer(451, "4.3.0", "Timed out, try again later", _LEAVE, os.EX_TEMPFAIL),
    Reason.STORE_UNAVAILABLE: Answer(
        451, "4.3.0", "Storage unavailable, try again later", _LEAVE, os.EX_TEMPFAIL
    ),
    Reason.FAULT: Answer(
        451, "4.3.0", "Temporary failure, try again later", _LEAVE, os.EX_TEMPFAIL
    ),
    # Every 250 reads the same, so a sender learns neither a ticket's ref nor whether a
    # Message-ID was known or a rule dropped the mail; the log line tells them apart.
    Reason.DUPLICATE: Answer(250, "2.0.0", QUEUED, _DONE, os.EX_OK),
    Reason.RULE_DROP: Answer(250, "2.0.0", QUEUED, _DONE, os.EX_OK),
    Reason.DEFERRED_TOO_OFTEN: Answer(0, "", "deferred {detail} times", _Q, os.EX_TEMPFAIL),
}

# Faults by class, most specific first (looked up along the exception's MRO).
_FAULTS: dict[type[BaseException], Reason] = {
    HeaderTooLarge: Reason.HEADER_TOO_LARGE,
    StructureTooDeep: Reason.TOO_COMPLEX,
    ParseError: Reason.UNREADABLE,
    TimeoutError: Reason.TIMEOUT,  # asyncio.TimeoutError too, since Python 3.11
    StoreUnavailable: Reason.STORE_UNAVAILABLE,
}


# aiosmtpd's own replies, rewritten with enhanced codes.
_REWRITE = {
    "552 Error: Too much mail data": ANSWERS[Reason.TOO_BIG].smtp,
    "552 Error: message size exceeds fixed maximum message size": (
        "552 5.3.4 Message size exceeds fixed maximum message size"
    ),
    "500 Line too long (see RFC5321 4.5.3.1.6)": "500 5.5.2 Line too long (RFC 5321 4.5.3.1.6)",
}
_DEFAULT = {
    "2": "2.0.0",
    "4": "4.0.0",
    "5": "5.5.0",
    "421": "4.7.0",
    "451": "4.3.0",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "535": "5.7.8",
    "550": "5.1.1",
    "552": "5.3.4",
    "553": "5.1.3",
    "554": "5.5.0",
    "555": "5.5.4",
    "500": "5.5.2",
}
_NO_CODE = {"220", "354", "334", "214"}


def enhance(status: str, hostname: str = "") -> str:
    """Add an enhanced status code to a reply line that lacks one.

    Greetings, EHLO/HELO answers and continuation lines are left alone, as
    RFC 2034 says.
    """
    if status in _REWRITE:
        return _REWRITE[status]
    code, sep, text = status.partition(" ")
    if not sep or len(code) != 3 or not code.isdigit() or code in _NO_CODE:
        return status
    if code == "250" and (text == "HELP" or (hostname and text == hostname)):
        return status
    first = text.split(" ", 1)[0]
    if first.count(".") == 2 and first.replace(".", "").isdigit():
        return status
    enh = _DEFAULT.get(code) or _DEFAULT[code[0]]
    if text.startswith("Error: "):
        text = text[len("Error: ") :]
    return f"{code} {enh} {text}"


def queue_id() -> str:
    """A fresh opaque id for one arrival: random, so it tells nothing (no ref, no count,
    no time) and cannot be guessed to find a message; 64 bits, so a clash is unlikely."""
    return random_hex(8)


def verdict(reason: Reason, detail: object = "") -> Reject | Defer:
    """The refusal or deferral the table says for ``reason``."""
    a = ANSWERS[reason]
    text = a.text.format(detail=detail)
    if a.code // 100 == 5:
        return Reject(reason, a.code, a.enhanced, text)
    if a.code // 100 == 4:
        return Defer(reason, text, a.code, a.enhanced)
    raise ValueError(f"{reason} is not a refusal or a deferral")


def reject(reason: Reason, detail: object = "") -> Reject:
    out = verdict(reason, detail)
    assert isinstance(out, Reject), reason
    return out


def defer(reason: Reason, detail: object = "") -> Defer:
    out = verdict(reason, detail)
    assert isinstance(out, Defer), reason
    return out


def outcome_for_exception(exc: BaseException) -> Reject | Defer:
    """Faults become answers; only unreadable input is refused for good."""
    for cls in type(exc).__mro__:
        if cls in _FAULTS:
            return verdict(_FAULTS[cls])
    return verdict(Reason.FAULT)


def quarantine(outcome: Reject | Defer, deferrals: int = 0) -> Quarantine:
    """Why the IMAP intake sets a message aside: its refusal, or a deferral met too often."""
    said = f"{outcome.code} {outcome.enhanced} {outcome.text}"
    if isinstance(outcome, Defer):
        text = ANSWERS[Reason.DEFERRED_TOO_OFTEN].text.format(detail=deferrals)
        return Quarantine(Reason.DEFERRED_TOO_OFTEN, f"{text}: {said}")
    return Quarantine(outcome.reason, said)


def smtp_reply(outcome: Outcome) -> str:
    if isinstance(outcome, Accepted):  # a Drop too: the same words, see QUEUED
        return "250 2.0.0 " + QUEUED.format(detail=outcome.queued_as or "-")
    if isinstance(outcome, Quarantine):
        raise ValueError("a quarantine is the IMAP intake's, never an SMTP answer")
    return f"{outcome.code} {outcome.enhanced} {outcome.text}"


def exit_code(outcome: Outcome) -> int:
    if isinstance(outcome, Accepted):
        return os.EX_OK
    return ANSWERS[outcome.reason].exit


def imap_action(outcome: Outcome) -> ImapAction:
    if isinstance(outcome, Accepted):
        return ImapAction.DONE
    return ANSWERS[outcome.reason].imap
