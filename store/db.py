"""Engine set-up and migrations.

SQLite is opened in WAL mode with ``synchronous=FULL``: the 250 after DATA is
a promise that must survive a power cut, and NORMAL may roll back a commit on
power loss (SQLite's documentation of the pragma says so). PostgreSQL needs no pragmas.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Table, event
from sqlalchemy import create_engine as create_sync
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from store import deferred

__all__ = [
    "Savepoint",
    "create_engine",
    "create_writer_engine",
    "forget_wait_for_disk",
    "insert_ignore",
    "json_text",
    "upgrade",
    "wait_for_disk",
]

# The writer's driver for each async driver a URL may name.
_SYNC_DRIVERS = {"aiosqlite": "pysqlite", "asyncpg": "psycopg", "psycopg_async": "psycopg"}

MIGRATIONS = Path(__file__).parent / "migrations"


def json_text(value: Any) -> str:
    """A JSON column's text: orjson's, as the standard library writes it for ASCII text
    (compact, which a reader cannot tell apart), else the standard library's own.

    Why: a message writes about seven JSON values (its addresses, defects, flags,
    rules, an audit row's detail, the acknowledgement's recipients), and ``json.dumps``
    was a tenth of the writer thread's time at K=32 (bench/results/notes/json21.md).
    Why the fallback: the standard library escapes non-ASCII (``\\u00e9``), and text
    already stored, and the desk's tag filter (``store/desk.py``), read it so.
    """
    try:
        text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # orjson.JSONEncodeError: an int past 64 bits, say
        return json.dumps(value)
    return text if text.isascii() else json.dumps(value)


def _json_value(text: str | bytes) -> Any:
    """orjson's reading, else the standard library's (it reads the NaN it once wrote)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


# Every engine's JSON columns, through the dialect (store/direct.py's bind processors too).
_JSON = {"json_serializer": json_text, "json_deserializer": _json_value}


def create_engine(url: str, *, busy_timeout_ms: int = 5000) -> AsyncEngine:
    """The async engine readers use (CLI queries, migrations, later the web side)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        _mkdir(parsed.database)
        engine = create_async_engine(
            url, connect_args={"timeout": busy_timeout_ms / 1000}, **_JSON
        )
        _sqlite_session(engine.sync_engine, busy_timeout_ms)
        return engine
    return create_async_engine(url, pool_pre_ping=True, **_JSON)


def create_writer_engine(
    url: str, *, busy_timeout_ms: int = 5000, pre_ping: bool = True
) -> Engine:
    """A synchronous engine for the writer's own thread.

    Why not the async engine: through SQLAlchemy async + aiosqlite every
    statement costs about three event-loop/thread hand-offs; a message's
    transaction (dedupe, threading, ticket, message, participants, audit,
    acknowledgement) made ~48 of them and capped the gateway near 70 msg/s.
    The writer now runs a whole batch in one hop (see BENCHMARKS.md).

    ``pre_ping``: on PostgreSQL, test each connection with a round trip before
    use. The writer turns it off (a round trip per batch) and instead runs again a
    unit whose connection turned out dead before its commit (store/writer.py).
    """
    parsed = make_url(url)
    sync_driver = _SYNC_DRIVERS.get(parsed.get_driver_name(), parsed.get_driver_name())
    parsed = parsed.set(drivername=f"{parsed.get_backend_name()}+{sync_driver}")
    if parsed.get_backend_name() == "sqlite":
        _mkdir(parsed.database)
        engine = create_sync(
            parsed,
            connect_args={"timeout": busy_timeout_ms / 1000, "check_same_thread": False},
            **_JSON,
        )
        _sqlite_session(engine, busy_timeout_ms)
        return engine
    return create_sync(parsed, pool_pre_ping=pre_ping, **_JSON)


_IGNORING: dict[tuple[str, str], Any] = {}


def insert_ignore(conn: Connection, table: Table) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING, for SQLite and PostgreSQL alike (built once).

    Inline: no caller reads the new row's id, and on PostgreSQL SQLAlchemy would
    otherwise add ``RETURNING id`` to fetch it (a row made, sent and read for nothing,
    twice a message); rowcount still says whether the row was new."""
    key = (conn.dialect.name, table.name)
    stmt = _IGNORING.get(key)
    if stmt is None:
        if key[0] == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        stmt = _IGNORING[key] = dialect_insert(table).on_conflict_do_nothing().inline()
    return stmt


