"""store.db.Savepoint, the commit's driver-level savepoint, on the test session's engine
(SQLite, and PostgreSQL in the second pass): what it rolls back, what it keeps, and that
it nests with SQLAlchemy's own ``begin_nested()`` and survives a failed statement."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.exc import IntegrityError

from store.db import Savepoint, create_writer_engine
from store.models import metadata, ticket_counters
from tests.pg_harness import session_cluster, use_postgresql


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    if use_postgresql():
        cluster = session_cluster()
        url = cluster.url(cluster.new_database("savepoint"), driver="psycopg")
    else:
        url = f"sqlite:///{tmp_path / 'gateway.db'}"
    eng = create_writer_engine(url)
    metadata.create_all(eng)
    yield eng
    eng.dispose()


def _names(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(ticket_counters.c.tenant).order_by("tenant")).scalars())


def _add(conn, tenant: str) -> None:  # type: ignore[no-untyped-def]
    conn.execute(insert(ticket_counters).values(tenant=tenant, last_number=1))


def test_rollback_undoes_only_what_came_after_it(engine: Engine) -> None:
    with engine.begin() as conn:
        _add(conn, "before")
        outer = Savepoint(conn)
        _add(conn, "kept")
        inner = Savepoint(conn)
        _add(conn, "undone")
        inner.rollback()
        _add(conn, "after")
        outer.commit()
        inner.commit()  # already ended: a no-op, as a second end must be
    assert _names(engine) == ["after", "before", "kept"]


def test_a_failed_statement_is_undone_and_the_transaction_goes_on(engine: Engine) -> None:
    with engine.begin() as conn:
        _add(conn, "acme")
        sp = Savepoint(conn)
        with pytest.raises(IntegrityError):
            _add(conn, "acme")  # the primary key: on PostgreSQL this aborts the transaction
        sp.rollback()
        nested = conn.begin_nested()  # SQLAlchemy's own, inside ours
        _add(conn, "globex")
        nested.commit()
        assert conn.execute(select(func.count()).select_from(ticket_counters)).scalar() == 2
    assert _names(engine) == ["acme", "globex"]


def test_the_outer_rollback_takes_a_released_savepoint_with_it(engine: Engine) -> None:
    with pytest.raises(RuntimeError), engine.begin() as conn:
        sp = Savepoint(conn)
        _add(conn, "acme")
        sp.commit()
        raise RuntimeError("the writer's batch fails")
    assert _names(engine) == []
