"""PostgreSQL's part of ``gateway backup`` and ``gateway restore``: pg_dump in, pg_restore out.

The database is copied by ``pg_dump --format=custom`` run as a subprocess; its
output is streamed into the encrypted archive in pieces of ``PART`` bytes
(tar needs each member's size before its bytes), so a database of any size
passes through a few MiB of memory and never lies on disk unencrypted.

Snapshot: this module opens a REPEATABLE READ transaction, exports its snapshot
(``pg_export_snapshot()``) and runs ``pg_dump --snapshot`` on it, and reads the
blobs the rows name and the counts in that same transaction. So the named set is
exactly the dump's. Querying before the dump would miss blobs committed in
between (their rows in the dump, the check blind to them); querying after it
would miss blobs a retention purge let go in between (the dump names them, the
folder copy may not hold them, and the check would not notice): both unsafe in
the direction that matters, a restore with a row whose blob is not there.

Restore needs every instance stopped: it refuses while other sessions use the
database, and refuses a database that already holds tickets (as the SQLite
restore never overwrites a database file). ``--clean --if-exists`` makes it work
on a schema without data (``gateway db upgrade`` ran, a started gateway
migrated it); ``--single-transaction`` makes it all or nothing.

Connection settings come from ``database_url``: host, port, user and database go
to the tools as a libpq conninfo string, the password only in ``PGPASSWORD`` (a
command line is visible to every user of the machine in ``ps``).
"""

from __future__ import annotations

import glob
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sqlalchemy.engine import make_url

from gateway.ops.errors import NothingToRead, PgError, StoreUnavailable, TryAgain, WouldOverwrite
from store import numbering

__all__ = [
    "DUMP_MEMBER",
    "PART",
    "Libpq",
    "PgError",
    "Snapshot",
    "check_target",
    "counts",
    "dump_into",
    "exported_snapshot",
    "find_tool",
    "libpq",
    "pg_restore",
    "resync_numbers",
]

PART = 8 << 20  # bytes of pg_dump output per tar member, held in memory at once
SESSIONS_GRACE = 3.0  # seconds a restore waits for the sessions of a just-stopped daemon
DUMP_MEMBER = "database.pgdump"  # members database.pgdump/000000, /000001, ... in order
# database_url query keys that mean the same to libpq (asyncpg spells sslmode "ssl").
_QUERY_KEYS = {
    "ssl": "sslmode",
    "sslmode": "sslmode",
    "sslrootcert": "sslrootcert",
    "sslcert": "sslcert",
    "sslkey": "sslkey",
    "connect_timeout": "connect_timeout",
    "target_session_attrs": "target_session_attrs",
}
_SSL_WORDS = {"true": "require", "false": "disable"}


@dataclass(frozen=True, slots=True)
class Libpq:
    """How the client tools and our own connection reach the database."""

    conninfo: str  # host, port, user, dbname (never the password)
    password: str | None
    label: str  # for messages: host:port/dbname

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        return env


def libpq(database_url: str) -> Libpq:
    """The libpq spelling of a SQLAlchemy ``postgresql+<driver>://`` URL."""
    from psycopg.conninfo import make_conninfo

    url = make_url(database_url)
    params: dict[str, Any] = {}
    q = dict(url.query)
    host = url.host or _one(q.get("host"))
    port = url.port or _one(q.get("port"))
    for key, value in (("host", host), ("port", port), ("user", url.username)):
        if value:
            params[key] = str(value)
    params["dbname"] = url.database or url.username or "postgres"
    for key, value in q.items():
        name = _QUERY_KEYS.get(key)
        if name is not None:
            text = str(_one(value))
            params[name] = _SSL_WORDS.get(text.lower(), text) if key == "ssl" else text
    label = f"{host or 'localhost'}:{port or 5432}/{params['dbname']}"
    return Libpq(make_conninfo(**params), url.password, label)


def _one(value: Any) -> Any:
    """A query key given twice arrives as a tuple; libpq takes a comma list of hosts."""
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return value


def find_tool(name: str) -> str:
    """``name`` on PATH (Debian's wrapper picks the newest client), else the newest
    ``/usr/lib/postgresql/<v>/bin/<name>``; a pg_dump older than the server refuses."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: _version(Path(p).parent.parent.name),
    )
    if versions:
        return versions[-1]
    raise StoreUnavailable(
        f"{name} not found on PATH or in /usr/lib/postgresql/*/bin "
        "(Debian: apt-get install postgresql-client)",
    )


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split("."))
    except ValueError:
        return (0,)


@contextmanager
def _connect(lp: Libpq, **kw: Any) -> Iterator[Any]:
    import psycopg

    try:
        conn = psycopg.connect(
            lp.conninfo, password=lp.password, application_name="gateway backup", **kw
        )
    except psycopg.Error as exc:
        raise StoreUnavailable(
            f"cannot connect to PostgreSQL {lp.label}: {_first_line(exc)}"
        ) from None
    try:
        yield conn
    except psycopg.Error as exc:
        raise PgError(f"PostgreSQL {lp.label}: {_first_line(exc)}") from None
    finally:
        conn.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --- backup ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An exported snapshot, and what the rows it sees name."""

    id: str
    named: set[str]
    tickets: int
    messages: int
    server_version: str
    rows: int = 0  # blobs held as rows, inside the dump


def _blob_rows(cur: Any) -> int:
    """How many blobs the database holds itself (``[gateway] blobs = "database"``)."""
    cur.execute("SELECT to_regclass('blobs') IS NOT NULL")
    if not cur.fetchone()[0]:
        return 0
    cur.execute("SELECT count(*) FROM blobs")
    return int(cur.fetchone()[0])