_SAVEPOINTS = itertools.count(1)
# Per DB-API connection: (the transaction they belong to, savepoints released but not yet said).
_PENDING = "gw_savepoints_released"
# Per DB-API connection: (the transaction they belong to, savepoints taken but not yet said).
_UNSAID = "gw_savepoints_unsaid"


class Savepoint:
    """A savepoint said straight to the driver, with ``begin_nested()``'s commit/rollback.

    Why: the commit took three savepoints per message (the message, its reactions,
    its clocks; now one, gateway/intake/commit.py); through SQLAlchemy a pair
    (SAVEPOINT, RELEASE) costs ~70 µs of CPU (a compiled statement each, events, a
    transaction object), straight to the DBAPI cursor ~2 µs: 6% of figure 1's CPU per
    message (BENCHMARKS.md). Plain SQL, the same on SQLite and PostgreSQL. Nest
    strictly (release or roll back the inner one first), as with ``begin_nested()``;
    SQLAlchemy does not see this savepoint, so its own nested transactions must open
    and close inside it. Rows the writer holds for its flush (store/deferred.py) are
    rolled back with it too.

    It is said only when a statement runs inside it (``said``): the connection's
    ``before_cursor_execute`` says the savepoints not yet said first, in order, and
    store/direct.py's statements call those listeners too. Most of what a message's
    reactions write is held for the flush, so ~90% of their savepoints never run a
    statement (bench.statements), and one that ends so says nothing at all: its
    rollback drops its held rows, its release has nothing to release.

    On PostgreSQL every statement is a round trip to the server (SQLite's are calls
    in the process), and six a message were a quarter of the writer's round trips
    (figure 9). So there a RELEASE is not sent alone: it waits and goes with the next
    SAVEPOINT in one simple query, and is dropped when an enclosing savepoint is
    released or rolled back, or the transaction ends (which release it anyway). Until
    then the statements that follow run inside the not yet released savepoint, which
    is the same thing to everyone: only a rollback to it could tell, and it is done.
    """

    __slots__ = ("_conn", "_held", "_name", "_open", "_pg", "_seq", "said")

    def __init__(self, conn: Connection) -> None:
        self._seq = next(_SAVEPOINTS)
        self._name = f"gw_sp_{self._seq}"
        self._conn = conn
        self._held = deferred.mark(conn)
        self._pg = conn.dialect.name == "postgresql"
        self._open = True
        self.said = False  # a statement ran inside it, so the server has it
        _in_transaction(conn, _UNSAID).append(self)

    def commit(self) -> None:
        """Keep what was done since the savepoint (RELEASE)."""
        if not self._open:
            return
        self._close()
        if not self.said:
            return  # nothing ran inside it: nothing to release
        if self._pg:
            # Those released inside this one go with it.
            pending = _in_transaction(self._conn, _PENDING)
            pending[:] = [p for p in pending if p[0] < self._seq]
            pending.append((self._seq, self._name))
            return
        _say(self._conn, f"RELEASE SAVEPOINT {self._name}")

    def rollback(self) -> None:
        """Undo what was done since the savepoint; the transaction goes on."""
        if not self._open:
            return
        deferred.rollback_to(self._conn, self._held)
        self._close()
        if not self.said:
            return  # nothing ran inside it but what the writer holds, dropped above
        if self._pg:
            pending = _in_transaction(self._conn, _PENDING)  # those inside it go with it
            pending[:] = [p for p in pending if p[0] < self._seq]
        _say(self._conn, f"ROLLBACK TO SAVEPOINT {self._name}")

    def _close(self) -> None:
        """Ended: off the list of those to say, with any left open inside it."""
        self._open = False
        unsaid = _in_transaction(self._conn, _UNSAID)
        unsaid[:] = [sp for sp in unsaid if sp._seq < self._seq]


