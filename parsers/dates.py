"""A Date header as ISO 8601, the common form read without the stdlib's general parser.

``email.utils.parsedate_to_datetime`` tokenises any of the forms mail has carried
(RFC 850, asctime, named zones, two-digit years) in pure Python; nearly every
client writes RFC 5322's one form ("Wed, 02 Dec 2026 19:43:00 +0100"), which one
regex reads. The answer is the stdlib's for every value: what the regex does not
match fully goes to the stdlib, and what it matches is built as the stdlib builds
it (a "-0000" zone is unknown: a naive time; an impossible field raises ValueError).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

__all__ = ["iso_date"]

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH = {name: i for i, name in enumerate(_MONTHS, 1)}
# A four-digit year from 1000: the stdlib moves years under 100 into 1900 or 2000.
_COMMON = re.compile(
    r"(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), )?([0-9]{1,2}) (" + "|".join(_MONTHS) + r") "
    r"([1-9][0-9]{3}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"
)


def iso_date(value: str) -> str:
    """``parsedate_to_datetime(value).isoformat()``; raises as it does."""
    m = _COMMON.fullmatch(value)
    if m is None:
        return parsedate_to_datetime(value).isoformat()
    day, month, year, hour, minute, second, sign, tz_hours, tz_minutes = m.groups()
    fields = (int(year), _MONTH[month], int(day), int(hour), int(minute), int(second))
    offset = int(tz_hours) * 3600 + int(tz_minutes) * 60
    if offset == 0 and sign == "-":
        return datetime(*fields).isoformat()  # "-0000": the zone is unknown
    zone = timezone(timedelta(seconds=-offset if sign == "-" else offset))
    return datetime(*fields, tzinfo=zone).isoformat()
