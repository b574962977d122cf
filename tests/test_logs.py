"""The logs keep the privacy policy: no bodies, no secrets, addresses only where a tenant allows."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from gateway.logs import set_log_privacy, setup_logging
from routing.config import load_config
from store.redact import pseudonym

CAROL = "carol@client.test"


@pytest.fixture
def logged(tmp_path: Path) -> Iterator[object]:
    p = tmp_path / "gateway.toml"
    p.write_text(
        '[[tenants]]\nslug = "acme"\naddresses = ["support@acme.test"]\n'
        '[[tenants]]\nslug = "open"\naddresses = ["help@open.test"]\nlog_addresses = true\n',
        encoding="utf-8",
    )
    config = load_config(p)
    setup_logging("json", logging.INFO)
    set_log_privacy(config)
    out = io.StringIO()  # the daemon's processors and renderer, written here instead of stderr
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=out))

    def events() -> list[dict[str, object]]:
        return [json.loads(line) for line in out.getvalue().splitlines()]

    yield config, events
    structlog.reset_defaults()


def test_bodies_and_secrets_never_reach_the_log(logged: object) -> None:
    config, events = logged  # type: ignore[misc]
    log = structlog.get_logger("t")
    log.info(
        "message",
        tenant="acme",
        body="Dear support, my PIN is 1234",
        text="the text",
        html="<p>x</p>",
        password="hunter2",
        session_id="abc",
        cookie="gw_session=xyz",
        detail="login with enc:v1:k1:QUJDREVGRw== failed",
        url="https://h/t/acme/login?s=0123abcd&v=verifier-secret-value",
        to="support+t12-abcdef0123456789@acme.test",
        error="user carol@client.test refused",
    )
    (e,) = events()
    out = json.dumps(e)
    for secret in ("PIN", "the text", "<p>", "hunter2", "abc\"", "xyz", "QUJDREVGRw",
                   "0123abcd", "verifier-secret-value", "abcdef0123456789", CAROL):  # fmt: skip
        assert secret not in out, secret
    assert e["password"] == e["session_id"] == e["cookie"] == "[redacted]"
    assert "body" not in e and "text" not in e and "html" not in e
    assert e["to"] == "support+[redacted]@acme.test"  # our own address stays readable
    assert e["error"] == f"user {pseudonym(config.secret, CAROL)} refused"
    assert e["detail"] == "login with enc:[redacted] failed"


def test_addresses_only_where_every_tenant_named_allows_them(logged: object) -> None:
    _config, events = logged  # type: ignore[misc]
    log = structlog.get_logger("t")
    log.info("a", tenant="open", who=CAROL)
    log.info("b", tenants=["open", "acme"], who=[CAROL])
    log.info("c", who=CAROL)  # no tenant named: hashed
    try:
        raise ValueError(f"cannot deliver to {CAROL}")
    except ValueError:
        log.exception("d", tenant="acme")
    a, b, c, d = events()
    assert a["who"] == CAROL
    assert CAROL not in json.dumps(b) and CAROL not in json.dumps(c)
    assert "ValueError" in str(d["exception"]) and CAROL not in str(d["exception"])