def _in_transaction(conn: Connection, key: str) -> list[Any]:
    """``conn``'s list under ``key`` for its current transaction: a new transaction starts
    a new one (the old savepoints ended with theirs)."""
    txn = conn.get_transaction()
    box = conn.info.get(key)
    if box is None or box[0] is not txn:
        box = conn.info[key] = (txn, [])
    return box[1]  # type: ignore[no-any-return]


def _say(conn: Connection, sql: str) -> None:
    cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cur.execute(sql)
    finally:
        cur.close()


@event.listens_for(Engine, "before_cursor_execute")
def _say_unsaid(conn: Connection, *_statement: Any) -> None:
    """Before any statement, the savepoints taken and not yet said (and, on PostgreSQL,
    the RELEASEs waiting) are said, in the order taken: one simple query there."""
    box = conn.info.get(_UNSAID)
    if box is None or not box[1]:
        return
    unsaid: list[Savepoint] = box[1]
    if box[0] is not conn.get_transaction():
        unsaid.clear()  # left by a transaction that ended
        return
    said = [f"SAVEPOINT {sp._name}" for sp in unsaid]
    for sp in unsaid:
        sp.said = True
    unsaid.clear()
    if conn.dialect.name == "postgresql":
        pending = _in_transaction(conn, _PENDING)
        said = [f"RELEASE SAVEPOINT {name}" for _, name in pending] + said
        pending.clear()
        _say(conn, "; ".join(said))
        return
    for sql in said:
        _say(conn, sql)


@event.listens_for(Engine, "savepoint")
def _before_nested(conn: Connection, name: str | None) -> None:
    """SQLAlchemy's own savepoint must not open inside one we released: the late RELEASE
    would end it too. So what is released is said first (a round trip, only here)."""
    box = conn.info.get(_PENDING)
    if box is None or not box[1] or box[0] is not conn.get_transaction():
        return
    sql = "; ".join(f"RELEASE SAVEPOINT {n}" for _, n in box[1])
    box[1].clear()
    _say(conn, sql)


@event.listens_for(Engine, "release_savepoint")
@event.listens_for(Engine, "rollback_savepoint")
def _nested_ends(conn: Connection, name: str | None, context: Any) -> None:
    """Ours released since SQLAlchemy's savepoint opened lie inside it: they end with it."""
    box = conn.info.get(_PENDING)
    if box is not None:
        box[1].clear()


# The connection's own record of whether its commits wait for the disk (None: unknown).
_WAITS = "gateway_commit_waits"


def wait_for_disk(conn: Connection, waits: bool) -> None:
    """Whether this transaction's commit waits for the disk (store/writer.py says when
    it need not). Said only when it changes, so either kind of batch in a row adds no
    statement. SQLite's is set before the BEGIN (it refuses inside a transaction): the
    writer's engine asks with the execution option ``commit_waits``. PostgreSQL's
    ``SET`` is said in the transaction and undone with it if it rolls back (the writer
    then forgets it); ``RESET`` brings back the server's own setting, an operator's
    choice."""
    if conn.dialect.name != "sqlite" and _changes(conn.info, waits):
        conn.exec_driver_sql(
            "RESET synchronous_commit" if waits else "SET synchronous_commit = off"
        )


def _changes(info: dict[Any, Any], waits: bool) -> bool:
    """Whether the connection's setting must be said (and it is then recorded as said)."""
    if info.get(_WAITS, True) == waits:
        return False
    info[_WAITS] = waits
    return True


