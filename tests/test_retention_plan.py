"""The daily retention purge and the blob collector's orphan search reach their rows
through indexes (migration 0014), on a store made by the migrations, SQLite and
PostgreSQL (second pass).

Why a plan and not a timing: without these indexes the purge read every message and
ticket of the tenant, and the orphan search every message, under the writer's lock,
holding back every mail for seconds at a million messages (issue 21, figure 5;
bench/results/notes/stall21.md). A plan shows that on an empty store, without a clock.
On SQLite each statement's EXPLAIN QUERY PLAN must name the index; on PostgreSQL, with
sequential scans priced out, EXPLAIN must show one of 0014's indexes (a partial index
whose condition the query does not imply cannot be used, and leaves a Seq Scan).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, insert
from sqlalchemy.engine import Connection

from store.blobs_db import DatabaseBlobStore
from store.db import create_engine, create_writer_engine, upgrade
from store.models import blobs as blob_rows
from store.models import tickets as ticket_rows
from store.retention import Policy, collect_blobs, find_orphans, purge
from tests.pg_harness import session_cluster, use_postgresql


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    if use_postgresql():
        cluster = session_cluster()
        url = cluster.url(cluster.new_database("retplan"))
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"

    async def migrate() -> None:
        migrating = create_engine(url)
        try:
            await upgrade(migrating)
        finally:
            await migrating.dispose()

    asyncio.run(migrate())
    eng = create_writer_engine(url)
    yield eng
    eng.dispose()


def _record(engine: Engine) -> list[tuple[str, Any]]:
    seen: list[tuple[str, Any]] = []

    def before(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, many: bool) -> None:
        if not many:
            seen.append((statement, params))

    event.listen(engine, "before_cursor_execute", before)
    return seen


def _plan(conn: Connection, statement: str, params: Any) -> str:
    cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if conn.dialect.name == "postgresql":
            cur.execute("SET LOCAL enable_seqscan = off")
            cur.execute(f"EXPLAIN {statement}", params)
            return "\n".join(str(r[0]) for r in cur.fetchall())
        cur.execute(f"EXPLAIN QUERY PLAN {statement}", params)
        return "\n".join(str(r[-1]) for r in cur.fetchall())
    finally:
        cur.close()


def _uses(engine: Engine, plan: str, index: str, table: str) -> bool:
    """SQLite: the plan names ``index``. PostgreSQL on an empty table may take either of
    the two partial indexes on messages (they cost the same with no rows): a partial
    one of 0014, and no sequential scan of the table."""
    if engine.dialect.name != "postgresql" or table != "messages":
        return index in plan
    return "Seq Scan on messages" not in plan and "_kept on messages" in plan


def _plans(engine: Engine, seen: list[tuple[str, Any]], table: str) -> list[tuple[str, str]]:
    """(statement, plan) of each recorded statement that reads ``table``."""
    out = []
    with engine.begin() as conn:
        for statement, params in seen:
            words = statement.split()
            if words[0] in ("SELECT", "UPDATE", "DELETE") and f" {table} " in f" {statement} ":
                if f"FROM {table}" in statement or f"UPDATE {table}" in statement:
                    out.append((" ".join(words), _plan(conn, statement, params)))
    return out


def test_the_purge_reads_old_raw_mail_and_closed_tickets_through_their_indexes(
    engine: Engine,
) -> None:
    # Open tickets, analysed: on an empty table PostgreSQL would rather walk
    # (tenant, number) for the ORDER BY, whatever the index; with rows it weighs them.
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            insert(ticket_rows),
            [
                {"tenant": "acme", "number": n, "ref": f"ACME-{n}", "subject": "s",
                 "status": "open", "queue": "default", "created_at": now, "updated_at": now}
                for n in range(1, 5001)
            ],
        )  # fmt: skip
        conn.exec_driver_sql("ANALYZE tickets")
    seen = _record(engine)
    with engine.begin() as conn:
        purge(conn, "acme", Policy(365, 90, 365), now, dry_run=False)

    messages = _plans(engine, seen, "messages")
    # The select of the blobs to collect, the count and the update of raw_purged_at.
    assert len(messages) == 3, messages
    for statement, plan in messages:
        assert _uses(engine, plan, "ix_messages_raw_kept", "messages"), (statement, plan)
    tickets = _plans(engine, seen, "tickets")
    assert len(tickets) == 1, tickets
    statement, plan = tickets[0]
    assert "ix_tickets_tenant_status_updated_at" in plan, (statement, plan)


def test_the_orphan_search_and_the_check_under_the_lock_probe_the_kept_raw_mail(
    engine: Engine,
) -> None:
    blobs = DatabaseBlobStore(engine)
    sha = "0" * 64  # a blob no row names, from before the cut-off: an orphan
    with engine.begin() as conn:
        conn.execute(
            insert(blob_rows).values(sha256=sha, size=1, data=b"x", created_at=datetime(2020, 1, 1))
        )
    seen = _record(engine)
    assert find_orphans(engine, blobs, datetime.now(UTC).timestamp()) == {sha}
    with engine.begin() as conn:
        assert collect_blobs(conn, blobs, {sha}) == [sha]

    plans = _plans(engine, seen, "messages")
    # find_orphans' anti-join, and collect_blobs' "does a kept raw mail name it".
    assert len(plans) == 2, plans
    for statement, plan in plans:
        assert _uses(engine, plan, "ix_messages_raw_sha256_kept", "messages"), (statement, plan)
