"""GDPR erasure (Art. 17) for one address in one tenant; access (Art. 15/20) is
store/subject.py, re-exported here.

Every function takes the tenant first and touches only that tenant's rows:
the same person writing to two vendors is two data subjects, each vendor
answering for its own. What is kept and what goes is explained in
docs/privacy.md; this module is that text, executed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Table, delete, insert, or_, select, update
from sqlalchemy.engine import Connection

from store import search
from store.models import (
    attachments,
    audit_events,
    audit_unlock,
    auth_events,
    bouncing,
    link_tokens,
    message_ids,
    messages,
    outbox,
    participants,
    tickets,
    web_sessions,
)
from store.redact import Redactor
from store.subject import CLIENT_ROLES, collect_subject, column_set, lower, names_of, their_tickets

__all__ = [
    "Erasure",
    "collect_subject",
    "delete_tickets",
    "erase_subject",
    "names_of",
    "raw_mentions",
    "unlocked_audit",
]

ReadBlob = Callable[[str], bytes | None]


def raw_mentions(
    conn: Connection, tenant: str, redactor: Redactor, read: ReadBlob
) -> dict[int, tuple[str, bytes]]:
    """Other people's raw mail naming the address: message row -> (old sha256, redacted copy).

    Runs outside the write transaction (it reads every raw blob of the
    tenant); the erasure then checks each row still names the same blob.
    """
    found: dict[int, tuple[str, bytes]] = {}
    for row_id, sha in conn.execute(
        select(messages.c.id, messages.c.raw_sha256).where(
            messages.c.tenant == tenant,
            messages.c.raw_purged_at.is_(None),
            messages.c.from_addr != redactor.address,
        )
    ):
        data = read(sha)
        if data is None:
            continue
        copy = redactor.mail(data)
        if copy is not None:
            found[int(row_id)] = (str(sha), copy)
    return found


@dataclass
class Erasure:
    """What an erasure did, for the tombstone and the command's report."""

    their_messages: int = 0
    tickets_deleted: list[str] = field(default_factory=list)
    tickets_kept: list[str] = field(default_factory=list)
    messages_redacted: int = 0
    raw_copies_redacted: int = 0
    outbox_deleted: int = 0
    outbox_redacted: int = 0
    audit_redacted: int = 0
    web_rows_deleted: int = 0
    blob_candidates: set[str] = field(default_factory=set)

    def counts(self) -> dict[str, Any]:
        """Numbers only: ticket lists as their length, the blob candidates left out."""
        out = asdict(self)
        del out["blob_candidates"]
        return {k: len(v) if isinstance(v, list) else v for k, v in out.items()}


@contextlib.contextmanager
def unlocked_audit(conn: Connection, reason: str) -> Iterator[None]:
    """Lets this transaction change audit rows: the trigger's one exception (see models)."""
    conn.execute(insert(audit_unlock), {"reason": reason})
    try:
        yield
    finally:
        conn.execute(delete(audit_unlock))


def delete_tickets(conn: Connection, tenant: str, ticket_ids: Iterable[int]) -> set[str]:
    """Tickets with everything on them; returns the blobs they named (to collect)."""
    ids = list(ticket_ids)
    if not ids:
        return set()
    msg_ids = select(messages.c.id).where(
        messages.c.tenant == tenant, messages.c.ticket_id.in_(ids)
    )
    shas = column_set(
        conn,
        select(attachments.c.sha256).where(
            attachments.c.tenant == tenant, attachments.c.message_id.in_(msg_ids)
        ),
        select(messages.c.raw_sha256).where(
            messages.c.tenant == tenant, messages.c.ticket_id.in_(ids)
        ),
    )
    conn.execute(
        delete(attachments).where(
            attachments.c.tenant == tenant, attachments.c.message_id.in_(msg_ids)
        )
    )
    for table in (messages, participants, message_ids, outbox):
        conn.execute(delete(table).where(table.c.tenant == tenant, table.c.ticket_id.in_(ids)))
    conn.execute(delete(tickets).where(tickets.c.tenant == tenant, tickets.c.id.in_(ids)))
    return {str(s) for s in shas}