def forget_wait_for_disk(info: dict[Any, Any]) -> None:
    """After a transaction that failed: say the setting again next time."""
    info[_WAITS] = None


def _mkdir(database: str | None) -> None:
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_session(engine: Engine, busy_timeout_ms: int) -> None:
    """WAL, FULL, busy timeout, foreign keys, secure delete, and BEGIN under our control."""

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        # We emit BEGIN ourselves (below), so the driver must not.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cur.execute("PRAGMA foreign_keys=ON")
        # Deleted rows are overwritten with zeros, not left in free pages: an
        # erasure or a purge must not be undone by reading the file (docs/privacy.md).
        cur.execute("PRAGMA secure_delete=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # The writer asks for IMMEDIATE: it takes the write lock before its
        # first read, so a decision read in the transaction cannot go stale
        # while another process (``gateway ingest``) writes. Readers stay
        # DEFERRED and never block anyone in WAL mode.
        # Straight to the driver: through exec_driver_sql this BEGIN cost about as
        # much as the page's own queries (a py-spy profile of figure 8).
        # Through the DB-API cursor, which both the sync driver and SQLAlchemy's
        # aiosqlite adapter run synchronously (aiosqlite's own connection would hand
        # back a coroutine, and the BEGIN would never be sent).
        options = conn.get_execution_options()
        mode = options.get("sqlite_begin", "DEFERRED")
        cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        waits = options.get("commit_waits", True)  # see wait_for_disk
        if _changes(conn.info, waits):
            cur.execute(f"PRAGMA synchronous={'FULL' if waits else 'NORMAL'}")
        cur.execute(f"BEGIN {mode}")
        cur.close()


# The newest migration: revisions are named by their file's four-digit prefix
# (tests/test_migrations.py holds alembic's own head to this).
HEAD = max(p.name[:4] for p in (MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))


async def _current(engine: AsyncEngine) -> str | None:
    """The store's migration, or None when it has none yet (or cannot say)."""
    try:
        async with engine.connect() as conn:
            return (
                await conn.exec_driver_sql("SELECT version_num FROM alembic_version")
            ).scalar()
    except Exception:  # no table yet: a new store
        return None


# Any constant: instances starting together on one PostgreSQL migrate one at a time.
_MIGRATION_LOCK = 0x6777_0001
_LOCK_POLL = 0.2  # seconds between tries while another instance migrates


async def upgrade(engine: AsyncEngine) -> None:
    """Bring the schema to the newest migration; every start runs it.

    On PostgreSQL an advisory lock comes first: several instances starting at once
    would otherwise race to create the same tables, and the losers would exit. The
    later ones wait, then find the schema current. The lock is the session's (the
    migrations commit one by one, env.py) and taken by polling, never by a waiting
    ``pg_advisory_lock``: that waiting statement holds a snapshot, which the holder's
    CREATE INDEX CONCURRENTLY waits out, and the two wait on each other (three
    instances starting on an empty database hung so, tests/test_instances.py).
    """
    if await _current(engine) == HEAD:
        return  # the common case: no alembic to import and no script folder to read
    from alembic import command
    from alembic.config import Config

    def run(sync_conn: Connection) -> None:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = sync_conn
        command.upgrade(cfg, "head")

    async with engine.connect() as conn:
        locked = conn.dialect.name == "postgresql"
        if locked:
            await _lock_migrations(conn)
        try:
            await conn.run_sync(run)
        finally:
            await conn.rollback()  # a failed migration's transaction; nothing otherwise
            if locked:
                await conn.exec_driver_sql(f"SELECT pg_advisory_unlock({_MIGRATION_LOCK})")
                await conn.commit()


async def _lock_migrations(conn: AsyncConnection) -> None:
    """The session's migration lock, tried outside any open transaction until held."""
    while True:
        got = await conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({_MIGRATION_LOCK})")
        held = bool(got.scalar())
        await conn.commit()
        if held:
            return
        await asyncio.sleep(_LOCK_POLL)
