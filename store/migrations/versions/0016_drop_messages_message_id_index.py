"""messages loses its (tenant, message_id) index, which no query reads (issue 21)

Message-IDs are looked up in ``message_ids`` (threading) and by ``message_key``
(dedupe, its unique index); a ticket's Message-IDs come through ``ticket_id``'s index,
and a query by tenant alone has the unique (tenant, message_key) index's prefix. Since
0014 gave retention its own index, nothing read this one, yet every stored message
wrote it: 1.25 of the ~26 pages a lone message's transaction writes to SQLite's WAL
(``python -m bench.statements --file --batch 1``). Dropped CONCURRENTLY on PostgreSQL
(store/migrations/online.py), so ``messages`` keeps taking mail meanwhile.
"""

from __future__ import annotations

from alembic import op

from store.migrations.online import concurrently

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_NAME = "ix_messages_tenant_message_id"


def upgrade() -> None:
    with concurrently() as kw:
        op.drop_index(_NAME, table_name="messages", **kw)


def downgrade() -> None:
    with concurrently() as kw:
        op.create_index(_NAME, "messages", ["tenant", "message_id"], unique=False, **kw)
