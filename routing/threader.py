"""Which ticket a message continues, in order of trust, always within one tenant.

1. a valid reply token (HMAC, minted for this tenant);
2. In-Reply-To, then References newest first, against every Message-ID we
   stored or sent for this tenant (acknowledgements included);
3. a subject tag with this tenant's prefix, only if the sender already takes
   part in that ticket (Zammad #5064 shows why);
4. otherwise none: the caller opens a ticket, or records machine mail alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Connection

from parsers.types import ThreadHints
from routing.config import Tenant
from routing.tokens import TokenClaim, read_token
from store import participants as people
from store import repos

__all__ = ["ThreadMatch", "find_ticket", "references_asked"]


@dataclass(frozen=True, slots=True)
class ThreadMatch:
    ticket_id: int | None
    by: str  # token | references | tag | none
    claim: TokenClaim | None = None


def references_asked(hints: ThreadHints) -> list[str]:
    """The Message-IDs a message threads by, in the order they are trusted: In-Reply-To,
    then References newest first."""
    wanted: list[str] = []
    if hints.in_reply_to:
        wanted.append(hints.in_reply_to)
    wanted.extend(r for r in reversed(hints.references) if r not in wanted)
    return wanted


def find_ticket(
    conn: Connection,
    tenant: Tenant,
    secret: bytes,
    hints: ThreadHints,
    *,
    envelope_token: str | None,
    sender: str,
    stored: dict[str, int] | None = None,
) -> ThreadMatch:
    """``stored``: the tickets stored for ``references_asked(hints)``, when the caller read
    them already (store/bouncing.py ``first_look``); None: read here."""
    for token in (envelope_token, hints.reply_token):
        if not token:
            continue
        claim = read_token(secret, tenant.slug, token)
        if claim is None:
            continue
        ticket = repos.ticket_by_number(conn, tenant.slug, claim.ticket_number)
        if ticket is not None:
            return ThreadMatch(ticket, "token", claim)

    wanted = references_asked(hints)
    if wanted:
        known = repos.tickets_for_message_ids(conn, tenant.slug, wanted, stored=stored)
        for mid in wanted:
            if mid in known:
                return ThreadMatch(known[mid], "references")

    if hints.subject_tag and sender:
        prefix, _, number = hints.subject_tag.partition("-")
        if prefix.upper() == tenant.tag_prefix and number.isdigit():
            ticket = repos.ticket_by_number(conn, tenant.slug, int(number))
            if ticket is not None and people.is_participant(conn, tenant.slug, ticket, sender):
                return ThreadMatch(ticket, "tag")
    return ThreadMatch(None, "none")
