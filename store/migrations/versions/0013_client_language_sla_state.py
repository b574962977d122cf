"""the client's language on the ticket; when SLA began for a tenant and its last digest

Revision ID: 0013
Revises: 0012
Create Date: 2027-02-10 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Tickets opened before this were answered in the tenant's first language: null says so.
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("client_language", sa.String(length=8), nullable=True))
    op.create_table(
        "sla_tenant_state",
        sa.Column("tenant", sa.String(length=40), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_digest_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("tenant", name=op.f("pk_sla_tenant_state")),
    )


def downgrade() -> None:
    op.drop_table("sla_tenant_state")
    # A plain DROP COLUMN (SQLite 3.35+), not batch mode's copy of the table: with
    # messages pointing at tickets and foreign keys on, the copy's DROP TABLE fails.
    op.drop_column("tickets", "client_language")
