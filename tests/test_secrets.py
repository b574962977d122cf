"""Encrypted config passwords: bound to tenant and field, rotatable, never shown in clear."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from routing.secrets import Keyring, SecretError, add_key, is_encrypted, load_keyring

ROOT = Path(__file__).resolve().parent.parent
NO_ENV: dict[str, str] = {}

PW_ACME = "acme-Pa55word!"
PW_GLOBEX = "globex s3cret ✓"


def _key(byte: int) -> bytes:
    return bytes([byte]) * 32


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def _ring() -> Keyring:
    return Keyring(keys={"k1": _key(1)}, primary="k1")


# -- Keyring ------------------------------------------------------------------


def test_round_trip_and_format() -> None:
    ring = _ring()
    value = ring.encrypt(PW_GLOBEX, tenant="acme", field="password")
    assert value.startswith("enc:v1:k1:")
    data = value.split(":", 3)[3]
    assert "=" not in data and "+" not in data and "/" not in data
    assert is_encrypted(value) and not is_encrypted(PW_GLOBEX)
    assert ring.decrypt(value, tenant="acme", field="password") == PW_GLOBEX
    # A fresh nonce each time: equal passwords do not give equal values.
    assert ring.encrypt(PW_GLOBEX, tenant="acme", field="password") != value


def test_repr_hides_key_bytes() -> None:
    ring = Keyring(keys={"k1": b"\xab" * 32}, primary="k1")
    text = repr(ring)
    assert "k1" in text
    assert "\\xab" not in text and _b64(b"\xab" * 32) not in text


@pytest.mark.parametrize(("tenant", "field"), [("globex", "password"), ("acme", "username")])
def test_value_copied_to_another_tenant_or_field_fails(tenant: str, field: str) -> None:
    ring = _ring()
    value = ring.encrypt(PW_ACME, tenant="acme", field="password")
    with pytest.raises(SecretError, match="wrong key, or the value was made for another") as exc:
        ring.decrypt(value, tenant=tenant, field=field)
    assert PW_ACME not in str(exc.value)


def test_unknown_key_id_names_the_known_ones() -> None:
    value = _ring().encrypt(PW_ACME, tenant="acme", field="password")
    other = Keyring(keys={"k2": _key(2), "k3": _key(3)}, primary="k2")
    with pytest.raises(SecretError, match=r"unknown key id 'k1' \(keys: k2, k3\)"):
        other.decrypt(value, tenant="acme", field="password")


def test_wrong_key_with_same_id_fails() -> None:
    value = _ring().encrypt(PW_ACME, tenant="acme", field="password")
    impostor = Keyring(keys={"k1": _key(9)}, primary="k1")
    with pytest.raises(SecretError, match="cannot decrypt"):
        impostor.decrypt(value, tenant="acme", field="password")


def test_tampered_data_fails() -> None:
    ring = _ring()
    value = ring.encrypt(PW_ACME, tenant="acme", field="password")
    head, data = value.rsplit(":", 1)
    flipped = data[:-3] + ("A" if data[-3] != "A" else "B") + data[-2:]
    with pytest.raises(SecretError, match="cannot decrypt"):
        ring.decrypt(f"{head}:{flipped}", tenant="acme", field="password")
    with pytest.raises(SecretError, match="cannot decrypt"):
        ring.decrypt(f"{head}:{data[:-4]}", tenant="acme", field="password")


@pytest.mark.parametrize(
    "value",
    [PW_ACME, "", "enc:v1:", "enc:v1:k1", "enc:v1:k1:", "enc:v1:k1:!!!!", "enc:v1:k1:QUJD"],
)
def test_not_an_encrypted_value(value: str) -> None:
    with pytest.raises(SecretError, match=r"not an encrypted value \(expected enc:v1:"):
        _ring().decrypt(value, tenant="acme", field="password")


# -- keys from the environment and the key file -----------------------------------


def test_key_file_is_created_0600(tmp_path: Path) -> None:
    key_file = tmp_path / "deep" / "var" / "keys.toml"
    ring = load_keyring(key_file, NO_ENV)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(ring.keys) == 1 and len(ring.keys[ring.primary]) == 32
    assert ring.primary.startswith("k")
    # The next load reads the same key back rather than making another.
    again = load_keyring(key_file, NO_ENV)
    assert again.primary == ring.primary and again.keys == ring.keys


def test_missing_key_file_without_create(tmp_path: Path) -> None:
    key_file = tmp_path / "keys.toml"
    with pytest.raises(SecretError, match="no key file"):
        load_keyring(key_file, NO_ENV, create=False)
    assert not key_file.exists()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    key_file = tmp_path / "keys.toml"
    load_keyring(key_file, NO_ENV)
    key_file.chmod(mode)
    with pytest.raises(SecretError, match=f"chmod 600 {key_file}"):
        load_keyring(key_file, NO_ENV)


def test_key_file_errors_never_show_key_bytes(tmp_path: Path) -> None:
    key_file = tmp_path / "keys.toml"
    short = _b64(b"\x07" * 16)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, f'primary = "k1"\n[keys]\nk1 = "{short}"\n'.encode())
    os.close(fd)
    with pytest.raises(SecretError, match="key 'k1': must be 32 bytes") as exc:
        load_keyring(key_file, NO_ENV)
    assert short not in str(exc.value)


def test_env_keys_first_is_primary_plus_file_keys(tmp_path: Path) -> None:
    key_file = tmp_path / "keys.toml"
    from_file = load_keyring(key_file, NO_ENV)
    env = {"GATEWAY_KEYS": f" e1:{_b64(_key(1))}, e2:{_b64(_key(2))} "}
    ring = load_keyring(key_file, env)
    assert ring.primary == "e1"
    assert ring.keys["e1"] == _key(1) and ring.keys["e2"] == _key(2)
    assert ring.keys[from_file.primary] == from_file.keys[from_file.primary]
    old = from_file.encrypt(PW_ACME, tenant="acme", field="password")
    assert ring.decrypt(old, tenant="acme", field="password") == PW_ACME
    assert ring.encrypt(PW_ACME, tenant="acme", field="password").startswith("enc:v1:e1:")


def test_env_keys_alone_make_no_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "keys.toml"
    ring = load_keyring(key_file, {"GATEWAY_KEYS": f"only:{_b64(_key(5))}"})
    assert ring.primary == "only" and list(ring.keys) == ["only"]
    assert not key_file.exists()


@pytest.mark.parametrize(
    "raw",
    [
        "nocolon",
        f"bad id:{_b64(_key(1))}",
        "k1:not-base64!!",
        f"k1:{_b64(b'short')}",
        f"k1:{_b64(_key(1))},k1:{_b64(_key(2))}",
    ],
)
def test_malformed_env_keys_name_the_variable(tmp_path: Path, raw: str) -> None:
    with pytest.raises(SecretError, match="GATEWAY_KEYS") as exc:
        load_keyring(tmp_path / "keys.toml", {"GATEWAY_KEYS": raw})
    assert _b64(_key(1)) not in str(exc.value)


def test_add_key_rotates_and_keeps_old_keys(tmp_path: Path) -> None:
    key_file = tmp_path / "keys.toml"
    first = load_keyring(key_file, NO_ENV)
    old_value = first.encrypt(PW_ACME, tenant="acme", field="password")
    kid = add_key(key_file)
    assert kid != first.primary
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text().startswith("# Keys for the enc:v1")  # comments kept
    ring = load_keyring(key_file, NO_ENV)
    assert ring.primary == kid and set(ring.keys) == {first.primary, kid}
    assert ring.decrypt(old_value, tenant="acme", field="password") == PW_ACME
    new_value = ring.encrypt(PW_ACME, tenant="acme", field="password")
    assert new_value.startswith(f"enc:v1:{kid}:")
    with pytest.raises(SecretError, match="unknown key id"):
        first.decrypt(new_value, tenant="acme", field="password")
    third = add_key(key_file)
    assert len({first.primary, kid, third}) == 3
    assert len(load_keyring(key_file, NO_ENV).keys) == 3


def test_add_key_makes_a_missing_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "var" / "keys.toml"
    kid = add_key(key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert load_keyring(key_file, NO_ENV).primary == kid


# -- the CLI ---------------------------------------------------------------------

CONFIG = """\
# gateway config for the secrets tests
[gateway]
key_file = "var/keys.toml"   # made on first encrypt

