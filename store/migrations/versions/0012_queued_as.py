"""the opaque id each 250 names ("OK queued as ..."), stored with the message

Revision ID: 0012
Revises: 0011
Create Date: 2027-02-01 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Mail stored before this was answered with its ticket's ref: it has no id (None).
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("queued_as", sa.String(length=32), nullable=True))
        batch.create_index(batch.f("ix_messages_queued_as"), ["queued_as"], unique=False)


def downgrade() -> None:
    # Plain statements (SQLite 3.35+ drops a column), not batch mode's copy of a table
    # that other tables point at.
    op.drop_index(op.f("ix_messages_queued_as"), table_name="messages")
    op.drop_column("messages", "queued_as")
