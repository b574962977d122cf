"""JSON columns' text (store/db.py ``json_text``): orjson's where it reads the same as
the standard library's, the standard library's where it would not.

On the run's store (SQLite, or PostgreSQL with GATEWAY_TEST_DB=postgresql), through
both ways a value is written: SQLAlchemy's ``execute`` and store/direct.py's driver path.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import JSON, Column, Integer, MetaData, Table, Text, cast, insert, select
from sqlalchemy.engine import Engine

from store.db import json_text
from store.direct import Direct

_probe = Table(
    "json_probe",
    MetaData(),
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("v", JSON, nullable=False),
)
_INSERT = Direct(insert(_probe), ("id", "v"))

VALUES: list[Any] = [
    ["billing", "vip"],
    {"to": ["kim@client.test"], "n": 3, "ok": True, "none": None},
    ["café", "Grüße"],  # non-ASCII: escaped, as text stored before was
    {"detail": "line\nbreak \"quoted\" \\ tab\t"},
    [2**70],  # past orjson's 64 bits
    {1: "an int key"},  # the standard library writes it as "1"
    [],
]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_the_text_reads_as_the_standard_library_reads_it(value: Any) -> None:
    text = json_text(value)
    assert json.loads(text) == json.loads(json.dumps(value))
    assert text.isascii(), text  # never raw UTF-8: stored text stays as it was


def test_ascii_text_is_written_compact_and_the_rest_as_before() -> None:
    # The fast path is the one taken (a tenth of the writer thread's time at K=32).
    assert json_text(["billing", "vip"]) == '["billing","vip"]'
    assert json_text(["café"]) == json.dumps(["café"]) == '["caf\\u00e9"]'


def test_values_go_in_and_come_back_on_the_store(store_engine: Engine) -> None:
    _probe.create(store_engine)
    try:
        with store_engine.begin() as conn:
            for i, value in enumerate(VALUES):
                if i % 2:
                    _INSERT.many(conn, [{"id": i, "v": value}])
                else:
                    conn.execute(insert(_probe).values(id=i, v=value))
        with store_engine.connect() as conn:
            back = dict(conn.execute(select(_probe.c.id, _probe.c.v)).all())
            texts = dict(conn.execute(select(_probe.c.id, cast(_probe.c.v, Text))).all())
        for i, value in enumerate(VALUES):
            assert back[i] == json.loads(json.dumps(value)), i
            assert texts[i] == json_text(value), i
        # The desk's tag filter finds a non-ASCII tag in the stored text (store/desk.py).
        assert json_text("café") in texts[2]
    finally:
        _probe.drop(store_engine)
