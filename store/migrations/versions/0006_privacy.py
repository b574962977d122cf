"""privacy: raw blobs purged by retention, the audit log made append-only

Revision ID: 0006
Revises: 0004
Create Date: 2026-11-24 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# UPDATE and DELETE of audit rows fail unless the same transaction holds an
# audit_unlock row (see store/models.py). Only SQLite gets the triggers so far.
_TRIGGERS = [
    f"""CREATE TRIGGER audit_events_no_{verb.lower()} BEFORE {verb} ON audit_events
    WHEN NOT EXISTS (SELECT 1 FROM audit_unlock)
    BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END"""
    for verb in ("UPDATE", "DELETE")
]


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch_op:
        batch_op.add_column(sa.Column("raw_purged_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "audit_unlock",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_unlock")),
    )
    if op.get_bind().dialect.name == "sqlite":
        for sql in _TRIGGERS:
            op.execute(sql)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_delete")
    op.drop_table("audit_unlock")
    with op.batch_alter_table("messages") as batch_op:
        batch_op.drop_column("raw_purged_at")
