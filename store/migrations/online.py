"""Index builds that leave a live table writable, for migrations run on a full store.

A plain CREATE INDEX on PostgreSQL holds a SHARE lock on its table until the build
ends: on a big ``messages`` table, minutes in which no mail commits. CONCURRENTLY
does not block writes, but cannot run inside a transaction, so the block runs in
alembic's ``autocommit_block`` (which commits the migration's transaction so far:
``store.db.upgrade`` runs one transaction per migration, env.py). SQLite has neither
the lock problem (one writer, waiting either way) nor the syntax: there the block is
a no-op and the index is built in the migration's transaction as before.

A concurrent build that fails leaves an INVALID index behind; PostgreSQL's own
advice applies (drop it, run the migration again).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from alembic import op

__all__ = ["concurrently"]


@contextmanager
def concurrently() -> Iterator[dict[str, bool]]:
    """The keyword arguments for ``op.create_index``/``op.drop_index`` inside the block:
    ``postgresql_concurrently`` outside any transaction on PostgreSQL, nothing on SQLite."""
    if op.get_bind().dialect.name != "postgresql":
        yield {}
        return
    with op.get_context().autocommit_block():
        yield {"postgresql_concurrently": True}