[[tenants]]
slug = "acme"

[tenants.outbound]
host = "smtp.acme.test"
port = 587
password = "{acme}"  # acme's relay login

[[tenants]]
slug = "globex"

# globex relays through its own host
[tenants.outbound]
host = "smtp.globex.test"
port = 587
password = "{globex}"
"""
ACME_LINE = 11
GLOBEX_LINE = 20


def _gateway(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GATEWAY_KEYS", "GATEWAY_CONFIG")}
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "secrets", *args],
        input=stdin if stdin is not None else b"",
        capture_output=True,
        cwd=ROOT,
        env=env,
    )
    text = subprocess.CompletedProcess(
        out.args, out.returncode, out.stdout.decode(), out.stderr.decode()
    )
    for plain in (PW_ACME, PW_GLOBEX):
        assert plain not in text.stdout and plain not in text.stderr
    assert "Traceback" not in text.stderr
    return text


def _encrypt(config: Path, tenant: str, password: str) -> str:
    out = _gateway("encrypt", "--tenant", tenant, "--config", str(config), stdin=password.encode())
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(CONFIG.format(acme="", globex=""))
    acme = _encrypt(path, "acme", PW_ACME + "\n")  # one trailing newline is dropped
    globex = _encrypt(path, "globex", PW_GLOBEX)
    path.write_text(CONFIG.format(acme=acme, globex=globex))
    return path


def _decrypt_all(config: Path) -> dict[str, str]:
    import tomllib

    ring = load_keyring(config.parent / "var" / "keys.toml", NO_ENV, create=False)
    doc = tomllib.loads(config.read_text())
    return {
        t["slug"]: ring.decrypt(t["outbound"]["password"], tenant=t["slug"], field="password")
        for t in doc["tenants"]
    }


def test_cli_encrypt_then_check_ok(config: Path) -> None:
    key_file = config.parent / "var" / "keys.toml"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert _decrypt_all(config) == {"acme": PW_ACME, "globex": PW_GLOBEX}
    out = _gateway("check", "--config", str(config))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok: 2 secrets decrypt"


def test_cli_config_before_the_action(config: Path) -> None:
    out = _gateway("--config", str(config), "check")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok: 2 secrets decrypt"


def test_cli_encrypt_refuses_unknown_tenant_and_empty(config: Path) -> None:
    out = _gateway("encrypt", "--tenant", "nope", "--config", str(config), stdin=b"x")
    assert out.returncode == 64 and out.stdout == ""
    assert out.stderr.startswith("gateway: unknown tenant 'nope'")
    assert len(out.stderr.splitlines()) == 1
    out = _gateway("encrypt", "--tenant", "acme", "--config", str(config), stdin=b"\n")
    assert out.returncode == 64 and out.stdout == ""
    assert "empty password" in out.stderr


def test_cli_missing_config(tmp_path: Path) -> None:
    out = _gateway("check", "--config", str(tmp_path / "none.toml"))
    assert out.returncode == 66
    assert out.stderr.strip() == f"gateway: {tmp_path / 'none.toml'}: no such config file"


def test_cli_check_reports_plain_password_with_line(config: Path) -> None:
    text = config.read_text()
    acme = text.splitlines()[ACME_LINE - 1].split('"')[1]
    config.write_text(text.replace(acme, PW_ACME))
    out = _gateway("check", "--config", str(config))
    assert out.returncode == 78
    assert out.stderr.splitlines() == [
        f"gateway: config error: {config}:{ACME_LINE}: tenants[0].outbound.password: "
        "must be encrypted: run gateway secrets encrypt --tenant acme"
    ]


def test_cli_check_reports_values_swapped_between_tenants(config: Path) -> None:
    lines = config.read_text().splitlines()
    acme = lines[ACME_LINE - 1].split('"')[1]
    globex = lines[GLOBEX_LINE - 1].split('"')[1]
    lines[ACME_LINE - 1] = lines[ACME_LINE - 1].replace(acme, globex)
    lines[GLOBEX_LINE - 1] = lines[GLOBEX_LINE - 1].replace(globex, acme)
    config.write_text("\n".join(lines) + "\n")
    out = _gateway("check", "--config", str(config))
    assert out.returncode == 78
    problems = out.stderr.splitlines()
    assert len(problems) == 2
    assert problems[0].startswith(
        f"gateway: config error: {config}:{ACME_LINE}: tenants[0].outbound.password: cannot decrypt"
    )
    assert problems[1].startswith(
        f"gateway: config error: {config}:{GLOBEX_LINE}: tenants[1].outbound.password: "
    )


def test_cli_check_without_keys(config: Path) -> None:
    (config.parent / "var" / "keys.toml").unlink()
    out = _gateway("check", "--config", str(config))
    assert out.returncode == 78
    assert "gateway.key_file: " in out.stderr and "no key file" in out.stderr


def test_cli_rotate_keeps_comments_and_layout(config: Path) -> None:
    before = config.read_text()
    old_kid = before.splitlines()[ACME_LINE - 1].split(":")[2]
    out = _gateway("rotate", "--config", str(config))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("rotated 2 secrets to key ")
    new_kid = out.stdout.split()[-1]
    assert new_kid != old_kid
    assert "remove them once every instance" in out.stderr

    after = config.read_text()
    assert "# globex relays through its own host" in after
    assert "  # acme's relay login" in after
    assert 'key_file = "var/keys.toml"   # made on first encrypt' in after
    b_lines, a_lines = before.splitlines(), after.splitlines()
    assert len(a_lines) == len(b_lines)
    changed = [n for n, (b, a) in enumerate(zip(b_lines, a_lines, strict=True), 1) if b != a]
    assert changed == [ACME_LINE, GLOBEX_LINE]
    assert f"enc:v1:{new_kid}:" in a_lines[ACME_LINE - 1]
    assert f"enc:v1:{new_kid}:" in a_lines[GLOBEX_LINE - 1]

    assert _decrypt_all(config) == {"acme": PW_ACME, "globex": PW_GLOBEX}
    out = _gateway("check", "--config", str(config))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok: 2 secrets decrypt"
    keys = load_keyring(config.parent / "var" / "keys.toml", NO_ENV, create=False)
    assert keys.primary == new_kid and old_kid in keys.keys  # old key stays for other instances


def test_cli_rotate_refuses_a_broken_config(config: Path) -> None:
    text = config.read_text()
    acme = text.splitlines()[ACME_LINE - 1].split('"')[1]
    config.write_text(text.replace(acme, PW_ACME))
    key_text = (config.parent / "var" / "keys.toml").read_text()
    out = _gateway("rotate", "--config", str(config))
    assert out.returncode == 78
    assert f"{config}:{ACME_LINE}: tenants[0].outbound.password: must be encrypted" in out.stderr
    assert config.read_text() == text.replace(acme, PW_ACME)
    assert (config.parent / "var" / "keys.toml").read_text() == key_text
