"""indexes for the daily retention purge and blob collection (issue 21, figure 5)

Revision ID: 0014
Revises: 0013
Create Date: 2027-02-17 09:00:00

Without them the purge read every message and every ticket of a tenant, and the
blob collector every message, inside the writer's transaction: seconds at a
million messages, during which no mail could commit. The two on ``messages`` are
partial (only rows whose raw mail is kept), so a purged row leaves them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_KEPT = sa.text("raw_purged_at IS NULL")


def upgrade() -> None:
    op.create_index(
        "ix_messages_raw_kept",
        "messages",
        ["tenant", "created_at"],
        sqlite_where=_KEPT,
        postgresql_where=_KEPT,
    )
    op.create_index(
        "ix_messages_raw_sha256_kept",
        "messages",
        ["raw_sha256"],
        sqlite_where=_KEPT,
        postgresql_where=_KEPT,
    )
    op.create_index(
        "ix_tickets_tenant_status_updated_at", "tickets", ["tenant", "status", "updated_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_tickets_tenant_status_updated_at", table_name="tickets")
    op.drop_index("ix_messages_raw_sha256_kept", table_name="messages")
    op.drop_index("ix_messages_raw_kept", table_name="messages")
