"""A prebuilt Core SELECT run straight on the driver's cursor: for the reads of every page view.

Why: through ``Connection.execute`` a cached, compiled statement still costs
about 100 µs of CPU on this machine (execution context, parameter processing,
events, the result object), against a few µs for SQLite to run it; figure 8's
page made two of them per view (BENCHMARKS.md). Here the statement is compiled
once per dialect, with its bind and result processors (SQLite's datetimes and
JSON as text), and each call is one cursor ``execute`` and ``fetchall``, as
store/db.py's ``Savepoint`` does for its SQL.

The read still runs inside the SQLAlchemy connection's transaction (begun here
if it has none: on SQLite the reader's ``BEGIN DEFERRED``, one snapshot for all
the statements of a read), and is rolled back with it. Only plain bind
parameters: an expanding ``IN`` is rendered per call by SQLAlchemy and is
refused here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Select
from sqlalchemy.engine import Connection, Dialect

__all__ = ["Prepared"]


class _Compiled:
    __slots__ = ("binds", "defaults", "positions", "results", "sql")

    def __init__(self, stmt: Select[Any], dialect: Dialect) -> None:
        compiled = stmt.compile(dialect=dialect)
        if any(b.expanding for b in compiled.binds.values()):
            raise ValueError("an expanding IN cannot be prepared: use ORed equalities")
        self.sql = compiled.string
        # The literal values among the binds (``role = 'client'``); the caller's fill the rest.
        self.defaults = {n: b.effective_value for n, b in compiled.binds.items() if not b.required}
        self.positions = compiled.positiontup  # None for a named paramstyle (psycopg)
        self.binds = {
            name: proc
            for name, bind in compiled.binds.items()
            if (proc := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None
        }
        self.results = [  # (column key, processor), for the columns that have one
            (c.key, proc)
            for c in stmt.selected_columns
            if (proc := c.type.dialect_impl(dialect).result_processor(dialect, None)) is not None
        ]


class Prepared:
    """``Prepared(select(...)).rows(conn, params)``: the rows as dicts by column key."""

    def __init__(self, stmt: Select[Any]) -> None:
        self.stmt = stmt
        self.keys = tuple(c.key for c in stmt.selected_columns)
        if len(set(self.keys)) != len(self.keys):
            raise ValueError(f"column keys repeat: {self.keys}")
        self._compiled: dict[str, _Compiled] = {}

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        c = self._compiled.get(conn.dialect.name)
        if c is None:
            c = self._compiled[conn.dialect.name] = _Compiled(self.stmt, conn.dialect)
        values = c.defaults | dict(params)
        for name, proc in c.binds.items():
            if values[name] is not None:
                values[name] = proc(values[name])
        args: Any = tuple(values[n] for n in c.positions) if c.positions else values
        if not conn.in_transaction():
            conn.begin()  # rolled back when the connection goes back to the pool
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(c.sql, args)
            raw = cursor.fetchall()
        finally:
            cursor.close()
        rows = [dict(zip(self.keys, r, strict=True)) for r in raw]
        for key, proc in c.results:
            for row in rows:
                if row[key] is not None:
                    row[key] = proc(row[key])
        return rows
