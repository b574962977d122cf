"""store/reader.py: a small read runs on the loop on SQLite, and one that would wait
for a lock runs on the reader thread instead (whose connection waits), never fails."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Connection

from store.reader import Reader


def test_an_inline_read_that_would_wait_goes_to_the_thread(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    raw = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    raw.execute("CREATE TABLE t (x INTEGER)")
    raw.execute("INSERT INTO t VALUES (1)")
    raw.execute("BEGIN EXCLUSIVE")  # nobody may read until it ends
    release = threading.Timer(0.5, lambda: raw.execute("COMMIT"))
    reader = Reader.for_url(f"sqlite:///{path}")
    where: list[str] = []

    def work(conn: Connection) -> int:
        where.append(threading.current_thread().name)
        return int(conn.execute(text("SELECT x FROM t")).scalar_one())

    async def main() -> list[int]:
        release.start()
        locked = await reader.read(work, inline=True)  # refused on the loop, waits on the thread
        free = await reader.read(work, inline=True)
        return [locked, free]

    try:
        assert asyncio.run(main()) == [1, 1]
    finally:
        release.join()
        reader.close()
        raw.close()
    assert where[-2].startswith("store-reader")
    assert where[-1] == threading.main_thread().name
