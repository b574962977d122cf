"""the acknowledgement limit's index, usable by its LIKE on PostgreSQL (issue 21)

Revision ID: 0015
Revises: 0014
Create Date: 2027-02-18 09:00:00

``acks_since`` counts the acks to an address and its ``+tag`` forms with
``to_addr = :a OR to_addr LIKE 'local+%@domain'``. Under a database collation other
than "C" a plain btree serves neither LIKE nor a code-point range, so every new ticket
read every ack the tenant ever queued. ``text_pattern_ops`` serves both branches.
SQLite needs nothing (its query bounds the index by a range, store/repos.py).

The new index is built CONCURRENTLY under a spare name before the old one goes, then
takes its name (store/migrations/online.py): ``outbox`` keeps taking acks and is never
without an index meanwhile.
"""

from __future__ import annotations

from alembic import op

from store.migrations.online import concurrently

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_NAME = "ix_outbox_tenant_kind_to_addr_created_at"
_SPARE = f"{_NAME}_new"
_COLUMNS = ["tenant", "kind", "to_addr", "created_at"]


def upgrade() -> None:
    _swap({"to_addr": "text_pattern_ops"})


def downgrade() -> None:
    _swap({})


def _swap(ops: dict[str, str]) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    with concurrently() as kw:
        op.create_index(_SPARE, "outbox", _COLUMNS, postgresql_ops=ops, **kw)
        op.drop_index(_NAME, table_name="outbox", **kw)
        op.execute(f"ALTER INDEX {_SPARE} RENAME TO {_NAME}")
