"""Which of the writer's commits wait for the disk (store/writer.py, ``durable``).

A batch of units that said they need not (the outbox's claims and outcomes) commits
with SQLite's ``synchronous=NORMAL`` or PostgreSQL's ``synchronous_commit = off``; any
other unit in the batch makes it wait. Read back inside each unit from the real
database, on the store of the run (SQLite, or PostgreSQL with
GATEWAY_TEST_DB=postgresql); the rollback case always runs on PostgreSQL, whose SET
is undone with its transaction.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.engine import Connection, Engine

from store.writer import Writer


def _waiting_by_default(engine: Engine) -> Engine:
    """The test cluster runs without waiting (fsync off): this database's own default
    waits, as an operator sets it, and RESET must bring that back."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            name = conn.exec_driver_sql("SELECT current_database()").scalar()
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" SET synchronous_commit = on')
        engine.dispose()  # new connections take the database's default
    return engine


def _waits(conn: Connection) -> bool:
    """Whether this transaction's commit waits for the disk, as the database says."""
    if conn.dialect.name == "sqlite":
        return conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    return conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"


def _run(engine: Engine, rounds: list[list[bool]]) -> list[list[bool]]:
    """Each round's units (True: durable) submitted together, so they share a batch."""

    async def go() -> list[list[bool]]:
        writer = Writer(engine)
        seen = []
        try:
            for units in rounds:
                seen.append(
                    list(await asyncio.gather(*(writer.submit(_waits, durable=d) for d in units)))
                )
        finally:
            await writer.close()
        return seen

    return asyncio.run(go())


def test_only_a_batch_of_units_that_need_not_wait_skips_the_disk(store_engine: Engine) -> None:
    rounds = [[True], [False], [False, False], [False, True, False], [True], [False]]
    seen = _run(_waiting_by_default(store_engine), rounds)
    assert seen == [[True], [False], [False, False], [True, True, True], [True], [False]]


def test_a_durable_batch_rolled_back_leaves_the_next_one_durable(pg_engine: Engine) -> None:
    """A relaxed batch, then a durable one whose RESET is undone by its rollback: the
    next durable batch must say it again, not believe it still holds."""

    async def go() -> list[bool]:
        writer = Writer(_waiting_by_default(pg_engine))

        def fails(conn: Connection) -> None:
            assert _waits(conn)
            raise RuntimeError("the unit fails after the RESET")

        try:
            seen = [await writer.submit(_waits, durable=False)]
            with pytest.raises(RuntimeError):
                await writer.submit(fails)
            seen.append(await writer.submit(_waits))
            seen.append(await writer.submit(_waits, durable=False))
        finally:
            await writer.close()
        return seen

    assert asyncio.run(go()) == [False, True, False]
