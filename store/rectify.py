"""Rectification (GDPR art. 16): a person's wrong address or name corrected in one tenant.

Every row that holds the address as data (not as words in a text) is
changed in one transaction: participation, the messages they wrote (sender,
envelope sender, display name), the To and Cc lists that name them, a
ticket's assignee or first responder, sign-in counters. What is not changed,
and why (docs/privacy.md says so too):

- Mail as it was written: message text and subject, the raw mail and
  attachments, mail already queued in the outbox. A correction fixes our
  records of the person, not the documents they or others sent.
- The audit log: it is history, append-only; the correction adds its own event.

Sign-in links and sessions of the old address are deleted rather than moved
(a wrong address may be somebody else's mailbox), and its bounce mark is
dropped (the new address has not bounced).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Text, cast, delete, func, or_, select, update
from sqlalchemy.engine import Connection

from store.models import (
    auth_events,
    bouncing,
    link_tokens,
    messages,
    participants,
    tickets,
    web_sessions,
)

__all__ = ["Rectification", "rectify_subject"]


@dataclass(slots=True)
class Rectification:
    """What one correction changed, counted for the command's output and the audit event."""

    participation: int = 0
    messages_from: int = 0
    messages_addressed: int = 0
    tickets: int = 0
    sign_in_rows_deleted: int = 0

    def counts(self) -> dict[str, int]:
        return asdict(self)

    @property
    def total(self) -> int:
        return sum(self.counts().values())


def _swap(values: Any, old: str, new: str) -> Any:
    """A To/Cc list with ``old`` (any case) replaced by ``new``, no duplicate left."""
    out: list[Any] = []
    for v in values or []:
        item = new if isinstance(v, str) and v.strip().lower() == old else v
        if item not in out:
            out.append(item)
    return out


def rectify_subject(
    conn: Connection, tenant: str, old: str, new: str | None, name: str | None
) -> Rectification:
    """Correct ``old`` to ``new`` and/or its display name to ``name`` on every row of ``tenant``.

    Addresses are compared in lower case; the caller checks that ``new`` is
    an address and not one of the tenant's own. On a ticket where ``new``
    already takes part, the old participation row is dropped (one person, one row).
    """
    done = Rectification()
    old = old.strip().lower()
    new = new.strip().lower() if new else None
    target = new or old
    mine = (participants.c.tenant == tenant, func.lower(participants.c.address) == old)
    if new and new != old:
        already = {
            int(t)
            for (t,) in conn.execute(
                select(participants.c.ticket_id).where(
                    participants.c.tenant == tenant, participants.c.address == new
                )
            )
        }
        if already:
            res = conn.execute(
                delete(participants).where(*mine, participants.c.ticket_id.in_(already))
            )
            done.participation += int(res.rowcount or 0)
        res = conn.execute(update(participants).where(*mine).values(address=new))
        done.participation += int(res.rowcount or 0)
        for column in ("assignee", "first_response_by"):
            res = conn.execute(
                update(tickets)
                .where(tickets.c.tenant == tenant, func.lower(tickets.c[column]) == old)
                .values({column: new})
            )
            done.tickets += int(res.rowcount or 0)
        conn.execute(  # lockout and rate-limit counts follow the person
            update(auth_events)
            .where(auth_events.c.tenant == tenant, auth_events.c.address == old)
            .values(address=new)
        )
        for table in (link_tokens, web_sessions, bouncing):
            res = conn.execute(
                delete(table).where(table.c.tenant == tenant, func.lower(table.c.address) == old)
            )
            done.sign_in_rows_deleted += int(res.rowcount or 0)
    if name is not None:
        res = conn.execute(
            update(participants)
            .where(participants.c.tenant == tenant, participants.c.address == target)
            .values(name=name)
        )
        if not (new and new != old):  # else these rows were counted as moved already
            done.participation += int(res.rowcount or 0)
    # Messages: the ones they sent, and the To/Cc lists that name them (the JSON
    # lists are narrowed by their text first, so a large tenant is not read whole).
    for m in conn.execute(
        select(
            messages.c.id,
            messages.c.from_addr,
            messages.c.envelope_from,
            messages.c.to_addrs,
            messages.c.cc_addrs,
        ).where(
            messages.c.tenant == tenant,
            or_(
                func.lower(messages.c.from_addr) == old,
                func.lower(messages.c.envelope_from) == old,
                func.lower(cast(messages.c.to_addrs, Text)).contains(old, autoescape=True),
                func.lower(cast(messages.c.cc_addrs, Text)).contains(old, autoescape=True),
            ),
        )
    ):
        changes: dict[str, Any] = {}
        sender = str(m.from_addr).lower() == old
        if sender:
            if new:
                changes["from_addr"] = new
            if name is not None:
                changes["from_name"] = name
        if new and str(m.envelope_from).lower() == old:
            changes["envelope_from"] = new
        if new:
            for column in ("to_addrs", "cc_addrs"):
                swapped = _swap(m._mapping[column], old, new)
                if swapped != list(m._mapping[column] or []):
                    changes[column] = swapped
        if not changes:
            continue
        if sender or "envelope_from" in changes:
            done.messages_from += 1
        else:
            done.messages_addressed += 1
        conn.execute(
            update(messages)
            .where(messages.c.tenant == tenant, messages.c.id == m.id)
            .values(**changes)
        )
    return done
