"""Backups on PostgreSQL (issue 11): ``gateway backup`` of a running daemon streams
``pg_dump`` of one exported snapshot into the encrypted archive with the blobs and
secrets; ``gateway restore`` brings it back into a fresh database with the same
tickets, messages, attachments and blob bytes; a tampered archive, a database in use
or holding tickets, and an archive of the other engine are refused in one line; the
daily job makes the archive once for several instances.

Everything is real: the session's PostgreSQL cluster (tests/pg_harness.py), the
gateway processes, clamd, and Debian's pg_dump/pg_restore.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from gateway.cli.errors import describe
from gateway.ops.backup import BackupError, make_backup
from gateway.ops.backup_key import parse_backup_key
from gateway.ops.backup_pg import libpq
from gateway.ops.backup_stream import archive_meta, plaintext
from routing.config import load_config
from tests.clamd_harness import Clamd
from tests.daemon import Daemon
from tests.mail import make_mail
from tests.pg_harness import session_cluster
from tests.test_backup import _blob_hashes, _key

ATTACHMENTS_SQL = (
    "SELECT tenant, filename, content_type, size, sha256, position FROM attachments "
    "ORDER BY tenant, sha256, filename"
)


def _wait(pred: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.3)
    return None


def _members(path: Path, key: str) -> tuple[dict[str, object], list[str], bytes]:
    """The archive's facts, the member names and the dump's first bytes, read with the key."""
    k = parse_backup_key(key, "test")
    head = archive_meta(path, k)
    names: list[str] = []
    first = b""
    with plaintext(path, k) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        for m in tar:
            names.append(m.name)
            if m.name == "database.pgdump/000000":
                piece = tar.extractfile(m)
                assert piece is not None
                first = piece.read(5)
    return head, names, first


def _fresh(home: Path, key: str, prefix: str = "restored") -> Daemon:
    """A second install: the same config (blob files, as the archive's source), an empty
    data directory and an empty database of its own, never started."""
    cluster = session_cluster()
    url = cluster.url(cluster.new_database(prefix))
    return Daemon(home, env={"GATEWAY_BACKUP_KEY": key}, database_url=url, blobs="files")


def _one_line(out: subprocess.CompletedProcess[bytes]) -> str:
    err = out.stderr.decode()
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


@pytest.fixture(scope="module")
def pg_archive(tmp_path_factory: pytest.TempPathFactory, clamd: Clamd) -> dict[str, Any]:
    """A daemon on PostgreSQL with mail and attachments, backed up while it runs."""
    home = tmp_path_factory.mktemp("pgbackup-src")
    key = _key()
    cluster = session_cluster()
    url = cluster.url(cluster.new_database("src"))
    d = Daemon(  # blob files: the archive carries a data/blobs folder to check
        home / "gw",
        scanner=clamd.address,
        env={"GATEWAY_BACKUP_KEY": key},
        database_url=url,
        blobs="files",
    ).start()
    try:
        big = make_mail(
            subject="Scan of the contract",
            sender="big@client.test",
            attachments=[("scan.pdf", "application/pdf", b"%PDF-1.4 " + bytes(range(256)) * 6000)],
        )
        assert d.send(big, sender="big@client.test")[0] == 250
        for i in range(3):
            mail = make_mail(
                subject=f"Invoice {i}",
                sender=f"client{i}@client.test",
                attachments=[
                    ("invoice.pdf", "application/pdf", f"%PDF-1.4 invoice {i}".encode() * 40),
                    ("notes.txt", "text/plain", f"line {i}\n".encode() * 50),
                ],
            )
            assert d.send(mail, sender=f"client{i}@client.test")[0] == 250
        out = d.cli("backup", "--out", str(home / "backups"), "--json")
        assert out.returncode == 0, out.stderr
        made = json.loads(out.stdout)
        dump = d.dump()
        attachments = [tuple(r) for r in d.query(ATTACHMENTS_SQL)]
        named = {r[0] for r in d.query("SELECT sha256 FROM attachments")} | {
            r[0] for r in d.query("SELECT raw_sha256 FROM messages")
        }
    finally:
        d.stop()
    return {
        "key": key,
        "made": made,
        "dump": dump,
        "attachments": attachments,
        "named": named,
        "blobs": _blob_hashes(d),
        "source": d,
    }


def test_archive_holds_the_dump_the_blobs_and_the_secrets(pg_archive: dict[str, Any]) -> None:
    made = pg_archive["made"]
    assert made["engine"] == "postgresql"
    assert (made["tickets"], made["messages"], made["blobs"]) == (4, 4, 11)  # 4 raw, 7 attached
    path = Path(made["path"])
    raw = path.read_bytes()
    # Encrypted: no dump header, no mail text, no blob bytes in the clear.
    assert b"PGDMP" not in raw and b"Invoice" not in raw and b"line 1" not in raw
    head, names, first = _members(path, pg_archive["key"])
    assert head["engine"] == "postgresql"
    assert names[:3] == ["archive.json", "manifest.json", "database.pgdump/000000"]
    assert first == b"PGDMP"  # pg_dump's custom format
    blobs = {n.rsplit("/", 1)[1] for n in names if n.startswith("data/blobs/")}
    assert blobs == set(pg_archive["blobs"]) and pg_archive["named"] <= blobs
    assert "data/secret.key" in names and "data/status.json" not in names


def test_restore_into_a_fresh_database(pg_archive: dict[str, Any], tmp_path: Path) -> None:
    path = str(pg_archive["made"]["path"])
    target = _fresh(tmp_path / "restored", pg_archive["key"])
    out = target.cli("restore", path, "--json")
    assert out.returncode == 0, out.stderr
    restored = json.loads(out.stdout)
    assert restored["engine"] == "postgresql" and restored["database"].endswith(
        f"/{target.pg_database}"
    )
    assert (restored["tickets"], restored["messages"], restored["blobs"]) == (4, 4, 11)
    assert target.dump() == pg_archive["dump"]
    assert [tuple(r) for r in target.query(ATTACHMENTS_SQL)] == pg_archive["attachments"]
    assert _blob_hashes(target) == pg_archive["blobs"]
    source: Daemon = pg_archive["source"]
    assert (target.home / "var" / "secret.key").read_bytes() == (
        source.home / "var" / "secret.key"
    ).read_bytes()
    # It runs: the restored daemon migrates (nothing to do) and takes new mail.
    target.start()
    try:
        assert target.send(make_mail(subject="after restore"))[0] == 250
        after = target.dump()
        assert len(after) == 5
        # Numbered after the restored tickets (by the sequence the dump carried).
        numbers = sorted(int(t["ref"].rsplit("-", 1)[1]) for t in after)
        assert numbers == [1, 2, 3, 4, 5]
    finally:
        target.stop()
    # Never over data: the same database from another (empty) data directory is refused.
    again = Daemon(
        tmp_path / "again", env=target.env, database_url=target.database_url
    ).cli("restore", path)
    assert again.returncode == 73, again.stderr
    assert "already holds tickets" in _one_line(again)


def test_tampered_archive_and_a_database_in_use_are_refused(
    pg_archive: dict[str, Any], tmp_path: Path
) -> None:
    key = pg_archive["key"]
    path = Path(pg_archive["made"]["path"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    damaged = tmp_path / "damaged.tar.age"
    damaged.write_bytes(bytes(data))
    target = _fresh(tmp_path / "d", key)
    out = target.cli("restore", str(damaged))
    assert out.returncode == 65 and "damaged or altered" in _one_line(out)
    # Every chunk is checked before pg_restore runs: the database was never touched.
    assert target.query("SELECT to_regclass('tickets') IS NULL")[0][0] is True
    assert not (target.home / "var" / "blobs").exists()

    # A gateway running on the database: refused; once it stops, the restore goes over
    # the schema it migrated (no tickets in it), --clean dropping its empty tables.
    running = Daemon(tmp_path / "running", env=target.env, database_url=target.database_url)
    running.start()
    try:
        out = target.cli("restore", str(path))
        assert out.returncode == 75 and "stop every gateway instance" in _one_line(out)
    finally:
        running.stop()
    out = target.cli("restore", str(path), "--json")
    assert out.returncode == 0, out.stderr
    assert target.dump() == pg_archive["dump"]


def test_an_archive_of_the_other_engine_is_refused(
    pg_archive: dict[str, Any], tmp_path: Path
) -> None:
    key = pg_archive["key"]
    sqlite = Daemon(
        tmp_path / "sqlite",
        env={"GATEWAY_BACKUP_KEY": key},
        database_url="sqlite+aiosqlite:///var/gateway.db",
    )
    out = sqlite.cli("restore", str(pg_archive["made"]["path"]))
    assert out.returncode == 78, out.stderr
    assert "holds a PostgreSQL database but database_url names SQLite" in _one_line(out)
    assert not (sqlite.home / "var" / "gateway.db").exists()

    # And the other way: a SQLite archive into a PostgreSQL config.
    assert sqlite.cli("db", "upgrade").returncode == 0
    made = sqlite.cli("backup", "--out", str(tmp_path / "b"), "--json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["engine"] == "sqlite"
    target = _fresh(tmp_path / "pg", key)
    out = target.cli("restore", json.loads(made.stdout)["path"])
    assert out.returncode == 78, out.stderr
    assert "holds a SQLite database but database_url names PostgreSQL" in _one_line(out)


def test_the_password_reaches_pg_dump_in_the_environment_only(
    pg_archive: dict[str, Any], tmp_path: Path
) -> None:
    """A role that must give its password (scram; the rest of the cluster trusts): the
    backup works through PGPASSWORD, and a wrong password is one line."""
    cluster = session_cluster()
    password = "p@ss word:/x'1"
    with cluster.connect(autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'gw_reader'").fetchone():
            conn.execute(f"CREATE ROLE gw_reader LOGIN PASSWORD {_literal(password)}")
            conn.execute("GRANT pg_read_all_data TO gw_reader")
            hba = cluster.data / "pg_hba.conf"
            hba.write_text("host all gw_reader 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
            conn.execute("SELECT pg_reload_conf()")
    source: Daemon = pg_archive["source"]
    db = source.pg_database
    url = f"postgresql+asyncpg://gw_reader:{quote(password, safe='')}@127.0.0.1:{cluster.port}/{db}"
    lp = libpq(url)
    assert password not in lp.conninfo and lp.env()["PGPASSWORD"] == password

    def backup(database_url: str) -> subprocess.CompletedProcess[bytes]:
        cfg = source.home / "reader.toml"  # the source's config, data directory and all
        cfg.write_text(source.config.read_text().replace(source.database_url, database_url))
        return subprocess.run(
            [sys.executable, "-m", "gateway", "backup", "--out", str(tmp_path), "--json",
             "--config", str(cfg)],
            cwd=source.home,
            env=source.env,
            capture_output=True,
            timeout=120,
        )

    out = backup(url)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["tickets"] == 4
    wrong = backup(url.replace(quote(password, safe=""), "wrong"))
    assert wrong.returncode == 69
    assert "password authentication failed" in _one_line(wrong)


def test_a_backup_taken_under_load_restores_exactly_its_snapshot(tmp_path: Path) -> None:
    """Mail keeps arriving while pg_dump runs. The manifest's counts and named blobs come
    from the dump's own snapshot, and the restore checks the restored rows against them:
    with a query of its own before or after the dump this would fail under load."""
    key = _key()
    cluster = session_cluster()
    d = Daemon(
        tmp_path / "src",
        env={"GATEWAY_BACKUP_KEY": key},
        database_url=cluster.url(cluster.new_database("load")),
    ).start()
    sent: list[int] = []
    done = threading.Event()

    def flow() -> None:
        i = 0
        while not done.is_set():
            code, _ = d.send(make_mail(subject=f"During the backup {i}", sender=f"l{i}@x.test"))
            sent.append(code)
            i += 1

    worker = threading.Thread(target=flow)
    worker.start()
    try:
        assert _wait(lambda: len(sent) >= 5, 30)
        made = [d.cli("backup", "--out", str(tmp_path / "b"), "--json") for _ in range(3)]
    finally:
        done.set()
        worker.join(60)
        d.stop()
    assert all(c == 250 for c in sent) and len(sent) > 5
    for out in made:
        assert out.returncode == 0, out.stderr
    last = json.loads(made[-1].stdout)
    assert 5 <= last["tickets"] <= len(sent)
    target = _fresh(tmp_path / "restored", key)
    out = target.cli("restore", last["path"], "--json")
    assert out.returncode == 0, out.stderr
    restored = json.loads(out.stdout)
    assert (restored["tickets"], restored["messages"]) == (last["tickets"], last["messages"])


def test_a_stopping_daemon_ends_the_dump_and_keeps_no_part(
    pg_archive: dict[str, Any], tmp_path: Path
) -> None:
    """The daily job runs make_backup in a thread; when its task is cancelled (the lease
    moved, SIGTERM) it sets ``stop``: pg_dump is killed and the unfinished file goes."""
    source: Daemon = pg_archive["source"]
    stop = threading.Event()
    stop.set()
    with pytest.raises(BackupError) as err:
        make_backup(
            load_config(source.config),
            tmp_path / "out",
            parse_backup_key(pg_archive["key"], "test"),
            datetime.now(UTC),
            stop,
        )
    assert describe(err.value) == (75, str(err.value)) and "cancelled" in str(err.value)
    assert list((tmp_path / "out").iterdir()) == []


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def test_the_daily_backup_is_taken_once_for_several_instances(tmp_path: Path) -> None:
    """Two instances on one database and one backup folder: the holder of jobs:ops makes
    the day's archive (a pg_dump one), the other none; the oldest are pruned."""
    folder = tmp_path / "backups"
    folder.mkdir()
    for day in range(1, 6):
        (folder / f"gateway-backup-202601{day:02d}T030000Z.hgbk").write_bytes(b"old")
    key = _key()
    keyfile = tmp_path / "backup.key"
    keyfile.write_text(key + "\n")
    cluster = session_cluster()
    url = cluster.url(cluster.new_database("daily"))
    shared = tmp_path / "shared"
    shared.mkdir()
    daemons = [
        Daemon(
            tmp_path / f"gw{i}",
            database_url=url,
            gateway_extra=(
                f'instance = "gw{i}"\nlease_seconds = 3\n'
                f'secret_file = "{shared / "secret.key"}"\nkey_file = "{shared / "keys.toml"}"'
            ),
            extra=f'[backup]\nenabled = true\ndir = "{folder}"\nkey_file = "{keyfile}"\nkeep = 3\n',
        )
        for i in range(2)
    ]
    for d in daemons:
        d.start()

    def last_backups() -> list[dict[str, Any] | None]:
        out = []
        for d in daemons:
            status = json.loads(d.cli("status", "--json").stdout)
            out.append(((status.get("daemon") or {}).get("ops") or {}).get("last_backup"))
        return out

    try:
        assert _wait(lambda: any(last_backups()), 60), [d.log_text() for d in daemons]
        time.sleep(4)  # longer than a lease: the other instance had every chance to run it
        lasts = last_backups()
        assert sum(1 for b in lasts if b) == 1, lasts
        names = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        assert names[:2] == [
            "gateway-backup-20260104T030000Z.hgbk",
            "gateway-backup-20260105T030000Z.hgbk",
        ]
        assert len(names) == 3
        last = next(b for b in lasts if b)
        assert last["path"] == str(folder / names[-1]) and last["engine"] == "postgresql"
        head, members, first = _members(folder / names[-1], key)
        assert head["engine"] == "postgresql" and first == b"PGDMP"
        assert members[:3] == ["archive.json", "manifest.json", "database.pgdump/000000"]
    finally:
        for d in daemons:
            d.stop()


def test_with_the_database_blob_store_the_dump_carries_the_blobs(
    tmp_path: Path, clamd: Clamd
) -> None:
    """``blobs = "database"`` (the store docs/scaling.md recommends for several
    instances): the blobs are rows inside the dump, the archive holds no blob files,
    and the restore brings every row back, counted as blobs both ways."""
    key = _key()
    cluster = session_cluster()
    src = Daemon(
        tmp_path / "src",
        scanner=clamd.address,
        env={"GATEWAY_BACKUP_KEY": key},
        database_url=cluster.url(cluster.new_database("dbblobs")),
        blobs="database",
    ).start()
    try:
        mail = make_mail(
            subject="Logs attached",
            attachments=[("app.log", "text/plain", b"line\n" * 300)],
        )
        assert src.send(mail)[0] == 250
        out = src.cli("backup", "--out", str(tmp_path / "backups"), "--json")
        assert out.returncode == 0, out.stderr
        made = json.loads(out.stdout)
        hashes = _blob_hashes(src)
    finally:
        src.stop()
    assert (made["tickets"], made["messages"], made["blobs"]) == (1, 1, 2)  # raw + log
    _, names, _ = _members(Path(made["path"]), key)
    assert not [n for n in names if n.startswith("data/blobs/")]
    target = Daemon(
        tmp_path / "dst",
        env={"GATEWAY_BACKUP_KEY": key},
        database_url=cluster.url(cluster.new_database("dbblobs-restored")),
        blobs="database",
    )
    out = target.cli("restore", str(made["path"]), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["blobs"] == 2
    assert _blob_hashes(target) == hashes and len(hashes) == 2
