"""Addresses our mail bounces from: marked by a DSN about our own mail, cleared when the
address writes to us again (outbound/reactions.py), looked at before any mail is queued.

Apart from ``store/repos.py`` for its size; the same rules: the tenant first, and every
statement filters on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import bindparam, delete, select
from sqlalchemy.engine import Connection

from store import repos
from store.db import insert_ignore
from store.direct import Direct
from store.models import bouncing

__all__ = ["bouncing_among", "clear_bouncing", "mark_bouncing"]

_TENANT = bindparam("tenant")
# Straight to the driver (store/direct.py): every message asks. The sender and a
# tenant's agents: a handful of sizes, each its own fixed statement.
_BOUNCING_AMONG: dict[int, Direct] = {}
_CLEAR_BOUNCING = Direct(
    delete(bouncing).where(bouncing.c.tenant == _TENANT, bouncing.c.address == bindparam("address"))
)


def bouncing_among(conn: Connection, tenant: str, addresses: Sequence[str]) -> set[str]:
    if not addresses:
        return set()
    stmt = _BOUNCING_AMONG.get(len(addresses))
    if stmt is None:
        names = [bindparam(f"a{i}") for i in range(len(addresses))]
        stmt = _BOUNCING_AMONG[len(addresses)] = Direct(
            select(bouncing.c.address).where(
                bouncing.c.tenant == _TENANT, bouncing.c.address.in_(names)
            )
        )
    params = {f"a{i}": a.lower() for i, a in enumerate(addresses)}
    return {r[0] for r in stmt.all(conn, {"tenant": tenant, **params})}


def mark_bouncing(
    conn: Connection,
    tenant: str,
    address: str,
    status: str,
    reason: str,
    *,
    now: datetime | None = None,
) -> bool:
    res = conn.execute(
        insert_ignore(conn, bouncing),
        {
            "tenant": tenant,
            "address": address.lower(),
            "status": status,
            "reason": reason[:1000],
            "since": now or repos.now(),
        },
    )
    return bool(res.rowcount)


def clear_bouncing(conn: Connection, tenant: str, address: str) -> bool:
    return bool(_CLEAR_BOUNCING.rowcount(conn, {"tenant": tenant, "address": address.lower()}))
