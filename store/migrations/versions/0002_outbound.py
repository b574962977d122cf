"""outbound: ticket priority and assignee, outbox recipient and sent time, bouncing

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tickets") as batch_op:
        batch_op.add_column(
            sa.Column("priority", sa.String(length=16), nullable=False, server_default="normal")
        )
        batch_op.add_column(sa.Column("assignee", sa.String(length=320), nullable=True))
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.add_column(
            sa.Column("to_addr", sa.String(length=320), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_outbox_tenant_kind_to_addr_created_at"),
            ["tenant", "kind", "to_addr", "created_at"],
            unique=False,
        )
    op.create_table(
        "bouncing",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.String(length=40), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bouncing")),
        sa.UniqueConstraint("tenant", "address", name=op.f("uq_bouncing_tenant_address")),
    )


def downgrade() -> None:
    op.drop_table("bouncing")
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_tenant_kind_to_addr_created_at"))
        batch_op.drop_column("sent_at")
        batch_op.drop_column("to_addr")
    with op.batch_alter_table("tickets") as batch_op:
        batch_op.drop_column("assignee")
        batch_op.drop_column("priority")
