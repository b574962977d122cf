"""The migrations build exactly the schema the models describe, and the audit log is append-only.

Each test runs on the store of the run: a SQLite file, or a database of its own in the
session's PostgreSQL cluster with GATEWAY_TEST_DB=postgresql.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from store.db import create_engine, create_writer_engine, upgrade
from store.models import metadata
from store.search import in_models
from tests.pg_harness import session_cluster, use_postgresql


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A database URL for an empty store."""
    if use_postgresql():
        cluster = session_cluster()
        return cluster.url(cluster.new_database("mig"))
    return f"sqlite+aiosqlite:///{tmp_path / 'g.db'}"


def _compare(conn: Connection) -> list[object]:
    """alembic's model-vs-store diff, past the search index models.py cannot hold."""
    ctx = MigrationContext.configure(conn, opts={"include_name": in_models})
    return list(compare_metadata(ctx, metadata))


def _migrate(url: str) -> None:
    async def go() -> None:
        engine = create_engine(url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(go())


def test_migrations_match_the_models(db: str) -> None:
    _migrate(db)

    async def diff() -> list[object]:
        engine = create_engine(db)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(_compare)
        finally:
            await engine.dispose()

    assert asyncio.run(diff()) == []


def test_audit_rows_cannot_be_changed_or_deleted_without_the_unlock(db: str) -> None:
    _migrate(db)
    engine = create_writer_engine(db)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO audit_events (tenant, actor, action, detail, created_at) "
                    "VALUES ('acme', 'a@x.test', 'ticket.created', '{}', '2024-01-01')"
                )
            )
        for sql in ("UPDATE audit_events SET actor = 'b@x.test'", "DELETE FROM audit_events"):
            with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
                conn.execute(text(sql))
        # The documented exception: erasure and purge unlock inside their own transaction.
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO audit_unlock (reason) VALUES ('erase')"))
            conn.execute(text("UPDATE audit_events SET actor = 'erased'"))
            conn.execute(text("DELETE FROM audit_unlock"))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT actor FROM audit_events")).all() == [("erased",)]
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text("DELETE FROM audit_events"))
    finally:
        engine.dispose()


def _down_and_up(engine: Engine, to: str) -> None:
    """alembic down to ``to`` and back up to head on one connection, as ``upgrade``
    hands it over (outside a transaction); the schema then matches the models."""
    from alembic import command
    from alembic.config import Config

    from store.db import MIGRATIONS

    with engine.connect() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, to)
        command.upgrade(cfg, "head")
        assert _compare(conn) == []


def test_downgrade_to_base_and_up_again(db: str) -> None:
    """Every migration's downgrade runs, and the way back up lands on the same schema."""
    _migrate(db)
    engine = create_writer_engine(db)
    try:
        _down_and_up(engine, "base")
    finally:
        engine.dispose()


def test_the_start_up_shortcut_knows_alembics_head(db: str) -> None:
    """Every start skips alembic when the store is at ``HEAD``; that shortcut is only
    right while HEAD (from the file names) is alembic's own head, and a store one
    migration behind still migrates."""
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from store.db import HEAD, MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(cfg).get_heads() == [HEAD]
    _migrate(db)
    engine = create_writer_engine(db)
    try:
        with engine.connect() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "-1")
            conn.commit()
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() != HEAD
        _migrate(db)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD
            assert _compare(conn) == []
    finally:
        engine.dispose()


_BUILT_ONLINE = (  # the indexes of migrations 0014, 0015 and 0016
    "ix_messages_raw_kept",
    "ix_messages_raw_sha256_kept",
    "ix_tickets_tenant_status_updated_at",
    "ix_outbox_tenant_kind_to_addr_created_at",
    "ix_messages_tenant_message_id",
)


def test_indexes_on_live_tables_are_built_without_blocking_writes(db: str) -> None:
    """On PostgreSQL 0014 to 0016 build (and drop) their indexes CONCURRENTLY, outside
    any transaction (a plain CREATE INDEX holds off every write to the table while it
    builds); SQLite has no such form and gets the plain statement. Both ways up and down."""
    _migrate(db)
    engine = create_writer_engine(db)
    seen: list[tuple[str, str | None]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def note(conn: Connection, _cur: object, sql: str, *_args: object) -> None:
        if " INDEX " in sql.upper() and any(n in sql for n in _BUILT_ONLINE):
            level = conn.get_execution_options().get("isolation_level")
            seen.append((" ".join(sql.split()), level))

    try:
        _down_and_up(engine, "0013")
    finally:
        engine.dispose()
    built = [s for s, _ in seen if s.startswith("CREATE")]
    dropped = [s for s, _ in seen if s.startswith("DROP")]
    if use_postgresql():
        # 0014's three; 0015's, down and up; 0016's, down and up
        assert len(built) == len(dropped) == 3 + 2 + 1
        for sql, level in seen:
            if not sql.startswith("ALTER"):
                assert "CONCURRENTLY" in sql, sql
            assert level == "AUTOCOMMIT", sql
    else:
        assert len(built) == len(dropped) == 3 + 1  # 0015 leaves SQLite alone
        assert not any("CONCURRENTLY" in s for s, _ in seen)
