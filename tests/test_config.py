"""Config errors name file, line and key; `gateway config check` answers in one line each."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from routing.config import load_config
from routing.errors import ConfigError
from routing.tenants import AddressIndex
from routing.tokens import make_token, read_token

ROOT = Path(__file__).resolve().parent.parent


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "gateway.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_shipped_config_is_valid(tmp_path: Path) -> None:
    text = (ROOT / "gateway.toml").read_text()
    cfg = load_config(_write(tmp_path, text))
    assert [t.slug for t in cfg.tenants] == ["acme", "globex"]
    assert cfg.smtp.port == 2525 and cfg.smtp.host == "127.0.0.1"
    assert cfg.database_url.startswith("sqlite+aiosqlite:////")
    assert (tmp_path / "var" / "secret.key").stat().st_mode & 0o777 == 0o600


def test_errors_name_line_and_key_all_at_once(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        """[gateway]
hostname = "h.test"
colour = "blue"

[smtp]
listen = "nowhere"

[[tenants]]
slug = "acme"
addresses = ["support@acme.test"]

[[tenants]]
slug = "Bad Slug"
addresses = ["support@acme.test", "not-an-address"]
""",
    )
    with pytest.raises(ConfigError) as info:
        load_config(p)
    problems = info.value.problems
    assert f"{p}:3: gateway.colour: unknown key" in problems
    assert f"{p}:6: smtp.listen: expected HOST:PORT" in problems
    assert any(x.startswith(f"{p}:13: tenants[1].slug:") for x in problems)
    assert any(x.startswith(f"{p}:14: tenants[1].addresses:") and "already" in x for x in problems)
    assert any("entry 2" in x for x in problems)
    assert not any("tag_prefix" in x for x in problems)  # no echo of the bad slug


def test_blob_store_is_the_database_by_default_and_one_of_two(tmp_path: Path) -> None:
    base = '[[tenants]]\nslug = "acme"\naddresses = ["a@acme.test"]\n'
    assert load_config(_write(tmp_path, base)).blobs == "database"
    files = load_config(_write(tmp_path, f'[gateway]\nblobs = "files"\n{base}'))
    assert files.blobs == "files"
    for value, why in (('"s3"', "must be 'files' or 'database'"), ("true", "expected str")):
        p = _write(tmp_path, f'[gateway]\nhostname = "h.test"\nblobs = {value}\n{base}')
        with pytest.raises(ConfigError) as info:
            load_config(p)
        assert info.value.problems == [f"{p}:3: gateway.blobs: {why}"]


def test_parse_workers_default_to_cores_but_one(tmp_path: Path) -> None:
    base = '[[tenants]]\nslug = "acme"\naddresses = ["a@acme.test"]\n'
    cores = len(os.sched_getaffinity(0))
    assert load_config(_write(tmp_path, base)).parse_workers == (cores - 1 if cores > 1 else 0)
    none = load_config(_write(tmp_path, f"[gateway]\nparse_workers = 0\n{base}"))
    assert none.parse_workers == 0
    for value, why in (("-1", "must be 0 (parse in the daemon) to 64"), ('"2"', "expected int")):
        p = _write(tmp_path, f'[gateway]\nhostname = "h.test"\nparse_workers = {value}\n{base}')
        with pytest.raises(ConfigError) as info:
            load_config(p)
        assert info.value.problems == [f"{p}:3: gateway.parse_workers: {why}"]


def test_send_workers_default_to_one_beside_parse_workers(tmp_path: Path) -> None:
    base = '[[tenants]]\nslug = "acme"\naddresses = ["a@acme.test"]\n'
    cores = len(os.sched_getaffinity(0))
    assert load_config(_write(tmp_path, base)).outbound.send_workers == (cores > 1)
    none = load_config(_write(tmp_path, f"[outbound]\nsend_workers = 0\n{base}"))
    assert none.outbound.send_workers == 0
    p = _write(tmp_path, f"[outbound]\nsend_workers = 2\n{base}")
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert info.value.problems == [
        f"{p}:2: outbound.send_workers: must be 0 (send in the daemon) or 1"
    ]


def test_syntax_error_names_the_line(tmp_path: Path) -> None:
    p = _write(tmp_path, '[gateway]\nhostname = "x"\nbroken = \n')
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert info.value.problems[0].startswith(f"{p}:3: syntax:")


def test_each_error_class_names_its_line(tmp_path: Path) -> None:
    """Wrong types, bad values, unknown keys, cross-tenant duplicates, references to
    unknown queues or agents and an unreadable key file, each at its own line."""
    p = _write(
        tmp_path,
        """[gateway]
key_file = "missing/keys.toml"
watch_config = "yes"

[smtp]
max_message_size = "big"

[[tenants]]
slug = "acme"
addresses = ["a@acme.test"]
tag_prefix = "ACME"
languages = ["klingon"]

[[tenants.queues]]
name = "Bad Name"

[[tenants.outbound]]
host = "smtp.acme.test"

