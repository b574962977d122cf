"""The migrations build exactly the schema the models describe, and the audit log is append-only."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from store.db import create_engine, upgrade
from store.models import metadata


def _migrate(path: Path) -> None:
    async def go() -> None:
        engine = create_engine(f"sqlite+aiosqlite:///{path}")
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(go())


def test_migrations_match_the_models(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    _migrate(db)

    async def diff() -> list[object]:
        engine = create_engine(f"sqlite+aiosqlite:///{db}")
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(
                    lambda c: compare_metadata(MigrationContext.configure(c), metadata)
                )
        finally:
            await engine.dispose()

    assert asyncio.run(diff()) == []


def test_audit_rows_cannot_be_changed_or_deleted_without_the_unlock(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    _migrate(db)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(
        "INSERT INTO audit_events (tenant, actor, action, detail, created_at) "
        "VALUES ('acme', 'a@x.test', 'ticket.created', '{}', '2024-01-01')"
    )
    for sql in ("UPDATE audit_events SET actor = 'b@x.test'", "DELETE FROM audit_events"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(sql)
    # The documented exception: erasure and purge unlock inside their own transaction.
    conn.execute("BEGIN")
    conn.execute("INSERT INTO audit_unlock (reason) VALUES ('erase')")
    conn.execute("UPDATE audit_events SET actor = 'erased'")
    conn.execute("DELETE FROM audit_unlock")
    conn.execute("COMMIT")
    assert conn.execute("SELECT actor FROM audit_events").fetchall() == [("erased",)]
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("DELETE FROM audit_events")
    conn.close()


def test_downgrade_to_base_and_up_again(tmp_path: Path) -> None:
    """Every migration's downgrade runs, and the way back up lands on the same schema."""
    from alembic import command
    from alembic.config import Config

    from store.db import MIGRATIONS, create_writer_engine

    db = tmp_path / "d.db"
    _migrate(db)
    engine = create_writer_engine(f"sqlite+aiosqlite:///{db}")
    try:
        with engine.connect() as conn:
            cfg = Config()
            cfg.set_main_option("script_location", str(MIGRATIONS))
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
            command.upgrade(cfg, "head")
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    finally:
        engine.dispose()
