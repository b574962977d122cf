"""indexes for the daily retention purge and blob collection (issue 21, figure 5)

Revision ID: 0014
Revises: 0013
Create Date: 2027-02-17 09:00:00

Without them the purge read every message and every ticket of a tenant, and the
blob collector every message, inside the writer's transaction: seconds at a
million messages, during which no mail could commit. The two on ``messages`` are
partial (only rows whose raw mail is kept), so a purged row leaves them.

On PostgreSQL they are built CONCURRENTLY (outside a transaction: alembic's
``autocommit_block``), so a big table keeps taking mail while they build; a plain
CREATE INDEX would hold off every write to it until done. SQLite has no such form,
and its one writer waits either way.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from store.migrations.online import concurrently

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_KEPT = sa.text("raw_purged_at IS NULL")


def upgrade() -> None:
    with concurrently() as kw:
        op.create_index(
            "ix_messages_raw_kept",
            "messages",
            ["tenant", "created_at"],
            sqlite_where=_KEPT,
            postgresql_where=_KEPT,
            **kw,
        )
        op.create_index(
            "ix_messages_raw_sha256_kept",
            "messages",
            ["raw_sha256"],
            sqlite_where=_KEPT,
            postgresql_where=_KEPT,
            **kw,
        )
        op.create_index(
            "ix_tickets_tenant_status_updated_at",
            "tickets",
            ["tenant", "status", "updated_at"],
            **kw,
        )


def downgrade() -> None:
    with concurrently() as kw:
        op.drop_index("ix_tickets_tenant_status_updated_at", table_name="tickets", **kw)
        op.drop_index("ix_messages_raw_sha256_kept", table_name="messages", **kw)
        op.drop_index("ix_messages_raw_kept", table_name="messages", **kw)
