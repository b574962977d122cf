"""``[gateway] blobs = "database"`` end to end: a real daemon, real SMTP and clamd, the
client's download over real HTTP, an erasure and a purge through the real commands,
and real SIGKILLs at the commit. Runs on SQLite and on PostgreSQL (the second pass).

The blobs are written in the same transaction as the rows naming them
(store/blobs_db.py), so the proofs here are: no file is ever made, a blob row
exists exactly when a row names it, and a crash before the commit leaves
neither the message nor its blobs.
"""

from __future__ import annotations

import hashlib
import smtplib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

from routing.config import load_config
from store import deferred
from store.blobs import Staged
from store.blobs_db import DatabaseBlobStore
from store.db import create_writer_engine
from store.models import blobs
from tests.clamd_harness import Clamd
from tests.daemon import Daemon
from tests.mail import make_mail
from tests.pg_harness import use_postgresql
from tests.test_web_client import Browser, _link, _request_link, _sign_in

CLIENT = "nora@client.test"
MANUAL = b"%PDF-1.4 the service manual\n" * 400


@pytest.fixture
def gw(tmp_path: Path, clamd: Clamd) -> Iterator[Daemon]:
    d = Daemon(
        tmp_path / "gw",
        blobs="database",
        scanner=clamd.address,
        http_extra="insecure_cookies = true",
    ).start()
    yield d
    d.kill()


def _no_files(d: Daemon) -> bool:
    return not [p for p in (d.home / "var" / "blobs").rglob("*")]


def _named(d: Daemon) -> set[str]:
    rows = d.query(
        "SELECT raw_sha256 FROM messages WHERE raw_purged_at IS NULL "
        "UNION SELECT sha256 FROM attachments"
    )
    return {r[0] for r in rows}


def _put_row(d: Daemon, data: bytes, age: timedelta) -> str:
    """A blob row no row names, as a crash between a purge and its collection leaves one."""
    sha = hashlib.sha256(data).hexdigest()
    engine = create_writer_engine(load_config(d.config).database_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(blobs).values(
                    sha256=sha, size=len(data), data=data, created_at=datetime.now(UTC) - age
                )
            )
    finally:
        engine.dispose()
    return sha


def test_mail_download_erase_and_purge_with_blobs_in_the_database(gw: Daemon) -> None:
    data = make_mail(
        sender=f"Nora Client <{CLIENT}>",
        subject="Manual missing a page",
        attachments=[("manual.pdf", "application/pdf", MANUAL)],
    )
    code, text = gw.send(data, sender=CLIENT)
    assert code == 250, text
    ref = gw.ref(text)
    raw_sha, file_sha = hashlib.sha256(data).hexdigest(), hashlib.sha256(MANUAL).hexdigest()
    # Stored as rows, byte for byte; not one file under the data directory's blobs.
    assert gw.blob(raw_sha) == data and gw.blob(file_sha) == MANUAL
    assert gw.blob_names() == _named(gw) == {raw_sha, file_sha}
    assert _no_files(gw)
    # The same attachment again, from another client: one row serves both.
    other = make_mail(sender="olga@client.test", attachments=[("m.pdf", "application/pdf", MANUAL)])
    assert gw.send(other, sender="olga@client.test")[0] == 250
    assert gw.query("SELECT count(*) FROM blobs WHERE sha256 = ?", file_sha)[0][0] == 1

    # The client downloads it over the web side, with the headers the files get.
    browser = Browser(gw)
    assert _request_link(browser, CLIENT)[0] == 200
    assert _sign_in(browser, _link(gw, CLIENT))[0] == 303
    status, body, headers = browser.get(f"/t/acme/tickets/{ref}/files/{file_sha}")
    assert status == 200 and body.encode() == MANUAL
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Content-Disposition"].startswith('attachment; filename="manual.pdf"')
    # Not through a ticket of hers, not with a hash no row of hers names.
    olga_raw = hashlib.sha256(other).hexdigest()
    assert browser.get(f"/t/acme/tickets/{ref}/files/{olga_raw}")[0] == 404

    # Erased: her raw mail goes, the manual stays (Olga's message names it).
    res = gw.cli("gdpr", "erase", CLIENT, "--tenant", "acme")
    assert res.returncode == 0, res.stderr
    assert "nor any blob row contains the address" in res.stdout.decode()
    assert gw.blob(raw_sha) is None and gw.blob(file_sha) == MANUAL
    assert gw.blob_names() == _named(gw)
    assert not gw.query("SELECT 1 FROM blobs WHERE sha256 = ?", raw_sha)

    # A purge collects rows no row names once they are a day old, and only those.
    stale = _put_row(gw, b"left by a crash between a purge and its collection", timedelta(days=2))
    fresh = _put_row(gw, b"written a moment ago", timedelta(minutes=1))
    res = gw.cli("purge")
    assert res.returncode == 0, res.stderr
    left = gw.blob_names()
    assert stale not in left and fresh in left and file_sha in left
    assert _no_files(gw)


