"""Fixed statements said straight to the DB-API cursor, compiled once per dialect.

Why: a message's commit runs about twelve statements, each built once already, and
still SQLAlchemy's execute path (parameter coercion, cache lookup, an execution
context, a result object) cost ~11-18 µs of CPU per statement more than the
driver (a prebuilt audit INSERT on SQLite in memory: 16-24 µs through
``conn.execute``, 5.7 µs here), about as much as SQLite running it. As with
``store.db.Savepoint``, the hottest fixed statements skip it; what SQLAlchemy
gave them stays: the SQL is its compiled text for the connection's dialect
(qmark for SQLite, pyformat for psycopg), the values pass through each type's
bind processor (JSON, SQLite's DateTime), a driver error comes back as
SQLAlchemy's ``DBAPIError`` (the writer retries on its ``sqlstate``), and
``before_cursor_execute`` listeners still see every statement (the
per-tenant statement check of tests/test_isolation.py, bench/statements.py, and
store/db.py's savepoints, said before the first statement inside them).

``first``/``all``/``rowcount``/``many`` give the driver's rows as they come (ids,
strings, counts); ``rows`` gives a SELECT's rows as dicts by column key with each
type's result processing (SQLite's datetimes, JSON), for the reads of every page
view (figure 8). Parameters are fixed: no expanding ``IN`` (use ORed equalities).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement

__all__ = ["Direct", "Family", "bind_processor", "together"]

_Build = Callable[[Connection], ClauseElement]
K = TypeVar("K", bound=Hashable)
_SQLITE_DATETIME = sqlite.DATETIME._storage_format  # SQLAlchemy's default, with microseconds


def bind_processor(type_: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    """The type's bind processor for ``dialect``; SQLite's default DATETIME's as the same
    string from ``isoformat`` (~1.5 µs a value through SQLAlchemy's ``%`` of a dict, about
    ten a message; a datetime subclass or a date still goes that way)."""
    impl = type_.dialect_impl(dialect)
    proc = impl.bind_processor(dialect)
    if proc is None or type(impl) is not sqlite.DATETIME:
        return proc
    if impl._storage_format != _SQLITE_DATETIME:
        return proc
    general = proc

    def sqlite_datetime(value: Any) -> Any:
        if type(value) is datetime:
            return value.isoformat(" ", "microseconds")[:26]
        return general(value)

    return sqlite_datetime


class _Compiled:
    __slots__ = ("_take", "defaults", "names", "positional", "procs", "results", "sql")

    def __init__(self, stmt: ClauseElement, dialect: Dialect, keys: Sequence[str] | None) -> None:
        compiled = stmt.compile(dialect=dialect, column_keys=list(keys) if keys else None)
        if compiled.insert_prefetch or compiled.update_prefetch:
            # A column's Python default is filled in by SQLAlchemy's execution context,
            # which this path skips: the caller must give every such column.
            raise ValueError(f"give the defaulted columns too: {compiled.insert_prefetch}")
        self.sql: str = compiled.string
        self.positional: bool = bool(compiled.positional)
        binds = compiled.binds
        self.names: tuple[str, ...] = (
            tuple(compiled.positiontup or ()) if self.positional else tuple(binds)
        )
        # The positional values in the statement's order, taken in C: the hottest Python
        # of the writer's statements was a generator over a message row's ~25 names.
        self._take: Callable[[Mapping[str, Any]], tuple[Any, ...]] = _taker(self.names)
        self.defaults: dict[str, Any] = {}
        self.procs: list[tuple[str, Callable[[Any], Any]]] = []
        for name, bind in binds.items():
            if bind.expanding:
                raise ValueError(f"{name}: an expanding IN has no fixed SQL")
            if not bind.required:
                self.defaults[name] = bind.effective_value
            proc = bind_processor(bind.type, dialect)
            if proc is not None:
                self.procs.append((name, proc))
        # A SELECT's or a RETURNING's (column key, result processor), where it has one.
        self.results: list[tuple[str, Callable[[Any], Any]]] = [
            (c.key, rproc)
            for c in getattr(stmt, "exported_columns", ())
            if (rproc := c.type.dialect_impl(dialect).result_processor(dialect, None)) is not None
        ]

    def parameters(self, values: Mapping[str, Any]) -> Any:
        params = {**self.defaults, **values} if self.defaults else dict(values)
        for name, proc in self.procs:
            params[name] = proc(params[name])
        if self.positional:
            return self._take(params)
        return params


def _taker(names: Sequence[str]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """The values of ``names`` from a mapping, as a tuple (``itemgetter`` gives a lone
    value bare, and wants at least one name)."""
    if not names:
        return lambda _values: ()
    if len(names) == 1:
        (name,) = names
        return lambda values: (values[name],)
    return operator.itemgetter(*names)


class Direct:
    """One statement, compiled for each dialect on first use, run on the DB-API cursor.

    ``stmt``: the statement, or a function of the first connection that builds it (an
    ``ON CONFLICT DO NOTHING`` is a dialect's own construct: ``store.db.insert_ignore``).
    ``keys``: an INSERT's columns, the ones every call gives (SQLAlchemy compiles an
    INSERT for its keys).
    """

    __slots__ = ("_build", "_by_dialect", "_keys", "_last", "keys")

    def __init__(self, stmt: ClauseElement | _Build, keys: Sequence[str] | None = None) -> None:
        self._build = stmt
        self._keys = tuple(keys) if keys else None
        self._by_dialect: dict[str, _Compiled] = {}
        # The dialect asked last and its statement: a process has one writer's dialect,
        # and naming it ("sqlite+pysqlite") on every call cost more than the lookup.
        self._last: tuple[Dialect, _Compiled] | None = None
        # A SELECT's (or a RETURNING's) column keys: the keys of ``rows``' dicts.
        self.keys: tuple[str, ...] = tuple(c.key for c in getattr(stmt, "exported_columns", ()))
        if len(set(self.keys)) != len(self.keys):
            raise ValueError(f"column keys repeat: {self.keys}")

    def _compiled(self, conn: Connection) -> _Compiled:
        dialect = conn.dialect
        last = self._last
        if last is not None and last[0] is dialect:
            return last[1]
        key = f"{dialect.name}+{dialect.driver}"
        found = self._by_dialect.get(key)
        if found is None:
            stmt = self._build if isinstance(self._build, ClauseElement) else self._build(conn)
            found = self._by_dialect[key] = _Compiled(stmt, dialect, self._keys)
        self._last = (dialect, found)
        return found

    def first(self, conn: Connection, values: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The first row (a SELECT, or an INSERT/UPDATE ... RETURNING), or None."""
        return self._run(conn, values, lambda cur: cur.fetchone())

    def all(self, conn: Connection, values: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        return self._run(conn, values, lambda cur: cur.fetchall())

    def rows(self, conn: Connection, values: Mapping[str, Any]) -> list[dict[str, Any]]:
        """A SELECT's (or an UPDATE ... RETURNING's) rows as dicts by column key, each value
        through its type's result processing. Inside the connection's transaction, begun
        here if it has none (on SQLite the reader's ``BEGIN DEFERRED``: one snapshot for a
        read's statements)."""
        if not conn.in_transaction():
            conn.begin()  # rolled back when the connection goes back to the pool
        c = self._compiled(conn)
        raw = self._call(conn, c, c.parameters(values), False, lambda cur: cur.fetchall())
        rows = [dict(zip(self.keys, r, strict=True)) for r in raw]
        for key, proc in c.results:
            for row in rows:
                if row[key] is not None:
                    row[key] = proc(row[key])
        return rows

    def rowcount(self, conn: Connection, values: Mapping[str, Any]) -> int:
        """Rows an INSERT/UPDATE/DELETE touched."""
        return self._run(conn, values, lambda cur: cur.rowcount)

    def many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """One ``executemany`` for ``rows`` (each with the same keys)."""
        if not rows:
            return
        c = self._compiled(conn)
        params = [c.parameters(r) for r in rows]
        self._call(conn, c, params, True, lambda cur: None)

    def _run(self, conn: Connection, values: Mapping[str, Any], take: Callable[[Any], Any]) -> Any:
        c = self._compiled(conn)
        return self._call(conn, c, c.parameters(values), False, take)

    @staticmethod
    def _call(
        conn: Connection, c: _Compiled, params: Any, many: bool, take: Callable[[Any], Any]
    ) -> Any:
        dbapi_conn = conn.connection.dbapi_connection
        assert dbapi_conn is not None
        cursor = dbapi_conn.cursor()
        try:
            listeners = conn.dispatch.before_cursor_execute
            if listeners:
                for fn in listeners:
                    fn(conn, cursor, c.sql, params, None, many)
            if many:
                cursor.executemany(c.sql, params)
            else:
                cursor.execute(c.sql, params)
            return take(cursor)
        except conn.dialect.loaded_dbapi.Error as exc:
            raise _wrapped(conn, exc, c.sql, params, cursor) from exc
        finally:
            cursor.close()


def _wrapped(conn: Connection, exc: Exception, sql: str, params: Any, cursor: Any) -> DBAPIError:
    """The driver's error as SQLAlchemy's (its class by the driver's, the ``sqlstate`` on
    ``orig``), the connection invalidated if the error says it is gone."""
    dialect = conn.dialect
    gone = dialect.is_disconnect(exc, conn.connection.dbapi_connection, cursor)  # type: ignore[arg-type]
    if gone:
        conn.invalidate(exc)
    return DBAPIError.instance(
        sql, params, exc, dialect.loaded_dbapi.Error, connection_invalidated=gone, dialect=dialect
    )


@contextmanager
def together(conn: Connection) -> Iterator[None]:
    """The ``many`` calls inside in one round trip on PostgreSQL: psycopg's pipeline,
    which each ``executemany`` rides instead of syncing on its own (a round trip each,
    ~0.3-0.4 ms on figure 9's busy machine). Only for writes that read nothing back
    (store/deferred.py's flush): an error surfaces at the end, as SQLAlchemy's
    ``DBAPIError`` with its ``sqlstate`` (the writer retries on it). Elsewhere nothing."""
    dbapi_conn = conn.connection.dbapi_connection
    pipeline = getattr(dbapi_conn, "pipeline", None)
    if conn.dialect.name != "postgresql" or pipeline is None:
        yield
        return
    try:
        with pipeline():
            yield
    except conn.dialect.loaded_dbapi.Error as exc:  # a statement's own came wrapped (_call)
        raise _wrapped(conn, exc, "(the batch's held rows)", None, None) from exc


class Family(Generic[K]):
    """Fixed statements that differ by one key, each built when first asked for: an IN
    of ``n`` bindparams for each ``n`` (padded to a power of two by
    ``store.repos.ids_asked``, so a handful in all), a LIMIT of each size, an INSERT
    for each set of columns. A statement built per call would cost SQLAlchemy's
    compilation each time, the cost ``Direct`` is there to skip."""

    __slots__ = ("_build", "_built")

    def __init__(self, build: Callable[[K], Direct]) -> None:
        self._build = build
        self._built: dict[K, Direct] = {}

    def __getitem__(self, key: K) -> Direct:
        found = self._built.get(key)
        if found is None:
            found = self._built[key] = self._build(key)
        return found
