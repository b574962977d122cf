"""The acknowledgements already sent to an address: the RFC 3834 rate limit's count.

Apart from ``store/repos.py`` for its size; the same rules: the tenant first, and every
statement filters on it. ``user+anything@`` counts as ``user@``: a fresh tag per mail
does not earn a fresh acknowledgement. A message's commit asks it with its first read
(``store.bouncing.first_look``): the stored count comes with the dedupe key, and only
the acknowledgements held for the batch's flush (store/deferred.py) are counted here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Select

from store import deferred
from store.direct import Direct
from store.models import outbox
from store.repos import INSERT_OUTBOX

__all__ = ["acks_held", "acks_since", "count_stored", "parameters"]


def count_stored(conn: Connection) -> Select[Any]:
    """The stored acks' count, over ``parameters``' bind names (and ``tenant``).

    The LIKE alone read every ack of the tenant, so ``local+`` .. ``local@domain`` (the
    address and its tagged forms in code-point order) bounds the read. SQLite's LIKE
    ignores case, its index does not. PostgreSQL's index (0015, ``text_pattern_ops``)
    served the LIKE only in a plan made for a known pattern; the writer's statements
    are prepared, and after five runs PostgreSQL plans one for any pattern (a generic
    plan), which read every ack of the tenant in the window to filter them: 3 ms a
    message at 10,000 (bench/results/notes/warm23.md). The bounds, in the index's own
    operators, serve a generic plan too. On SQLite the LIKE is spelled out (``local+``,
    anything, ``@domain``): a LIKE on a bound pattern makes SQLite prepare the statement
    again for each new pattern (its LIKE optimisation), 15 µs a call, more than the
    count. Both sides are lower-cased."""
    to, address, low = outbox.c.to_addr, bindparam("address"), bindparam("lowest")
    if conn.dialect.name == "sqlite":
        suffix = bindparam("suffix")
        tagged = and_(
            func.substr(to, 1, func.length(low)) == low,
            func.substr(to, -func.length(suffix)) == suffix,
            func.length(to) >= func.length(low) + func.length(suffix),
        )
        match = [to >= low, to <= address, or_(to == address, tagged)]
    else:
        match = [
            to.op("~>=~", is_comparison=True)(low),
            to.op("~<=~", is_comparison=True)(address),
            or_(to == address, to.like(bindparam("tagged"), escape="\\")),
        ]
    return (
        select(func.count())
        .select_from(outbox)
        .where(
            outbox.c.tenant == bindparam("tenant"),
            outbox.c.kind == "ack",
            *match,
            outbox.c.created_at >= bindparam("since"),
        )
    )


_ACKS_SINCE = Direct(count_stored)


def parameters(address: str, since: datetime) -> dict[str, Any]:
    """``count_stored``'s values for ``address`` (but the tenant)."""
    local, domain = _parts(address)
    tagged = f"{_like_escape(local)}+%@{_like_escape(domain)}"
    return {"address": f"{local}@{domain}", "lowest": f"{local}+", "tagged": tagged,
            "suffix": f"@{domain}", "since": since}  # fmt: skip


def acks_since(conn: Connection, tenant: str, address: str, since: datetime) -> int:
    """Acknowledgements queued for this address since ``since``: stored, and held."""
    row = _ACKS_SINCE.first(conn, {"tenant": tenant, **parameters(address, since)})
    stored = int(row[0]) if row is not None else 0
    return stored + acks_held(conn, tenant, address, since)


def acks_held(conn: Connection, tenant: str, address: str, since: datetime) -> int:
    """The acknowledgements to this address held for the batch's flush (none unheld)."""
    held = deferred.pending(conn, INSERT_OUTBOX)
    if not held:
        return 0
    local, domain = _parts(address)
    return sum(
        1
        for r in held
        if r["tenant"] == tenant
        and r["kind"] == "ack"
        and _same_sender(r["to_addr"], local, domain)
        and r["created_at"] >= since
    )


def _parts(address: str) -> tuple[str, str]:
    local, _, domain = address.lower().partition("@")
    return local.split("+", 1)[0], domain


def _same_sender(to_addr: str, local: str, domain: str) -> bool:
    their_local, _, their_domain = to_addr.partition("@")
    return their_domain == domain and (their_local == local or their_local.startswith(f"{local}+"))


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
