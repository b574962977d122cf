"""web access: magic-link tokens, sessions, sign-in failures and link requests

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 11:05:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "link_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.String(length=40), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("selector", sa.String(length=32), nullable=False),
        sa.Column("verifier_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_link_tokens")),
        sa.UniqueConstraint("selector", name=op.f("uq_link_tokens_selector")),
    )
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.String(length=40), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_web_sessions_token_hash")),
    )
    op.create_table(
        "auth_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.String(length=40), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_events")),
    )
    with op.batch_alter_table("auth_events") as batch_op:
        batch_op.create_index(
            batch_op.f("ix_auth_events_tenant_kind_address_at"),
            ["tenant", "kind", "address", "at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_auth_events_tenant_kind_source_at"),
            ["tenant", "kind", "source", "at"],
            unique=False,
        )


def downgrade() -> None:
    op.drop_table("auth_events")
    op.drop_table("web_sessions")
    op.drop_table("link_tokens")
