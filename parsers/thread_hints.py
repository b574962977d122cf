"""Extract every threading clue; ``routing.threader`` decides what they mean.

A bounce carries the clues of the message it returns, not its own: the DSN
is new mail from the remote MTA, while the returned headers are ours (our
acknowledgement's Message-ID, the client's In-Reply-To, our subject tag).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from email.message import Message

from parsers.addresses import msg_ids, normalise_msg_id, parse_address_list
from parsers.types import ThreadHints

__all__ = ["build_hints", "subject_tag"]

_TAG = re.compile(r"\[([A-Za-z][A-Za-z0-9]*)-([0-9]+)\]")


def subject_tag(subject: str) -> str | None:
    """First ``[PREFIX-123]`` in a decoded subject, prefix upper-cased, brackets dropped."""
    m = _TAG.search(subject)
    return f"{m.group(1).upper()}-{m.group(2)}" if m else None


def build_hints(
    *,
    in_reply_to: str | None,
    references: str | None,
    subject: str,
    recipients: Iterable[str],
    returned: Iterable[tuple[Message, str]] = (),
) -> ThreadHints:
    """Hints from the message's own headers plus, for bounces, the returned ones.

    ``recipients`` are raw To/Cc/Delivered-To values in that order;
    ``returned`` holds (headers, decoded subject) of each returned message.
    """
    irt = normalise_msg_id(in_reply_to)
    refs = msg_ids(references)
    if irt and irt not in refs:
        refs.append(irt)
    tag = subject_tag(subject)
    for hdrs, ret_subject in returned:
        for ident in (
            *msg_ids(_get(hdrs, "References")),
            *msg_ids(_get(hdrs, "In-Reply-To"), first=True),
            *msg_ids(_get(hdrs, "Message-ID"), first=True),
        ):
            if ident not in refs:
                refs.append(ident)
        if tag is None:
            tag = subject_tag(ret_subject)
    return ThreadHints(
        in_reply_to=irt, references=tuple(refs), subject_tag=tag, reply_token=_token(recipients)
    )


def _get(hdrs: Message, name: str) -> str | None:
    value = hdrs.get(name)
    return None if value is None else str(value)


def _token(recipients: Iterable[str]) -> str | None:
    """The sub-address of the first recipient that has one ("support+k3x9@..." -> "k3x9")."""
    for value in recipients:
        for spec in parse_address_list(value):
            local = spec.rsplit("@", 1)[0]
            if "+" in local:
                token = local.split("+", 1)[1].strip('"')
                if token:
                    return token
    return None