def erase_subject(
    conn: Connection,
    tenant: str,
    redactor: Redactor,
    raw_copies: dict[int, tuple[str, str, int]],
    now: datetime,
) -> Erasure:
    """Remove one person from one tenant, in one transaction (docs/privacy.md, "Erasure").

    ``raw_copies``: message row -> (old sha256, new sha256, new size) of
    redacted raw copies already written as blobs by the caller.
    """
    address = redactor.address
    token = redactor.token
    done = Erasure()
    ticket_ids = their_tickets(conn, tenant, address)

    # 1. Their tickets that nobody else (client side) is on go as a whole.
    others = {
        int(t)
        for t in column_set(
            conn,
            select(participants.c.ticket_id).where(
                participants.c.tenant == tenant,
                participants.c.ticket_id.in_(ticket_ids),
                participants.c.address != address,
                participants.c.role.in_(CLIENT_ROLES),
            ),
        )
    }
    gone = ticket_ids - others
    refs = dict(
        conn.execute(
            select(tickets.c.id, tickets.c.ref).where(
                tickets.c.tenant == tenant, tickets.c.id.in_(ticket_ids)
            )
        ).all()
    )
    done.tickets_deleted = sorted(refs[t] for t in gone if t in refs)
    done.tickets_kept = sorted(refs[t] for t in others if t in refs)
    done.blob_candidates |= delete_tickets(conn, tenant, gone)

    # 2. Their own messages elsewhere: bodies, attachments and raw mail go; a shell stays
    # so the other participants' thread still reads in order. Off-ticket ones go whole.
    theirs = select(messages.c.id).where(
        messages.c.tenant == tenant,
        or_(messages.c.from_addr == address, messages.c.envelope_from == address),
    )
    done.blob_candidates |= {
        str(s)
        for s in column_set(
            conn,
            select(attachments.c.sha256).where(
                attachments.c.tenant == tenant, attachments.c.message_id.in_(theirs)
            ),
        )
    }
    conn.execute(
        delete(attachments).where(
            attachments.c.tenant == tenant, attachments.c.message_id.in_(theirs)
        )
    )
    for m in conn.execute(select(messages).where(messages.c.id.in_(theirs))).all():
        done.their_messages += 1
        done.blob_candidates.add(str(m.raw_sha256))
        if m.ticket_id is None:
            conn.execute(delete(messages).where(messages.c.tenant == tenant, messages.c.id == m.id))
            continue
        conn.execute(
            update(messages)
            .where(messages.c.tenant == tenant, messages.c.id == m.id)
            .values(
                from_addr=token,
                from_name="",
                envelope_from=token,
                subject="",
                text="",
                reply_text="",
                html=None,
                to_addrs=redactor.value(m.to_addrs),
                cc_addrs=redactor.value(m.cc_addrs),
                message_id=redactor.value(m.message_id),
                message_key=redactor.value(m.message_key),
                flags=[*(m.flags or []), "erased"],
                raw_purged_at=now,
            )
        )

    # 3. Other people's messages that name them: the address becomes its pseudonym.
    fields = ("subject", "text", "reply_text", "html", "to_addrs", "cc_addrs", "from_name")
    for m in conn.execute(
        select(messages.c.id, *(messages.c[f] for f in fields), messages.c.raw_sha256).where(
            messages.c.tenant == tenant,
            messages.c.from_addr != token,
        )
    ).all():
        changes = {f: redactor.value(m._mapping[f]) for f in fields}
        changes = {f: v for f, v in changes.items() if v != m._mapping[f]}
        copy = raw_copies.get(int(m.id))
        if copy is not None and copy[0] == m.raw_sha256:
            changes.update(raw_sha256=copy[1], raw_size=copy[2])
            done.blob_candidates.add(copy[0])
            done.raw_copies_redacted += 1
        if changes:
            done.messages_redacted += 1
            conn.execute(
                update(messages)
                .where(messages.c.tenant == tenant, messages.c.id == m.id)
                .values(**changes)
            )

    # 4. Where they sat: participation, tickets' subjects and assignee, threading ids.
    conn.execute(
        delete(participants).where(
            participants.c.tenant == tenant, participants.c.address == address
        )
    )
    _redact_rows(conn, tickets, tenant, redactor, "subject", "assignee")
    _redact_rows(conn, message_ids, tenant, redactor, "message_id")

    # 5. Mail we sent or will send: to them, deleted; naming them, deleted once sent,
    # redacted while it still waits (the agent still gets the notice).
    for r in conn.execute(select(outbox).where(outbox.c.tenant == tenant)).all():
        to_them = r.to_addr == address or address in lower(r.rcpt_tos)
        copy = None if to_them else redactor.mail(bytes(r.body))
        if not to_them and copy is None and not redactor.mentions(r.mail_from):
            continue
        where = (outbox.c.tenant == tenant, outbox.c.id == r.id)
        if to_them or r.status in ("sent", "failed"):
            conn.execute(delete(outbox).where(*where))
            done.outbox_deleted += 1
        else:
            conn.execute(update(outbox).where(*where).values(body=copy or bytes(r.body)))
            done.outbox_redacted += 1

    # 6. Sign-in links, sessions, counters, bounce marks: all keyed by the address.
    for table in (link_tokens, web_sessions, auth_events, bouncing):
        res = conn.execute(
            delete(table).where(table.c.tenant == tenant, table.c.address == address)
        )
        done.web_rows_deleted += int(res.rowcount or 0)

    # 7. The audit log keeps what happened, with the pseudonym for who.
    with unlocked_audit(conn, "gdpr.erase"):
        done.audit_redacted += _redact_rows(conn, audit_events, tenant, redactor, "actor", "detail")
    # 8. The search index forgets the old words now, not at its next merge.
    search.drop_deleted(conn)
    return done


def _redact_rows(
    conn: Connection, table: Table, tenant: str, redactor: Redactor, *columns: str
) -> int:
    """Every mention in ``columns`` of the tenant's rows of ``table`` becomes the
    pseudonym; returns how many rows changed (only those are written)."""
    changed = 0
    shown = [table.c[name] for name in columns]
    for r in conn.execute(select(table.c.id, *shown).where(table.c.tenant == tenant)).all():
        before = tuple(r)[1:]
        after = tuple(redactor.value(v) for v in before)
        if after != before:
            conn.execute(
                update(table)
                .where(table.c.tenant == tenant, table.c.id == r.id)
                .values(dict(zip(columns, after, strict=True)))
            )
            changed += 1
    return changed
