"""sender authentication: each message's verdict and its Authentication-Results text

Revision ID: 0010
Revises: 0009
Create Date: 2027-01-20 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Mail stored before this was never checked: "none" is what it is.
    with op.batch_alter_table("messages") as batch:
        batch.add_column(
            sa.Column("auth", sa.String(length=16), nullable=False, server_default="none")
        )
        batch.add_column(sa.Column("auth_results", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("auth_results")
        batch.drop_column("auth")
