"""Alembic environment: runs on the connection the gateway hands it.

``store.db.upgrade`` passes a live connection in ``config.attributes``, so
migrations run through the same engine (and pragmas) as the daemon. One
transaction per migration, begun here (the connection comes in outside one): a
migration that builds an index CONCURRENTLY (store/migrations/online.py) commits
what ran before it, and the ones before it stay done if a later one fails.
"""

from __future__ import annotations

from alembic import context

from store.models import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only `alembic` on the command line
    raise SystemExit("run migrations through `gateway db upgrade`")
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    transaction_per_migration=True,
)
with context.begin_transaction():
    context.run_migrations()
