"""A private PostgreSQL cluster for tests, in a temporary folder, on a free port.

The store's PostgreSQL path (asyncpg readers, a psycopg writer, the same
migrations, SKIP LOCKED claims, leases) can only be trusted against a real
server, so the tests start a private one: Debian's
``initdb``/``pg_ctl`` run as the ``postgres`` user, 127.0.0.1 only, trust
auth. It is stopped by the pid in ``postmaster.pid``. If it cannot start the
fixture fails with its log; it never skips.

``GATEWAY_TEST_DB=postgresql`` makes ``tests/daemon.py`` give every gateway
its own database in the session's cluster (``Cluster.new_database``), so the
store-facing tests run on PostgreSQL as they do on SQLite.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from tests.ports import free_port

__all__ = [
    "Cluster",
    "Row",
    "pg_bin",
    "pg_reader",
    "session_cluster",
    "stop_session_cluster",
    "use_postgresql",
]

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def use_postgresql() -> bool:
    """True when this test run puts every gateway's store on PostgreSQL."""
    return os.environ.get("GATEWAY_TEST_DB", "sqlite").lower() in {"postgresql", "pg"}


def pg_bin() -> Path:
    """The newest installed server's bin folder (``/usr/lib/postgresql/<v>/bin``)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name.split(".")[0]),
    )
    if not found:
        raise RuntimeError("PostgreSQL server not installed (Debian package postgresql)")
    return Path(found[-1]).parent


class Cluster:
    """One ``postgres`` server of our own; ``durable=False`` trades fsync for test speed.

    ``settings`` are more ``-c name=value`` server settings (the benchmark states its
    tuning this way rather than keeping a second copy of this harness)."""

    def __init__(
        self,
        *,
        durable: bool = False,
        max_connections: int = 300,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="gw-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.durable = durable
        self.max_connections = max_connections
        self.settings = dict(settings or {})
        self._seq = 0

    def _as_postgres(self, *args: str, timeout: float = START_TIMEOUT) -> None:
        out = subprocess.run(
            ["runuser", "-u", "postgres", "--", *args],
            capture_output=True,
            timeout=timeout,
        )
        if out.returncode != 0:
            raise RuntimeError(
                f"{args[0]} failed: {out.stdout.decode()}{out.stderr.decode()}{self.log_text()}"
            )

    def start(self) -> Cluster:
        os.chmod(self.dir, 0o755)
        shutil.chown(self.dir, "postgres")
        binary = pg_bin()
        self._as_postgres(
            str(binary / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
            "-E", "UTF8", "--no-sync",
        )
        opts = [
            f"-p {self.port}",
            f"-k {self.dir}",
            "-c listen_addresses=127.0.0.1",
            f"-c max_connections={self.max_connections}",
        ]
        if not self.durable:
            opts += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        opts += [f"-c {name}={value}" for name, value in self.settings.items()]
        self._as_postgres(
            str(binary / "pg_ctl"), "-D", str(self.data), "-o", " ".join(opts),
            "-l", str(self.dir / "log"), "-w", "-t", str(int(START_TIMEOUT)), "start",
        )
        return self

    def pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """Fast shutdown by the postmaster's pid, then the folder goes."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
            deadline = time.monotonic() + STOP_TIMEOUT
            while time.monotonic() < deadline and (self.data / "postmaster.pid").exists():
                time.sleep(0.05)
            if (self.data / "postmaster.pid").exists():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_text(self) -> str:
        try:
            return (self.dir / "log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    # databases --------------------------------------------------------------
    def dsn(self, database: str = "postgres") -> str:
        """A libpq/psycopg connection string."""
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database}"

    def url(self, database: str, driver: str = "asyncpg") -> str:
        """A SQLAlchemy URL, as ``database_url`` in ``gateway.toml`` takes it."""
        return f"postgresql+{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres", **kw: Any) -> Any:
        import psycopg

        return psycopg.connect(self.dsn(database), **kw)

    def new_database(self, prefix: str = "gw") -> str:
        """A fresh, empty database for one gateway (or one group of them)."""
        self._seq += 1
        name = f"{prefix}_{self._seq}_{uuid.uuid4().hex[:8]}"
        with self.connect(autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name


class Row(tuple[Any, ...]):
    """A result row that answers to ``row[0]`` and ``row["name"]``, like ``sqlite3.Row``."""

    _names: tuple[str, ...] = ()

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self._names.index(key))
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._names)


def _row_factory(cursor: Any) -> Any:
    names = tuple(c.name for c in cursor.description or ())
    cls = type("Row", (Row,), {"_names": names})
    return lambda values: cls(values)


def pg_reader(cluster: Cluster, database: str) -> Any:
    """A psycopg connection whose rows and JSON read like the sqlite3 ones the tests expect:
    JSON columns come back as their text (tests ``json.loads`` them on either store)."""
    from psycopg.types.string import TextLoader

    conn = cluster.connect(database, autocommit=True, row_factory=_row_factory)
    conn.adapters.register_loader("json", TextLoader)
    conn.adapters.register_loader("jsonb", TextLoader)
    return conn


_session: Cluster | None = None


def session_cluster() -> Cluster:
    """The test session's one cluster, started on first use."""
    global _session
    if _session is None:
        _session = Cluster().start()
    return _session


def stop_session_cluster() -> None:
    global _session
    if _session is not None:
        _session.stop()
        _session = None
