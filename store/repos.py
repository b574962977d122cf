"""Query functions. The tenant is always the first argument after the connection.

No function here can reach a row of another tenant: every statement filters
on ``tenant``, including lookups by a primary key that came from outside.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from store.models import (
    attachments,
    audit_events,
    message_ids,
    messages,
    outbox,
    participants,
    ticket_counters,
    tickets,
)

__all__ = [
    "add_audit",
    "add_participant",
    "enqueue_outbox",
    "find_message",
    "insert_attachments",
    "insert_message",
    "is_participant",
    "new_ticket",
    "now",
    "record_message_id",
    "ticket_by_number",
    "ticket_by_ref",
    "ticket_exists",
    "ticket_ref",
    "tickets_for_message_ids",
    "touch_ticket",
]


def now() -> datetime:
    return datetime.now(UTC)


async def find_message(conn: AsyncConnection, tenant: str, key: str) -> str | None:
    """The raw sha256 of the message stored under this dedupe key, if any."""
    row = await conn.execute(
        select(messages.c.raw_sha256).where(
            messages.c.tenant == tenant, messages.c.message_key == key
        )
    )
    return row.scalar_one_or_none()


async def tickets_for_message_ids(
    conn: AsyncConnection, tenant: str, ids: Sequence[str]
) -> dict[str, int]:
    if not ids:
        return {}
    rows = await conn.execute(
        select(message_ids.c.message_id, message_ids.c.ticket_id).where(
            message_ids.c.tenant == tenant, message_ids.c.message_id.in_(list(ids))
        )
    )
    return {m: t for m, t in rows}


async def ticket_by_number(conn: AsyncConnection, tenant: str, number: int) -> int | None:
    row = await conn.execute(
        select(tickets.c.id).where(tickets.c.tenant == tenant, tickets.c.number == number)
    )
    return row.scalar_one_or_none()


async def ticket_by_ref(conn: AsyncConnection, tenant: str, ref: str) -> int | None:
    row = await conn.execute(
        select(tickets.c.id).where(tickets.c.tenant == tenant, tickets.c.ref == ref)
    )
    return row.scalar_one_or_none()


async def ticket_ref(conn: AsyncConnection, tenant: str, ticket_id: int) -> str | None:
    row = await conn.execute(
        select(tickets.c.ref).where(tickets.c.tenant == tenant, tickets.c.id == ticket_id)
    )
    return row.scalar_one_or_none()


async def ticket_exists(conn: AsyncConnection, tenant: str, ticket_id: int) -> bool:
    row = await conn.execute(
        select(tickets.c.id).where(tickets.c.tenant == tenant, tickets.c.id == ticket_id)
    )
    return row.scalar_one_or_none() is not None


async def is_participant(conn: AsyncConnection, tenant: str, ticket_id: int, address: str) -> bool:
    row = await conn.execute(
        select(participants.c.id).where(
            participants.c.tenant == tenant,
            participants.c.ticket_id == ticket_id,
            participants.c.address == address,
        )
    )
    return row.first() is not None


async def new_ticket(
    conn: AsyncConnection, tenant: str, prefix: str, subject: str, queue: str = "default"
) -> tuple[int, str]:
    """Allocate the tenant's next number and create the ticket; (id, ref)."""
    res = await conn.execute(
        update(ticket_counters)
        .where(ticket_counters.c.tenant == tenant)
        .values(last_number=ticket_counters.c.last_number + 1)
        .returning(ticket_counters.c.last_number)
    )
    number = res.scalar_one_or_none()
    if number is None:
        start = await conn.execute(
            select(func.coalesce(func.max(tickets.c.number), 0)).where(tickets.c.tenant == tenant)
        )
        number = int(start.scalar_one()) + 1
        await conn.execute(insert(ticket_counters).values(tenant=tenant, last_number=number))
    ref = f"{prefix}-{number}"
    ts = now()
    res = await conn.execute(
        insert(tickets)
        .values(
            tenant=tenant,
            number=number,
            ref=ref,
            subject=subject,
            status="open",
            queue=queue,
            created_at=ts,
            updated_at=ts,
        )
        .returning(tickets.c.id)
    )
    return res.scalar_one(), ref


async def touch_ticket(conn: AsyncConnection, tenant: str, ticket_id: int) -> None:
    await conn.execute(
        update(tickets)
        .where(tickets.c.tenant == tenant, tickets.c.id == ticket_id)
        .values(updated_at=now())
    )


async def add_participant(
    conn: AsyncConnection, tenant: str, ticket_id: int, address: str, name: str, role: str
) -> bool:
    if not address or await is_participant(conn, tenant, ticket_id, address):
        return False
    await conn.execute(
        insert(participants).values(
            tenant=tenant,
            ticket_id=ticket_id,
            address=address,
            name=name,
            role=role,
            created_at=now(),
        )
    )
    return True


async def insert_message(conn: AsyncConnection, tenant: str, **values: Any) -> int:
    res = await conn.execute(
        insert(messages).values(tenant=tenant, created_at=now(), **values).returning(messages.c.id)
    )
    return res.scalar_one()


async def insert_attachments(
    conn: AsyncConnection, tenant: str, message_row: int, items: Sequence[dict[str, Any]]
) -> None:
    if items:
        await conn.execute(
            insert(attachments),
            [
                {"tenant": tenant, "message_id": message_row, "position": i, **item}
                for i, item in enumerate(items)
            ],
        )


async def record_message_id(
    conn: AsyncConnection, tenant: str, message_id: str, ticket_id: int, origin: str
) -> None:
    """Remember an id for threading; the first ticket to claim an id keeps it."""
    known = await tickets_for_message_ids(conn, tenant, [message_id])
    if message_id not in known:
        await conn.execute(
            insert(message_ids).values(
                tenant=tenant, message_id=message_id, ticket_id=ticket_id, origin=origin
            )
        )


async def add_audit(
    conn: AsyncConnection,
    tenant: str,
    action: str,
    *,
    actor: str,
    ticket_id: int | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        insert(audit_events).values(
            tenant=tenant,
            ticket_id=ticket_id,
            actor=actor,
            action=action,
            detail=detail or {},
            created_at=now(),
        )
    )


async def enqueue_outbox(
    conn: AsyncConnection,
    tenant: str,
    *,
    kind: str,
    ticket_id: int | None,
    message_id: str,
    mail_from: str,
    rcpt_tos: Sequence[str],
    body: bytes,
) -> None:
    ts = now()
    await conn.execute(
        insert(outbox).values(
            tenant=tenant,
            ticket_id=ticket_id,
            kind=kind,
            message_id=message_id,
            mail_from=mail_from,
            rcpt_tos=list(rcpt_tos),
            body=body,
            status="pending",
            attempts=0,
            next_attempt_at=ts,
            created_at=ts,
        )
    )