@pytest.mark.parametrize("point", ["before_commit", "after_commit_before_reply"])
def test_a_kill_at_the_commit_leaves_all_or_nothing(tmp_path: Path, point: str) -> None:
    """Killed inside the transaction: neither the message nor its blob; killed after the
    commit: both, and the sender's retry is a duplicate. Never one without the other."""
    d = Daemon(tmp_path / "gw", blobs="database").start(env={"GATEWAY_TEST_CRASH_AT": point})
    try:
        data = make_mail(sender="pia@client.test", body="The lift is stuck. " * 200)
        with pytest.raises((smtplib.SMTPServerDisconnected, ConnectionError)):
            d.send(data, sender="pia@client.test")
        assert d.proc is not None
        d.proc.wait(10)
        stored = d.query("SELECT count(*) FROM messages")[0][0]
        assert stored == (1 if point == "after_commit_before_reply" else 0)
        assert d.blob_names() == _named(d)  # no orphan, no row without its blob
        d.start(env={"GATEWAY_TEST_CRASH_AT": ""})
        code, text = d.send(data, sender="pia@client.test")
        assert code == 250 and (d.kept(text) == 0) == bool(stored)  # a duplicate
        assert d.blob(hashlib.sha256(data).hexdigest()) == data
        assert d.blob_names() == _named(d) and _no_files(d)
    finally:
        d.kill()


def _switch(d: Daemon, to: str) -> None:
    text = d.config.read_text().replace(f'blobs = "{d.blobs}"\n', "")
    d.config.write_text(text.replace("[gateway]\n", f'[gateway]\nblobs = "{to}"\n', 1))
    d.blobs = to


def test_switching_the_store_moves_every_blob_over_at_start(tmp_path: Path) -> None:
    """files -> database -> files: each start brings what the other store holds, byte
    for byte, and the retried mail is still a duplicate of the stored one."""
    d = Daemon(tmp_path / "gw", blobs="files").start()
    try:
        mails = [make_mail(sender=f"q{i}@client.test", body=f"mail {i} " * 300) for i in range(3)]
        for i, data in enumerate(mails):
            assert d.send(data, sender=f"q{i}@client.test")[0] == 250
        shas = {hashlib.sha256(m).hexdigest(): m for m in mails}
        assert d.blob_names() == set(shas)
        for to in ("database", "files"):
            d.stop()
            _switch(d, to)
            d.start()
            assert d.blob_names() == set(shas) == _named(d)
            assert all(d.blob(sha) == data for sha, data in shas.items())
            if to == "database":  # the emptied folder is gone too
                assert not (d.home / "var" / "blobs").exists()
            else:
                assert not d.query("SELECT 1 FROM blobs")
            assert d.kept(d.send(mails[0], sender="q0@client.test")[1]) == 0  # a duplicate
    finally:
        d.kill()


@pytest.mark.skipif(
    not use_postgresql(), reason="SQLite has one writer: no transaction runs beside a collection"
)
@pytest.mark.parametrize("held", [False, True], ids=["at-once", "held-for-the-flush"])
def test_a_collection_and_a_commit_of_the_same_blob_wait_for_each_other(
    tmp_path: Path, held: bool
) -> None:
    """PostgreSQL: the lock that keeps a collection from deleting a blob a transaction is
    about to commit (store/blobs_db.py), shown with a lock timeout on each side; ``held``:
    the bind as the writer's batch makes it, its row written at the flush before the
    commit (store/deferred.py)."""
    d = Daemon(tmp_path / "gw", blobs="database")
    d.start()  # migrates
    d.stop()
    engine = create_writer_engine(load_config(d.config).database_url)
    store = DatabaseBlobStore(engine)
    data = b"one attachment, two transactions"
    sha = hashlib.sha256(data).hexdigest()
    staged = Staged((sha,), ((sha, data),))
    try:
        with engine.begin() as conn:
            store.bind(conn, staged)  # the blob exists, as one an earlier message named
        for first, second in (("bind", "hold"), ("hold", "bind")):
            holding, release = threading.Event(), threading.Event()
            t = threading.Thread(
                target=_in_open_transaction, args=(store, staged, first, holding, release, held)
            )
            t.start()
            try:
                assert holding.wait(30)
                with pytest.raises(OperationalError, match="lock"), engine.begin() as conn:
                    conn.exec_driver_sql("SET LOCAL lock_timeout = '300ms'")
                    _step(store, conn, staged, second, held)
            finally:
                release.set()
                t.join(30)
    finally:
        engine.dispose()


def _step(
    store: DatabaseBlobStore, conn: Connection, staged: Staged, what: str, held: bool
) -> None:
    if what == "bind" and held:
        with deferred.hold(conn):
            store.bind(conn, staged)  # a message's commit naming the blob, in a batch
            deferred.flush(conn)  # as the writer's batch does before its COMMIT
    elif what == "bind":
        store.bind(conn, staged)  # a message's commit naming the blob
    else:
        assert store.hold(conn, set(staged.shas)) == set(staged.shas)  # a collection


def _in_open_transaction(
    store: DatabaseBlobStore,
    staged: Staged,
    what: str,
    holding: threading.Event,
    release: threading.Event,
    held: bool,
) -> None:
    with store.engine.begin() as conn:
        _step(store, conn, staged, what, held)
        holding.set()
        release.wait(30)
