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


# On PostgreSQL a RELEASE waits to go with the next SAVEPOINT (store/db.py): the tests
# below hold what that must not change, on both engines.


def test_a_message_after_another_rolls_back_alone(engine: Engine) -> None:
    with engine.begin() as conn:
        first = Savepoint(conn)  # a message, its reaction and its clock, as the commit does
        _add(conn, "first")
        reaction = Savepoint(conn)
        _add(conn, "first-reaction")
        reaction.commit()
        clock = Savepoint(conn)
        _add(conn, "first-clock")
        clock.commit()
        first.commit()
        second = Savepoint(conn)  # the next message of the batch
        _add(conn, "second")
        reaction = Savepoint(conn)
        _add(conn, "second-reaction")
        reaction.commit()
        second.rollback()  # a rule's reject: the reaction released inside goes with it
        third = Savepoint(conn)
        _add(conn, "third")
        third.commit()
    assert _names(engine) == ["first", "first-clock", "first-reaction", "third"]


def test_a_released_savepoint_then_sqlalchemys_own_nested_ones(engine: Engine) -> None:
    # gateway route explain: SQLAlchemy's begin_nested() per tenant, ours inside each.
    with engine.begin() as conn:
        for tenant in ("acme", "globex", "initech"):
            nested = conn.begin_nested()
            sp = Savepoint(conn)
            _add(conn, tenant)
            sp.commit()
            if tenant == "globex":
                nested.rollback()
            else:
                nested.commit()
        mine = Savepoint(conn)
        _add(conn, "umbrella")
        mine.commit()
        nested = conn.begin_nested()  # opens after a release not yet said
        _add(conn, "wayne")
        nested.rollback()
        last = Savepoint(conn)
        _add(conn, "xyz")
        last.commit()
    assert _names(engine) == ["acme", "initech", "umbrella", "xyz"]


def test_a_release_left_unsaid_does_not_reach_the_next_transaction(engine: Engine) -> None:
    with engine.begin() as conn:
        sp = Savepoint(conn)
        _add(conn, "acme")
        sp.commit()
    with pytest.raises(RuntimeError), engine.begin() as conn:
        sp = Savepoint(conn)
        _add(conn, "globex")
        sp.commit()
        raise RuntimeError("the writer's batch fails")
    with engine.begin() as conn:  # the same pooled connection: nothing stale is said
        sp = Savepoint(conn)
        _add(conn, "initech")
        sp.commit()
    assert _names(engine) == ["acme", "initech"]


def test_a_failed_statement_after_a_released_savepoint(engine: Engine) -> None:
    with engine.begin() as conn:
        outer = Savepoint(conn)
        _add(conn, "acme")
        done = Savepoint(conn)
        _add(conn, "globex")
        done.commit()
        failing = Savepoint(conn)
        with pytest.raises(IntegrityError):
            _add(conn, "acme")  # aborts the transaction on PostgreSQL until the rollback
        failing.rollback()
        outer.commit()
        after = Savepoint(conn)
        _add(conn, "initech")
        after.commit()
    assert _names(engine) == ["acme", "globex", "initech"]


# A savepoint is said only when a statement runs inside it (store/db.py): the tests below
# hold that one left unsaid changes nothing but the statements sent.


def _heard(conn) -> list[str]:  # type: ignore[no-untyped-def]
    """What the driver is told from now on (SQLite's trace; PostgreSQL: not observable
    here, so the tests read ``said`` and the rows on both)."""
    said: list[str] = []
    if conn.dialect.name == "sqlite":
        conn.connection.dbapi_connection.set_trace_callback(said.append)
    return said


def test_a_savepoint_nothing_runs_in_is_never_said(engine: Engine) -> None:
    with engine.begin() as conn:
        heard = _heard(conn)
        kept = Savepoint(conn)
        kept.commit()
        undone = Savepoint(conn)
        undone.rollback()
        assert not kept.said and not undone.said
        assert not [s for s in heard if "SAVEPOINT" in s], heard
        _add(conn, "acme")  # nothing left to say before it
        assert not [s for s in heard if "SAVEPOINT" in s], heard
    assert _names(engine) == ["acme"]


def test_a_statement_says_every_open_savepoint_first_in_order(engine: Engine) -> None:
    """Outer and inner taken, neither said: the first statement inside says both, so a
    rollback of the inner one undoes just its rows, whichever way the statement goes
    (SQLAlchemy's execute, or store/direct.py's straight to the driver)."""
    from store.direct import Direct

    direct_add = Direct(insert(ticket_counters), ("tenant", "last_number"))
    with engine.begin() as conn:
        heard = _heard(conn)
        outer = Savepoint(conn)
        inner = Savepoint(conn)
        direct_add.rowcount(conn, {"tenant": "undone", "last_number": 1})
        assert outer.said and inner.said
        if conn.dialect.name == "sqlite":
            said = [s for s in heard if "SAVEPOINT" in s]
            assert said == [f"SAVEPOINT {outer._name}", f"SAVEPOINT {inner._name}"], heard
        inner.rollback()
        lazy = Savepoint(conn)  # never said: its release says nothing
        lazy.commit()
        _add(conn, "kept")
        outer.commit()
        late = Savepoint(conn)
        nested = conn.begin_nested()  # SQLAlchemy's own says ours first
        assert late.said
        _add(conn, "nested")
        nested.rollback()
        _add(conn, "late")
        late.rollback()
    assert _names(engine) == ["kept"]
