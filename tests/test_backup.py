"""Backups: taken from a running daemon, restored into an empty data directory, the same
tickets, messages and blob hashes; a wrong key, a damaged and a cut archive fail clearly;
the age CLI alone opens an archive; the archives made before age (HGWBACKUP1) and their
keys still restore; the daemon takes its daily backup and keeps the newest N."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sqlite3
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from pyrage import x25519

from gateway.ops.backup_key import parse_backup_key
from tests.clamd_harness import Clamd
from tests.daemon import Daemon
from tests.legacy_backup import rewrite_as_legacy
from tests.mail import make_mail

AGE_CHUNK = (64 << 10) + 16  # age's payload chunk: 64 KiB and its tag


def _key() -> str:
    """An age identity, as ``$GATEWAY_BACKUP_KEY`` holds it."""
    return str(x25519.Identity.generate())


def _legacy_key() -> str:
    """A key as made before the age format: 32 random bytes, base64."""
    return base64.b64encode(os.urandom(32)).decode()


def _blob_hashes(d: Daemon) -> dict[str, str]:
    """Every blob by name, with the sha256 of its bytes."""
    return {sha: hashlib.sha256(d.blob(sha) or b"").hexdigest() for sha in d.blob_names()}


@pytest.fixture(scope="module", params=["files", "database"])
def archive(
    tmp_path_factory: pytest.TempPathFactory, clamd: Clamd, request: pytest.FixtureRequest
) -> dict[str, object]:
    """A daemon with mail and attachments, backed up while it runs; with the blobs as
    files, or as rows that travel inside the database snapshot."""
    home = tmp_path_factory.mktemp("backup-src")
    key = _key()
    d = Daemon(
        home / "gw", blobs=request.param, scanner=clamd.address, env={"GATEWAY_BACKUP_KEY": key}
    ).start()
    try:
        # One big attachment, so the archive spans many encrypted chunks (and 1 MiB ones,
        # once rewritten as an HGWBACKUP1 archive).
        big = make_mail(
            subject="Scan of the contract",
            sender="big@client.test",
            attachments=[("scan.pdf", "application/pdf", b"%PDF-1.4 " + os.urandom(1_500_000))],
        )
        assert d.send(big, sender="big@client.test")[0] == 250
        for i in range(5):
            code, _ = d.send(
                make_mail(
                    subject=f"Invoice {i}",
                    sender=f"client{i}@client.test",
                    attachments=[
                        ("invoice.pdf", "application/pdf", b"%PDF-1.4 " + os.urandom(2000)),
                        ("notes.txt", "text/plain", f"line {i}\n".encode() * 50),
                    ],
                ),
                sender=f"client{i}@client.test",
            )
            assert code == 250
        out_dir = home / "backups"
        out = d.cli("backup", "--out", str(out_dir), "--json")
        assert out.returncode == 0, out.stderr
        made = json.loads(out.stdout)
        dump = d.dump()
        blobs = _blob_hashes(d)
        if d.blobs == "database":
            assert not list((d.home / "var" / "blobs").rglob("*"))
    finally:
        d.stop()
    return {"key": key, "made": made, "dump": dump, "blobs": blobs, "home": home, "mode": d.blobs}


def _target(home: Path, key: str, blobs: object = "files") -> Daemon:
    """A second install with the same config and an empty data directory (never started)."""
    return Daemon(home, blobs=str(blobs), env={"GATEWAY_BACKUP_KEY": key})


def test_backup_restore_round_trip(archive: dict[str, object], tmp_path: Path) -> None:
    made = archive["made"]
    assert isinstance(made, dict)
    assert (made["tickets"], made["messages"], made["blobs"]) == (6, 6, 17)  # 6 raw, 11 attached
    path = Path(str(made["path"]))
    raw = path.read_bytes()
    # Encrypted: no mail text, no SQLite header, no blob bytes in the clear.
    assert b"SQLite format 3" not in raw and b"Invoice" not in raw and b"line 1" not in raw
    target = _target(tmp_path / "restored", str(archive["key"]), archive["mode"])
    out = target.cli("restore", str(path), "--json")
    assert out.returncode == 0, out.stderr
    restored = json.loads(out.stdout)
    assert (restored["tickets"], restored["messages"], restored["blobs"]) == (6, 6, 17)
    assert target.dump() == archive["dump"]
    assert _blob_hashes(target) == archive["blobs"]
    assert all(name == sha for name, sha in _blob_hashes(target).items())
    # The reply-token secret came back too, so links in mails already sent still work.
    src_secret = (Path(str(archive["home"])) / "gw" / "var" / "secret.key").read_bytes()
    assert (target.home / "var" / "secret.key").read_bytes() == src_secret
    # It runs: the restored daemon takes new mail into the restored store.
    target.start()
    try:
        assert target.send(make_mail(subject="after restore"))[0] == 250
        assert len(target.dump()) == 7
    finally:
        target.stop()
    # A second restore over it is refused: never into a data directory with data.
    again = target.cli("restore", str(path))
    assert again.returncode == 73 and b"exists" in again.stderr


def test_wrong_key_damaged_and_cut_archives_fail_clearly(
    archive: dict[str, object], tmp_path: Path
) -> None:
    made = archive["made"]
    assert isinstance(made, dict)
    path = Path(str(made["path"]))

    wrong = _target(tmp_path / "wrong", _key()).cli("restore", str(path))
    err = wrong.stderr.decode()
    assert wrong.returncode == 77, err
    assert err.startswith("gateway: wrong backup key: this archive was not made for the key ")
    assert "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "wrong" / "var" / "gateway.db").exists()

    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    damaged = tmp_path / "damaged.tar.age"
    damaged.write_bytes(bytes(data))
    out = _target(tmp_path / "d", str(archive["key"])).cli("restore", str(damaged))
    assert out.returncode == 65 and b"damaged or altered" in out.stderr, out.stderr
    assert not (tmp_path / "d" / "var" / "gateway.db").exists()
    # The last chunk holds only the tar's end padding, and is checked all the same.
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    damaged.write_bytes(bytes(data))
    out = _target(tmp_path / "e", str(archive["key"])).cli("restore", str(damaged))
    assert out.returncode == 65 and b"damaged or altered" in out.stderr, out.stderr

    # Cut after the first whole chunk: every byte left is authentic, the end is missing.
    whole = path.read_bytes()
    header = whole.index(b"\n", whole.index(b"\n--- ") + 1) + 1 + 16  # age header, nonce
    assert whole.startswith(b"age-encryption.org/v1\n")
    assert len(whole) > header + 2 * AGE_CHUNK
    cut = tmp_path / "cut.tar.age"
    cut.write_bytes(whole[: header + AGE_CHUNK])
    out = _target(tmp_path / "c", str(archive["key"])).cli("restore", str(cut))
    assert out.returncode == 65 and b"truncated" in out.stderr, out.stderr

    nokey = Daemon(tmp_path / "nokey").cli("backup", "--out", str(tmp_path / "b"))
    assert nokey.returncode == 78 and b"no backup key" in nokey.stderr


def test_new_key_file_is_private_and_never_in_the_data_directory(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "gw")
    inside = d.cli("backup", "--new-key", str(d.home / "var" / "backup.key"))
    assert inside.returncode == 73 and b"inside the data directory" in inside.stderr
    keyfile = tmp_path / "keys" / "backup.key"
    out = d.cli("backup", "--new-key", str(keyfile))
    assert out.returncode == 0, out.stderr
    assert keyfile.stat().st_mode & 0o777 == 0o600
    # An age identity file: age's own tool reads it and names the public key we printed.
    public = subprocess.run(
        ["age-keygen", "-y", str(keyfile)], capture_output=True, check=True, text=True
    ).stdout.strip()
    assert public.startswith("age1") and public in out.stdout.decode()
    assert parse_backup_key(keyfile.read_text(), "test").legacy is None
    assert d.cli("backup", "--new-key", str(keyfile)).returncode == 73  # never overwritten


def test_the_age_tool_alone_opens_an_archive(archive: dict[str, object], tmp_path: Path) -> None:
    """A bad day without the gateway: Debian's ``age`` and the key file give back a plain
    tar with the database snapshot and every blob, byte for byte."""
    made = archive["made"]
    assert isinstance(made, dict)
    keyfile = tmp_path / "backup.key"
    keyfile.write_text(f"# the backup key\n{archive['key']}\n")
    tar_path = tmp_path / "backup.tar"
    out = subprocess.run(
        ["age", "-d", "-i", str(keyfile), "-o", str(tar_path), str(made["path"])],
        capture_output=True,
    )
    assert out.returncode == 0, out.stderr
    with tarfile.open(tar_path) as tar:
        names = tar.getnames()
        assert names[:2] == ["archive.json", "gateway.db"]
        facts = tar.extractfile("archive.json")
        assert facts is not None and json.loads(facts.read())["engine"] == "sqlite"
        tar.extractall(tmp_path / "x", filter="data")
    db = sqlite3.connect(tmp_path / "x" / "gateway.db")
    try:
        assert db.execute("SELECT count(*) FROM tickets").fetchone()[0] == made["tickets"]
    finally:
        db.close()
    blobs = archive["blobs"]
    assert isinstance(blobs, dict)
    if archive["mode"] == "files":
        files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                 for p in (tmp_path / "x" / "data" / "blobs").glob("??/*")}  # fmt: skip
        assert files == blobs
    else:
        assert not (tmp_path / "x" / "data" / "blobs").exists()
    # The wrong key: age says so, and writes nothing.
    (tmp_path / "other.key").write_text(_key() + "\n")
    wrong = subprocess.run(
        ["age", "-d", "-i", str(tmp_path / "other.key"), str(made["path"])], capture_output=True
    )
    assert wrong.returncode != 0 and wrong.stdout == b""


def test_archives_and_keys_from_before_age_still_restore(
    archive: dict[str, object], tmp_path: Path
) -> None:
    """An HGWBACKUP1 archive (made by the old writer, kept in tests/legacy_backup.py)
    restores with its old key, and fails as it always did when wrong, damaged or cut.
    The old key also makes new (age) archives, and ``--new-key`` carries it over into an
    age key file that opens both kinds."""
    made = archive["made"]
    assert isinstance(made, dict)
    legacy = _legacy_key()
    old = tmp_path / "gateway-backup-20260101T030000Z.hgbk"
    rewrite_as_legacy(
        Path(str(made["path"])),
        parse_backup_key(str(archive["key"]), "test"),
        base64.b64decode(legacy),
        old,
    )
    whole = old.read_bytes()
    assert whole.startswith(b"HGWBACKUP1\n")
    target = _target(tmp_path / "restored", legacy, archive["mode"])
    out = target.cli("restore", str(old), "--json")
    assert out.returncode == 0, out.stderr
    restored = json.loads(out.stdout)
    assert (restored["tickets"], restored["messages"], restored["blobs"]) == (6, 6, 17)
    assert target.dump() == archive["dump"]
    assert _blob_hashes(target) == archive["blobs"]

    wrong = _target(tmp_path / "wrong", _legacy_key()).cli("restore", str(old))
    err = wrong.stderr.decode()
    assert wrong.returncode == 77, err
    assert err.startswith("gateway: wrong backup key: this archive was made with key ")
    agekey = _target(tmp_path / "agekey", _key()).cli("restore", str(old))
    assert agekey.returncode == 77 and b"holds no HGWBACKUP1 key" in agekey.stderr
    data = bytearray(whole)
    data[len(data) // 2] ^= 0x01
    damaged = tmp_path / "damaged.hgbk"
    damaged.write_bytes(bytes(data))
    out = _target(tmp_path / "d", legacy).cli("restore", str(damaged))
    assert out.returncode == 65 and b"damaged or altered" in out.stderr, out.stderr
    header = 11 + 4 + int.from_bytes(whole[11:15], "big")
    assert len(whole) > header + 2 * ((1 << 20) + 16)
    cut = tmp_path / "cut.hgbk"
    cut.write_bytes(whole[: header + (1 << 20) + 16])
    out = _target(tmp_path / "c", legacy).cli("restore", str(cut))
    assert out.returncode == 65 and b"truncated" in out.stderr, out.stderr

    # The old key on the day of the upgrade: backups go on, as age archives.
    target.start()
    try:
        out = target.cli("backup", "--out", str(tmp_path / "new"), "--json")
    finally:
        target.stop()
    assert out.returncode == 0, out.stderr
    new = Path(json.loads(out.stdout)["path"])
    assert new.name.endswith(".tar.age")
    # --new-key with the old key configured: one age key file for every archive.
    keyfile = tmp_path / "keys" / "backup.key"
    out = target.cli("backup", "--new-key", str(keyfile))
    assert out.returncode == 0, out.stderr
    assert f"# HGWBACKUP1 key: {legacy}" in keyfile.read_text()
    opened = subprocess.run(["age", "-d", "-i", str(keyfile), str(new)], capture_output=True)
    assert opened.returncode == 0 and opened.stdout[:512].startswith(b"archive.json")
    from_file = Daemon(
        tmp_path / "from-file",
        blobs=str(archive["mode"]),
        extra=f'[backup]\nkey_file = "{keyfile}"\n',
    )
    out = from_file.cli("restore", str(old), "--json")
    assert out.returncode == 0, out.stderr
    assert from_file.dump() == archive["dump"]


def test_daemon_takes_the_daily_backup_and_keeps_the_newest(tmp_path: Path) -> None:
    folder = tmp_path / "backups"
    folder.mkdir()
    for day in range(1, 6):  # five old archives from earlier days
        (folder / f"gateway-backup-202601{day:02d}T030000Z.hgbk").write_bytes(b"old")
    keyfile = tmp_path / "backup.key"
    keyfile.write_text(_key() + "\n")
    d = Daemon(
        tmp_path / "gw",
        extra=f'[backup]\nenabled = true\ndir = "{folder}"\nkey_file = "{keyfile}"\nkeep = 3\n',
    )
    d.start()
    try:
        deadline = time.monotonic() + 60
        last: dict[str, object] | None = None
        while time.monotonic() < deadline:
            status = json.loads(d.cli("status", "--json").stdout)
            last = ((status.get("daemon") or {}).get("ops") or {}).get("last_backup")
            if last:
                break
            time.sleep(0.3)
        assert last is not None, d.log_text()
        names = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        # The new archive and the two newest old ones: keep = 3.
        assert names[:2] == [
            "gateway-backup-20260104T030000Z.hgbk",
            "gateway-backup-20260105T030000Z.hgbk",
        ]
        assert len(names) == 3 and last["path"] == str(folder / names[-1])
        assert names[-1].endswith(".tar.age")
        assert (folder / names[-1]).read_bytes().startswith(b"age-encryption.org/v1\n")
    finally:
        d.stop()
