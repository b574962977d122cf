"""Backups: taken from a running daemon, restored into an empty data directory, the same
tickets, messages and blob hashes; a wrong key, a damaged and a cut archive fail clearly;
the daemon takes its daily backup and keeps the newest N."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from tests.clamd_harness import Clamd
from tests.daemon import Daemon
from tests.mail import make_mail


def _key() -> str:
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
        # One big attachment, so the archive spans several 1 MiB encrypted chunks.
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
    assert err.startswith("gateway: wrong backup key: this archive was made with key ")
    assert "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "wrong" / "var" / "gateway.db").exists()

    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    damaged = tmp_path / "damaged.hgbk"
    damaged.write_bytes(bytes(data))
    out = _target(tmp_path / "d", str(archive["key"])).cli("restore", str(damaged))
    assert out.returncode == 65 and b"damaged or altered" in out.stderr, out.stderr
    assert not (tmp_path / "d" / "var" / "gateway.db").exists()

    # Cut after the first whole chunk: every byte left is authentic, the end is missing.
    whole = path.read_bytes()
    header = 11 + 4 + int.from_bytes(whole[11:15], "big")
    assert len(whole) > header + 2 * ((1 << 20) + 16)
    cut = tmp_path / "cut.hgbk"
    cut.write_bytes(whole[: header + (1 << 20) + 16])
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
    assert len(base64.b64decode(keyfile.read_text())) == 32
    assert d.cli("backup", "--new-key", str(keyfile)).returncode == 73  # never overwritten


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
        assert (folder / names[-1]).read_bytes().startswith(b"HGWBACKUP1\n")
    finally:
        d.stop()