[[tenants]]
slug = "beta"
addresses = ["a@acme.test"]
tag_prefix = "ACME"

[tenants.outbound]
host = "smtp.beta.test"
password = "enc:v1:k1:AAAA"

[[tenants.rules]]
when = { subject = "x" }
then = { assign = "nobody@beta.test" }
""",
    )
    with pytest.raises(ConfigError) as info:
        load_config(p)
    got = {x.split(": ", 2)[1]: x for x in info.value.problems}
    want = {
        "gateway.watch_config": 3,
        "smtp.max_message_size": 6,
        "tenants[0].languages": 12,
        "tenants[0].queues[0].name": 15,
        "tenants[0].outbound": 17,
        "tenants[1].addresses": 22,
        "tenants[1].tag_prefix": 23,
        "tenants[1].outbound.password": 27,
        "tenants[1].rules[0].then.assign": 31,
    }
    for key, line in want.items():
        assert key in got, (key, info.value.problems)
        assert got[key].startswith(f"{p}:{line}: "), got[key]
    assert "keys.toml" in got["tenants[1].outbound.password"]


def test_config_check_cli(tmp_path: Path) -> None:
    good = subprocess.run(
        [sys.executable, "-m", "gateway", "config", "check", str(ROOT / "gateway.toml")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert good.returncode == 0 and good.stdout.startswith("ok:")
    bad = _write(tmp_path, "[smtp]\nlisten = 5\n")
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "config", "check", str(bad)],
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        f"gateway: config error: {bad}:2: smtp.listen: expected str"
    ]


def test_address_index_splits_plus_tokens_and_ignores_case(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, (ROOT / "gateway.toml").read_text()))
    idx = AddressIndex(cfg)
    r = idx.lookup("<Support+T12-abc@ACME.Test>")
    assert r is not None and (r.tenant.slug, r.address, r.token) == (
        "acme",
        "support@acme.test",
        "t12-abc",
    )
    for bad in ("support@acme.test.evil", "a\r\nb@acme.test", "support@acme.test,x@y", ""):
        assert idx.lookup(bad) is None


def test_tokens_are_bound_to_tenant_ticket_and_agent() -> None:
    key = b"k" * 32
    tok = make_token(key, "acme", 42)
    assert read_token(key, "acme", tok).ticket_number == 42  # type: ignore[union-attr]
    assert read_token(key, "globex", tok) is None
    assert read_token(b"x" * 32, "acme", tok) is None
    forged = tok.replace("t42-", "t43-")
    assert read_token(key, "acme", forged) is None
    agent = make_token(key, "acme", 42, "alice@acme.test")
    claim = read_token(key, "acme", agent.upper())
    assert claim is not None and claim.agent_code is not None


IMAP_BOXES = """[gateway]
hostname = "h.test"

