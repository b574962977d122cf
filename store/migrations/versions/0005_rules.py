"""routing rules: matched rules on messages, category and tags on tickets

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 12:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("category", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("tags", sa.JSON(), server_default="[]", nullable=False))
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("rules", sa.JSON(), server_default="[]", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("rules")
    with op.batch_alter_table("tickets") as batch:
        batch.drop_column("tags")
        batch.drop_column("category")
