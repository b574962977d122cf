"""operations: SLA clocks on tickets, monthly report files

Revision ID: 0007
Revises: 0005
Create Date: 2026-11-30 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("first_response_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("first_response_by", sa.String(length=320), nullable=True))
        batch.add_column(sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("sla_pauses", sa.JSON(), server_default="[]", nullable=False))
        batch.add_column(sa.Column("sla_notified", sa.JSON(), server_default="[]", nullable=False))
    op.create_table(
        "reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.String(length=40), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reports")),
        sa.UniqueConstraint("tenant", "month", name=op.f("uq_reports_tenant_month")),
    )
    # Tickets closed before this migration have no resolution time to report.


def downgrade() -> None:
    op.drop_table("reports")
    with op.batch_alter_table("tickets") as batch:
        batch.drop_column("sla_notified")
        batch.drop_column("sla_pauses")
        batch.drop_column("resolved_at")
        batch.drop_column("first_response_by")
        batch.drop_column("first_response_at")