[[tenants]]
slug = "acme"
addresses = ["support@acme.test"]
{boxes}"""


def _box(username: str, host: str = "imap.acme.test", **keys: str) -> str:
    return f'\n[[tenants.imap]]\nhost = "{host}"\nusername = "{username}"\n' + "".join(
        f'{k} = "{v}"\n' for k, v in keys.items()
    )


def test_imap_security_defaults_to_implicit_tls_and_allows_starttls(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("")
    boxes = (
        _box("a")
        + _box("b", security="starttls", ca_file="ca.pem")
        + _box("c", security="tls", ca_file="ca.pem")
        + _box("d", host="127.0.0.1", security="none")
    )
    cfg = load_config(_write(tmp_path, IMAP_BOXES.format(boxes=boxes)))
    got = [(m.username, m.security, m.port, m.ca_file) for m in cfg.tenants[0].imap]
    assert got == [
        ("a", "tls", 993, None),  # RFC 8314: implicit TLS unless told otherwise
        ("b", "starttls", 143, tmp_path / "ca.pem"),
        ("c", "tls", 993, tmp_path / "ca.pem"),
        ("d", "none", 143, None),
    ]


def test_imap_security_errors_name_their_lines(tmp_path: Path) -> None:
    boxes = (
        _box("a", security="none")  # plaintext to a remote server
        + _box("b", security="ssl")
        + _box("c", host="127.0.0.1", security="none", ca_file="ca.pem")
        + _box("d", security="starttls", ca_file="missing.pem")
    )
    p = _write(tmp_path, IMAP_BOXES.format(boxes=boxes))
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert info.value.problems == [
        f"{p}:11: tenants[0].imap[0].security: plain IMAP only to 127.0.0.1; use 'tls' or "
        "'starttls'",
        f"{p}:16: tenants[0].imap[1].security: must be 'tls', 'starttls' or 'none'",
        f"{p}:22: tenants[0].imap[2].ca_file: only used with security 'tls' or 'starttls'",
        f"{p}:28: tenants[0].imap[3].ca_file: no such file: {tmp_path / 'missing.pem'}",
    ]


def test_lines_after_a_multi_line_string_and_quoted_keys(tmp_path: Path) -> None:
    """A key inside a multi-line string is no key, and a quoted key is found by its name."""
    p = _write(
        tmp_path,
        '''[gateway]
hostname = "h.test"

[[tenants]]
slug = "acme"
name = """Acme
colour = "inside the string"
"""
addresses = ["a@acme.test"]
"colour" = "red"
''',
    )
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert info.value.problems == [f"{p}:10: tenants[0].colour: unknown key"]


def test_parse_has_no_side_effects_and_resolve_adds_its_problems(tmp_path: Path) -> None:
    """parse_config checks the file without a key ring and writes nothing; resolve
    decrypts (here: fails to, with the key and line) and only then makes the secret."""
    from routing.config import parse_config, resolve

    text = (
        '[[tenants]]\nslug = "acme"\naddresses = ["a@acme.test"]\n\n'
        '[tenants.outbound]\nhost = "smtp.acme.test"\npassword = "enc:v1:k1:AAAA"\n'
    )
    p = _write(tmp_path, text)
    parsed = parse_config(p, text)
    assert parsed.checker.problems == []
    assert parsed.config.tenants[0].outbound is not None
    assert parsed.config.tenants[0].outbound.password == "enc:v1:k1:AAAA"
    assert not (tmp_path / "var").exists()
    with pytest.raises(ConfigError) as info:
        resolve(parsed)
    assert [x.split(": ", 2)[:2] for x in info.value.problems] == [
        [f"{p}:7", "tenants[0].outbound.password"]
    ]
    assert not (tmp_path / "var" / "secret.key").exists()
    fixed = text.replace('password = "enc:v1:k1:AAAA"\n', "")
    config = resolve(parse_config(_write(tmp_path, fixed), fixed))
    assert len(config.secret) >= 32 and config.instance
    assert (tmp_path / "var" / "secret.key").exists()


def test_agent_aliases_are_plain_addresses_of_one_agent_only(tmp_path: Path) -> None:
    base = '[[tenants]]\nslug = "acme"\naddresses = ["a@acme.test"]\n'
    ok = (
        f'{base}[[tenants.agents]]\naddress = "alice@acme.test"\n'
        'aliases = ["Alice.Home@acme.test"]\n'
    )
    (agent,) = load_config(_write(tmp_path, ok)).tenants[0].agents
    assert agent.aliases == ("alice.home@acme.test",)
    assert agent.answers_from("alice.home@acme.test") and not agent.answers_from("x@acme.test")
    bad = (
        f'{base}[[tenants.agents]]\naddress = "alice@acme.test"\n'
        'aliases = ["a@acme.test", "al+x@acme.test", "shared@acme.test"]\n'
        '[[tenants.agents]]\naddress = "bob@acme.test"\naliases = ["shared@acme.test"]\n'
    )
    p = _write(tmp_path, bad)
    with pytest.raises(ConfigError) as info:
        load_config(p)
    problems = info.value.problems
    assert any("a@acme.test is already an address" in x for x in problems), problems
    assert any("aliases: entry 2 is not a plain address" in x for x in problems), problems
    assert any("shared@acme.test belongs to both" in x for x in problems), problems


def test_ticket_life_keys(tmp_path: Path) -> None:
    base = '[[tenants]]\nslug = "acme"\naddresses = ["a@acme.test"]\n'
    t = load_config(_write(tmp_path, base)).tenants[0]
    assert (t.pending_on_agent_reply, t.auto_close_after) == (False, None)
    good = f'{base}pending_on_agent_reply = true\nauto_close_after = "7d"\n'
    t = load_config(_write(tmp_path, good)).tenants[0]
    assert (t.pending_on_agent_reply, t.auto_close_after) == (True, 7 * 86400.0)
    for value in ('"soon"', "7", '"0m"'):
        p = _write(tmp_path, f"{base}auto_close_after = {value}\n")
        with pytest.raises(ConfigError) as info:
            load_config(p)
        assert info.value.problems == [
            f"{p}:4: tenants[0].auto_close_after: expected a duration such as '7d' or '36h'"
        ]


def test_notice_attachments_max_is_a_size(tmp_path: Path) -> None:
    base = '[[tenants]]\nslug = "acme"\naddresses = ["support@acme.test"]\n'
    assert load_config(_write(tmp_path, base)).outbound.notice_attachments_max == 10 * 1024**2
    for value, size in (('"512 KiB"', 512 * 1024), ('"2 MB"', 2_000_000), ("4096", 4096)):
        p = _write(tmp_path, f"[outbound]\nnotice_attachments_max = {value}\n{base}")
        assert load_config(p).outbound.notice_attachments_max == size
    for value in ('"ten megs"', "-1", "true"):
        p = _write(tmp_path, f"[outbound]\nnotice_attachments_max = {value}\n{base}")
        with pytest.raises(ConfigError) as info:
            load_config(p)
        (problem,) = info.value.problems
        assert problem.startswith(f"{p}:2: outbound.notice_attachments_max: expected a size")
