"""The one table from outcomes and faults to SMTP replies and exit codes.

Every reply we send carries an enhanced status code (RFC 3463), including
the ones aiosmtpd writes itself, and none of our own faults is ever a 5xx:
a permanent code makes the sending MTA bounce, and the mail is lost.
"""

from __future__ import annotations

import asyncio
import os

from parsers.errors import HeaderTooLarge, ParseError, StructureTooDeep
from routing.verdicts import Accepted, Defer, Outcome, Reject
from store.errors import StoreUnavailable

__all__ = ["EX_OK", "EX_TEMPFAIL", "enhance", "exit_code", "outcome_for_exception", "smtp_reply"]

EX_OK = os.EX_OK
EX_DATAERR = 65
EX_NOUSER = 67
EX_UNAVAILABLE = 69
EX_TEMPFAIL = 75

# aiosmtpd's own replies, rewritten with enhanced codes.
_REWRITE = {
    "552 Error: Too much mail data": "552 5.3.4 Message too big for system",
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


def outcome_for_exception(exc: BaseException) -> Outcome:
    """Faults become answers; only unreadable input is refused for good."""
    if isinstance(exc, HeaderTooLarge):
        return Reject(552, "5.3.4", "Message header too large", EX_DATAERR)
    if isinstance(exc, StructureTooDeep):
        return Reject(554, "5.6.0", "Message structure over limits", EX_DATAERR)
    if isinstance(exc, ParseError):
        return Reject(554, "5.6.0", "Message cannot be read", EX_DATAERR)
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return Defer("Timed out, try again later")
    if isinstance(exc, StoreUnavailable):
        return Defer("Storage unavailable, try again later")
    return Defer("Temporary failure, try again later")


def smtp_reply(outcome: Outcome) -> str:
    if isinstance(outcome, Accepted):
        refs = [s.ticket_ref for s in outcome.stored if s.ticket_ref]
        if outcome.stored and all(s.duplicate for s in outcome.stored):
            return "250 2.0.0 OK already received"
        return "250 2.0.0 OK " + (" ".join(refs) if refs else "recorded")
    if isinstance(outcome, Reject):
        return f"{outcome.code} {outcome.enhanced} {outcome.text}"
    return f"{outcome.code} {outcome.enhanced} {outcome.text}"


def exit_code(outcome: Outcome) -> int:
    if isinstance(outcome, Accepted):
        return EX_OK
    if isinstance(outcome, Reject):
        return outcome.exit_code
    return EX_TEMPFAIL
