"""search: full-text index over messages (SQLite FTS5 + triggers, PostgreSQL tsvector + GIN)

Revision ID: 0011
Revises: 0010
Create Date: 2027-01-27 09:00:00

The objects and why the database keeps them current are in store/search.py;
``install`` also fills the index from the messages already stored (FTS5
'rebuild' on SQLite; on PostgreSQL adding the generated column rewrites the
table, so a large store takes a while here, under an exclusive lock).
"""

from __future__ import annotations

from alembic import op

from store import search

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    search.install(op.get_bind())


def downgrade() -> None:
    search.uninstall(op.get_bind())
