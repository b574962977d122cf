"""SQLite's WAL stays near its checkpoint threshold under steady commits and reads.

The writer leaves SQLite's automatic checkpoint on: the commit that takes the WAL
past 1,000 pages copies it back into the database file, and the writer's next
transaction rewinds the WAL to its start. A checkpoint from another connection (a
thread of its own, tried in issue 21: bench/results/notes/ckpt21.md) never found
the WAL wholly copied while the writer kept committing, so the file was never
rewound and grew by every commit (389 MB in 8 s). A reader that kept its snapshot
open would pin the WAL the same way. Here the writer commits steadily while the
reader reads between commits, on a real file, and the WAL's largest size is held to
a few times the threshold.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from sqlalchemy.engine import Connection

from store.db import create_writer_engine
from store.reader import Reader
from store.writer import Writer

_ROUNDS = 1500  # of 4 units, one batch each: 6,000 rows of 2 kB, 12 MB
_THRESHOLD = 1000 * 4096  # SQLite's default: 1,000 pages of 4 KiB


def _create(conn: Connection) -> None:
    conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT, b BLOB)")
    conn.exec_driver_sql("CREATE INDEX t_k ON t (k)")


def _insert(conn: Connection) -> None:
    # A random key, as Message-IDs are: each commit dirties its own index leaf page.
    conn.exec_driver_sql(
        "INSERT INTO t (k, b) VALUES (?, ?)", (os.urandom(8).hex(), os.urandom(2000))
    )


def _count(conn: Connection) -> int:
    return int(conn.exec_driver_sql("SELECT count(*) FROM t").scalar() or 0)


def _size(path: Path) -> int:
    """A local file's size: one stat, nothing to wait for."""
    return path.stat().st_size


def test_the_wal_is_rewound_while_mail_keeps_coming(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    wal = Path(f"{path}-wal")
    url = f"sqlite:///{path}"

    async def go() -> tuple[int, int]:
        writer, reader = Writer(create_writer_engine(url)), Reader.for_url(url)
        peak = 0
        try:
            await writer.submit(_create)
            for i in range(_ROUNDS):
                await asyncio.gather(*(writer.submit(_insert) for _ in range(4)))
                await reader.read(_count, inline=i % 2 == 0)
                peak = max(peak, _size(wal))
            return peak, await reader.read(_count)
        finally:
            reader.close()
            await writer.close()

    peak, rows = asyncio.run(go())
    assert rows == _ROUNDS * 4
    # Everything in the database file went through the WAL, several times its size ...
    assert path.stat().st_size > 3 * _THRESHOLD
    # ... yet it was rewound each time it was copied back.
    assert peak < 3 * _THRESHOLD, peak
