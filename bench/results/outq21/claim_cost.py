"""CPU of one outbox claim and one sent mark, each of one due row, on a SQLite store.

    PYTHONPATH=CHECKOUT python bench/results/outq21/claim_cost.py [N]

As the outbox worker meets them under figure 1's load: a row queued, claimed (limit
4, the worker's connections), marked sent, one transaction each; the table keeps the
sent rows. The first 500 rounds warm up; ``time.process_time`` around each call.
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from outbound.outbox_rows import claim, mark_sent
from store import repos
from tests.conftest import migrated_engine


def main(n: int) -> None:
    engine = migrated_engine(Path(tempfile.mkdtemp()), postgresql=False)
    took = {"claim": 0.0, "mark_sent": 0.0}
    with engine.connect() as conn:
        for i in range(n + 500):
            with conn.begin():
                mail = ("ack", None, f"<m{i}@x.test>", "s@acme.test", ["c@x.test"], b"body")
                repos.enqueue_many(conn, "acme", [mail])
            with conn.begin():
                now = repos.now() + timedelta(seconds=10)
                t0 = time.process_time()
                rows = claim(conn, now, 4, "i1", 60)
                t1 = time.process_time()
                kept = mark_sent(conn, [r["id"] for r in rows], "i1")
                t2 = time.process_time()
            assert len(rows) == 1 and kept
            if i >= 500:
                took["claim"] += t1 - t0
                took["mark_sent"] += t2 - t1
    engine.dispose()
    print({k: round(v / n * 1e6) for k, v in took.items()}, "µs a call")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3000)