def _named(cur: Any) -> set[str]:
    """The blobs rows name that are kept as files (raw bytes unless purged): as
    backup._named on SQLite. Blob rows travel inside the dump itself."""
    cur.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = 'messages' AND column_name = 'raw_purged_at'"
    )
    raw = "SELECT raw_sha256 FROM messages"
    if cur.fetchone() is not None:
        raw += " WHERE raw_purged_at IS NULL"
    named = f"SELECT sha256 FROM attachments UNION {raw}"
    cur.execute("SELECT to_regclass('blobs') IS NOT NULL")
    if cur.fetchone()[0]:
        named = f"({named}) EXCEPT SELECT sha256 FROM blobs"
    cur.execute(named)
    return {r[0] for r in cur.fetchall()}


def _counts(cur: Any) -> tuple[int, int]:
    cur.execute("SELECT (SELECT count(*) FROM tickets), (SELECT count(*) FROM messages)")
    tickets, messages = cur.fetchone()
    return int(tickets), int(messages)


@contextmanager
def exported_snapshot(lp: Libpq) -> Iterator[Snapshot]:
    """Hold a read-only REPEATABLE READ transaction open, its snapshot exported, while the
    caller runs pg_dump on it (``--snapshot`` needs the exporting transaction alive)."""
    import psycopg

    with _connect(lp) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_export_snapshot(), current_setting('server_version')")
            sid, version = cur.fetchone()
            if not _has_schema(cur):
                raise NothingToRead(f"{lp.label} holds no gateway schema: nothing to back up")
            named = _named(cur)
            tickets, messages = _counts(cur)
            yield Snapshot(str(sid), named, tickets, messages, str(version), _blob_rows(cur))
        conn.rollback()


def _has_schema(cur: Any) -> bool:
    cur.execute("SELECT to_regclass('tickets') IS NOT NULL AND to_regclass('messages') IS NOT NULL")
    return bool(cur.fetchone()[0])


def dump_into(
    tar: tarfile.TarFile, lp: Libpq, snapshot: str, stop: threading.Event | None = None
) -> int:
    """Stream ``pg_dump --format=custom`` of the snapshot into ``tar`` as members
    ``database.pgdump/NNNNNN`` of at most PART bytes; return the dump's size."""
    cmd = [
        find_tool("pg_dump"),
        "--format=custom",
        "--no-password",
        f"--snapshot={snapshot}",
        f"--dbname={lp.conninfo}",
    ]
    with tempfile.TemporaryFile() as err:  # stderr to a file: a full pipe never stalls it
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=lp.env())
        assert proc.stdout is not None
        total = n = 0
        try:
            while True:
                if stop is not None and stop.is_set():
                    raise TryAgain("the backup was cancelled (the daemon is stopping)")
                piece = proc.stdout.read(PART)
                if not piece:
                    break
                info = tarfile.TarInfo(f"{DUMP_MEMBER}/{n:06d}")
                info.size, info.mode = len(piece), 0o600
                tar.addfile(info, io.BytesIO(piece))
                total, n = total + len(piece), n + 1
            rc = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        if rc != 0 or total == 0:
            raise PgError(f"pg_dump failed (exit {rc}): {_tool_error(err)}")
    return total


def _tool_error(err: IO[bytes]) -> str:
    """The line a client tool's stderr means: its last ``error:`` line, else its last."""
    err.seek(0)
    lines = [ln.strip() for ln in err.read().decode(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln]
    return (errors or lines or ["no message"])[-1]


# --- restore ---------------------------------------------------------------------------------


def check_target(lp: Libpq) -> None:
    """Refuse while anyone else uses the database (a gateway instance still running) or
    when it already holds tickets: a restore never replaces data."""
    with _connect(lp, autocommit=True) as conn, conn.cursor() as cur:
        # A daemon stopped a moment ago: its server processes notice the closed sockets
        # within milliseconds, so wait a little before calling them someone else's.
        deadline = time.monotonic() + SESSIONS_GRACE
        while True:
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            )
            (others,) = cur.fetchone()
            if not others or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        if others:
            raise TryAgain(
                f"{others} other session(s) use database {lp.label}: stop every gateway "
                "instance (and other clients) before a restore",
            )
        if _has_schema(cur):
            cur.execute("SELECT EXISTS (SELECT 1 FROM tickets) OR EXISTS (SELECT 1 FROM messages)")
            if cur.fetchone()[0]:
                raise WouldOverwrite(
                    f"database {lp.label} already holds tickets: restore never replaces "
                    "data; restore into an empty database (createdb) or drop this one first",
                )


def pg_restore(lp: Libpq, dump: Path) -> None:
    """All or nothing into the configured database; owners and grants are the old
    server's roles, so the restoring user owns everything (re-grant extra roles)."""
    cmd = [
        find_tool("pg_restore"),
        "--clean",
        "--if-exists",
        "--no-owner",
        "--no-privileges",
        "--single-transaction",
        "--exit-on-error",
        "--no-password",
        f"--dbname={lp.conninfo}",
        str(dump),
    ]
    with tempfile.TemporaryFile() as err:
        rc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=err, env=lp.env()).returncode
        if rc != 0:
            raise PgError(
                f"pg_restore failed (exit {rc}), nothing was restored: {_tool_error(err)}",
            )


def resync_numbers(lp: Libpq) -> None:
    """Let every tenant's ticket-number sequence continue after its highest restored
    number (store/numbering.py says when it would not already)."""
    with _connect(lp, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(numbering.RESYNC)


def counts(lp: Libpq) -> tuple[int, int, set[str]]:
    """Tickets, messages and the blobs the restored rows name."""
    with _connect(lp, autocommit=True) as conn, conn.cursor() as cur:
        tickets, messages = _counts(cur)
        return tickets, messages, _named(cur)
