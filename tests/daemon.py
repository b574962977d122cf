"""A real gateway daemon in a subprocess, for tests that speak real SMTP to it.

The daemon is started exactly as an admin would (``python -m gateway run``),
on 127.0.0.1 port 0; the port is read from its "smtp.listening" log line. It
is stopped by pid. Assertions read the store through ``Daemon.query``: the
stdlib sqlite3 module, or psycopg when ``GATEWAY_TEST_DB=postgresql`` puts
this gateway's store in its own database of the session's private cluster
(tests/pg_harness.py). Rows answer to an index and to a column name alike, and
JSON columns come back as text on both, so one test reads either store.
"""

from __future__ import annotations

import json
import os
import re
import signal
import smtplib
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.pg_harness import pg_reader, session_cluster, use_postgresql

ROOT = Path(__file__).resolve().parent.parent
QUEUED = re.compile(r"(?:250 )?2\.0\.0 OK queued as ([0-9a-f]{16})\s*")


def worker_pids(pid: int, module: str) -> list[int]:
    """The children of ``pid`` running ``python -m module``: a daemon's parse workers
    (gateway.intake.parse_worker) apart from its send worker (gateway.sending.worker)."""
    found = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:  # reaped, even between the open and the read (ESRCH)
            continue
        if module.encode() in argv:
            found.append(int(child))
    return found


def queued_as(reply: str) -> str:
    """The opaque id of a 250 to DATA; fails the test for any other answer."""
    found = QUEUED.fullmatch(reply)
    assert found, f"not a 250 OK queued as <id>: {reply!r}"
    return found.group(1)


def refs_queued_as(query: Callable[..., list[Any]], reply: str) -> list[str]:
    """Refs of the tickets holding the mail ``reply`` named, read with ``query`` (SQL
    with ``?`` placeholders), one per tenant it went to."""
    rows = query(
        "SELECT DISTINCT t.ref, t.tenant FROM messages m JOIN tickets t ON t.id = m.ticket_id "
        "WHERE m.queued_as = ? ORDER BY t.tenant",
        queued_as(reply),
    )
    return [r[0] for r in rows]


CONFIG = """
[gateway]
hostname = "gw.test"
data_dir = "var"
database_url = "{database_url}"
log_format = "json"
{gateway_extra}

[smtp]
listen = "127.0.0.1:0"
max_message_size = {max_size}
pipeline_timeout = {timeout}
{lmtp_table}
[http]
listen = "127.0.0.1:0"
{http_extra}

[scanner]
address = "{scanner}"
deadline = {scan_deadline}
probe_interval = 1

[limits]
max_header_bytes = 262144

[[tenants]]
slug = "acme"
name = "Acme Support"
addresses = ["support@acme.test", "billing@acme.test"]
tag_prefix = "ACME"
{acme_settings}

[[tenants.agents]]
address = "alice@acme.test"
name = "Alice Agent"
{acme_extra}

[[tenants]]
slug = "globex"
name = "Globex Helpdesk"
addresses = ["help@globex.test"]
tag_prefix = "GLOBEX"
{extra}
"""


