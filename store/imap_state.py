"""Where the IMAP intake stands in each mailbox: its UIDVALIDITY and last committed UID.

A change of UIDVALIDITY (the server renumbered the folder) is noticed here
and audited by the intake; the mailbox itself stays the queue.
"""

from __future__ import annotations

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from store import repos
from store.models import imap_state

__all__ = ["imap_position", "save_imap_position"]


def imap_position(conn: Connection, tenant: str, mailbox: str) -> tuple[int, int] | None:
    """(UIDVALIDITY, last committed UID) of a mailbox, if it was ever drained."""
    row = conn.execute(
        select(imap_state.c.uidvalidity, imap_state.c.last_uid).where(
            imap_state.c.tenant == tenant, imap_state.c.mailbox == mailbox
        )
    ).first()
    return (int(row[0]), int(row[1])) if row is not None else None


def save_imap_position(
    conn: Connection, tenant: str, mailbox: str, uidvalidity: int, last_uid: int
) -> None:
    values = {"uidvalidity": uidvalidity, "last_uid": last_uid, "updated_at": repos.now()}
    res = conn.execute(
        update(imap_state)
        .where(imap_state.c.tenant == tenant, imap_state.c.mailbox == mailbox)
        .values(**values)
    )
    if not res.rowcount:
        conn.execute(insert(imap_state), {"tenant": tenant, "mailbox": mailbox, **values})