class Daemon:
    def __init__(
        self,
        home: Path,
        *,
        env: dict[str, str] | None = None,
        max_size: int = 10 * 1024 * 1024,
        timeout: float = 60,
        extra: str = "",
        scanner: str = "127.0.0.1:9",
        scan_deadline: float = 30,
        acme_extra: str = "",
        acme_settings: str = "",
        http_extra: str = "",
        gateway_extra: str = "",
        database_url: str | None = None,
        blobs: str | None = None,
        lmtp: str = "",
    ) -> None:
        """``scanner`` is a clamd address (the clamd fixtures' ``.address``); the default
        points where nothing answers, so mail with attachments is deferred.
        ``acme_settings``: keys of acme's own ``[[tenants]]`` table (``acme_extra`` comes
        after its first agent, for the agent's keys and acme's sub-tables). ``blobs`` is
        ``[gateway] blobs`` ("files" or "database"); $GATEWAY_TEST_BLOBS sets the default,
        to try a test against the other store (tests that reach into the blob folder
        or kill at ``after_blob_fsync`` are about the files). ``lmtp``: ``[lmtp] listen``
        (``127.0.0.1:0`` or a socket path); the bound port is ``lmtp_port``."""
        self.home = home
        self.blobs = blobs or os.environ.get("GATEWAY_TEST_BLOBS", "")
        if self.blobs:
            gateway_extra = f'blobs = "{self.blobs}"\n{gateway_extra}'
        else:
            self.blobs = "database"  # the default of [gateway] blobs
        if os.environ.get("GATEWAY_TEST_LOOP") and "loop" not in gateway_extra:
            # [gateway] loop for every daemon of a run (bench/ab.py measures each loop)
            gateway_extra = f'loop = "{os.environ["GATEWAY_TEST_LOOP"]}"\n{gateway_extra}'
        if os.environ.get("GATEWAY_TEST_PARSE_WORKERS") and "parse_workers" not in gateway_extra:
            # [gateway] parse_workers for every daemon of a run (bench/ab.py --inproc)
            workers = int(os.environ["GATEWAY_TEST_PARSE_WORKERS"])
            gateway_extra = f"parse_workers = {workers}\n{gateway_extra}"
        if "dns_resolver" not in gateway_extra:
            # The tests' mail comes from made-up domains: no sender checks against the
            # system's DNS (tests/test_sender_auth.py runs its own server).
            gateway_extra = f'dns_resolver = "none"\n{gateway_extra}'

        home.mkdir(parents=True, exist_ok=True)
        self.config = home / "gateway.toml"
        self.pg_database: str | None = None
        if database_url is not None:  # several instances on one database, or a restart on it
            if database_url.startswith("postgresql"):
                self.pg_database = database_url.rsplit("/", 1)[-1]
        elif not use_postgresql():
            database_url = "sqlite+aiosqlite:///var/gateway.db"
        else:
            cluster = session_cluster()
            self.pg_database = cluster.new_database()
            database_url = cluster.url(self.pg_database)
        self.database_url = database_url
        self.config.write_text(
            CONFIG.format(
                max_size=max_size,
                timeout=timeout,
                extra=extra,
                scanner=scanner,
                scan_deadline=scan_deadline,
                acme_extra=acme_extra,
                acme_settings=acme_settings,
                http_extra=http_extra,
                database_url=database_url,
                gateway_extra=gateway_extra,
                lmtp_table=f'\n[lmtp]\nlisten = "{lmtp}"\n' if lmtp else "",
            ),
            encoding="utf-8",
        )
        self.env = {k: v for k, v in os.environ.items() if k != "GATEWAY_TEST_CRASH_AT"}
        self.env.update(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.http_port = 0
        self.lmtp = lmtp
        self.lmtp_port = 0
        self.log_path = home / "daemon.log"

    # lifetime ---------------------------------------------------------------
    def start(self, env: dict[str, str] | None = None, timeout: float = 30) -> Daemon:
        run_env = {**self.env, **(env or {})}
        self.port = self.http_port = self.lmtp_port = 0
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(self.config)],
            cwd=self.home,
            env=run_env,
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log_path.read_bytes()[offset:].splitlines():
                if b'"http.listening"' in line:
                    self.http_port = json.loads(line)["port"]
                if b'"smtp.listening"' in line:
                    self.port = json.loads(line)["port"]
                if b'"lmtp.listening"' in line:
                    self.lmtp_port = json.loads(line).get("port", 0) or -1
            if self.port and self.http_port and (self.lmtp_port or not self.lmtp):
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}: {self.log_text()}")
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"daemon did not start: {self.log_text()}")

    def stop(self, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]

    # talking to it ------------------------------------------------------------
    def smtp(self) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.port, local_hostname="client.test", timeout=60)

    def send(
        self, data: bytes, to: list[str] | str = "support@acme.test", sender: str = "c@x.test"
    ) -> tuple[int, str]:
        """One SMTP transaction; the reply to DATA as (code, text)."""
        rcpts = [to] if isinstance(to, str) else to
        with self.smtp() as s:
            s.ehlo()
            code, msg = s.mail(sender)
            assert code == 250, (code, msg)
            for r in rcpts:
                code, msg = s.rcpt(r)
                if code != 250:
                    return code, msg.decode()
            code, msg = s.data(data)
            return code, msg.decode()

    def refs(self, reply: str) -> list[str]:
        """The tickets holding the mail a 250 named (``OK queued as <id>``), by store:
        the reply itself never names a ticket (issue 16)."""
        return refs_queued_as(self.query, reply)

    def ref(self, reply: str) -> str:
        """The one ticket the mail a 250 named went to."""
        (ref,) = self.refs(reply)
        return ref

    def kept(self, reply: str) -> int:
        """How many messages were stored for the mail a 250 named: 0 for a duplicate
        (or a rule's drop), whose answer reads like any other (issue 16)."""
        return int(self.query("SELECT count(*) FROM messages WHERE queued_as = ?",
                              queued_as(reply))[0][0])  # fmt: skip

    def people(self, ref: str) -> list[str]:
        """The participants of ticket ``ref``, by address."""
        rows = self.query(
            "SELECT p.address FROM participants p JOIN tickets t ON t.id = p.ticket_id "
            "WHERE t.ref = ? ORDER BY p.address",
            ref,
        )
        return [r[0] for r in rows]

    def cli(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "gateway", *args, "--config", str(self.config)],
            cwd=self.home,
            env=self.env,
            input=stdin,
            capture_output=True,
            timeout=120,
        )

    def dump(self) -> list[dict[str, Any]]:
        out = self.cli("tickets", "dump")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def db(self) -> Any:
        """A connection to this gateway's store (sqlite3, or psycopg on PostgreSQL)."""
        if self.pg_database is not None:
            return pg_reader(session_cluster(), self.pg_database)
        path = self.home / self.database_url.split("///", 1)[1]  # an absolute one wins
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        conn.row_factory = sqlite3.Row
        return conn

    def blob(self, sha256: str) -> bytes | None:
        """A stored blob's bytes, from whichever blob store this gateway uses."""
        if self.blobs == "database":
            rows = self.query("SELECT data FROM blobs WHERE sha256 = ?", sha256)
            return bytes(rows[0][0]) if rows else None
        path = self.home / "var" / "blobs" / sha256[:2] / sha256
        return path.read_bytes() if path.is_file() else None

    def blob_names(self) -> set[str]:
        """Every stored blob's hash (and any file under the blob folder, finished or not)."""
        if self.blobs == "database":
            return {r[0] for r in self.query("SELECT sha256 FROM blobs")}
        root = self.home / "var" / "blobs"
        return {p.name for p in root.rglob("*") if p.is_file()}

    def count_reaching(self, sql: str, n: int, *params: Any, within: float = 15) -> int:
        """``SELECT count(*) ...``'s value once it reaches ``n`` (or ``within`` seconds
        pass): for rows written a moment after the answer, such as the audit rows of
        page views (gateway/web/view_log.py). The caller asserts on the value."""
        deadline = time.monotonic() + within
        while True:
            count = int(self.query(sql, *params)[0][0])
            if count >= n or time.monotonic() > deadline:
                return count
            time.sleep(0.05)

    def query(self, sql: str, *params: Any) -> list[Any]:
        """Rows of ``sql`` (``?`` placeholders) from whichever store this gateway uses."""
        if self.pg_database is not None:
            with self.db() as conn:
                return conn.execute(sql.replace("%", "%%").replace("?", "%s"), params).fetchall()
        with self.db() as conn:
            return conn.execute(sql, params).fetchall()
