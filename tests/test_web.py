"""The HTTP side of a running daemon: health, status, metrics, and who may read them."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.request
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

import bcrypt
from sqlalchemy import event

from routing.config import load_config
from store.db import create_engine
from store.queries import outbox_status, store_status
from tests.clamd_harness import EICAR, Clamd
from tests.daemon import Daemon
from tests.mail import make_mail


def _get(d: Daemon, path: str, auth: str | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{d.http_port}{path}")
    if auth is not None:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_health_status_and_metrics(daemon: Daemon) -> None:
    code, headers, body = _get(daemon, "/healthz")
    assert (code, body) == (200, b"ok\n")
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'none'" in headers["Content-Security-Policy"]

    who = f"w{uuid.uuid4().hex[:8]}@client.test"
    assert daemon.send(make_mail(sender=who), sender=who)[0] == 250
    bad = make_mail(sender=who, attachments=[("e.com", "application/octet-stream", EICAR)])
    assert daemon.send(bad, sender=who)[0] == 554

    code, _, body = _get(daemon, "/status")
    assert code == 200
    status = json.loads(body)
    assert status["version"] and status["uptime_seconds"] >= 0
    assert status["version"] == metadata.version("helpdesk-gateway")  # the installed one
    services = status["services"]  # every supervised service, none restarted
    assert {"outbox-delivery", "scanner-probe", "retention", "ops", "status-file"} <= set(services)
    assert all(s["restarts"] == 0 and s["last_error"] is None for s in services.values())
    assert status["smtp"]["port"] == daemon.port and status["scanner"]["reachable"] is True
    assert status["config_generation"] == 1 and status["last_config_error"] is None
    assert status["tenants"]["acme"]["open"] >= 1
    assert status["outbox"]["pending"] >= 1  # no outbound account in the test config

    code, headers, body = _get(daemon, "/metrics")
    assert code == 200 and headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    assert 'gateway_messages_total{code="250",result="accepted",source="smtp"}' in text
    assert 'gateway_messages_total{code="554",result="rejected",source="smtp"}' in text
    assert 'gateway_tickets_opened_total{tenant="acme"}' in text
    assert 'gateway_scan_verdicts_total{verdict="infected"}' in text
    pending = status["outbox"]["pending"]  # nothing sends it: the gauge says the same
    assert f"gateway_outbox_pending {float(pending)}" in text, text
    assert "gateway_big_mail_waiting 0.0" in text and "gateway_big_mail_held_bytes 0.0" in text


def test_metrics_read_the_outbox_and_no_ticket(daemon: Daemon) -> None:
    """A scrape's gauges read what waits in the outbox, not every ticket's index entry
    (the counts /status shows, ~0.1 s at 1,000,000 tickets: closed ones never leave)."""
    who = f"m{uuid.uuid4().hex[:8]}@client.test"
    assert daemon.send(make_mail(sender=who), sender=who)[0] == 250  # a ticket, an ack
    said: list[str] = []

    async def read() -> tuple[dict[str, Any], dict[str, Any]]:
        engine = create_engine(load_config(daemon.config).database_url)
        try:
            everything = await store_status(engine)
            event.listen(engine.sync_engine, "before_cursor_execute", lambda *a: said.append(a[2]))
            return await outbox_status(engine), everything
        finally:
            await engine.dispose()

    gauges, everything = asyncio.run(read())
    assert said and not [s for s in said if "tickets" in s.lower()], said
    assert everything["tenants"]["acme"]["open"] >= 1  # /status still counts them
    assert gauges["pending"] == everything["outbox"]["pending"] >= 1
    assert gauges["oldest_age_seconds"] is not None and gauges["oldest_age_seconds"] >= 0


def test_admin_password_guards_status_and_metrics(tmp_path: Path, clamd: Clamd) -> None:
    hashed = bcrypt.hashpw(b"hunter2", bcrypt.gensalt(rounds=4)).decode()
    d = Daemon(
        tmp_path / "gw", scanner=clamd.address, http_extra=f'admin_password_hash = "{hashed}"'
    ).start()
    try:
        assert _get(d, "/healthz")[0] == 200  # health is for everyone
        for path in ("/status", "/metrics"):
            code, headers, _ = _get(d, path)
            assert code == 401 and headers["WWW-Authenticate"].startswith("Basic")
            assert _get(d, path, "admin:wrong")[0] == 401
            assert _get(d, path, "root:hunter2")[0] == 401
            assert _get(d, path, "admin:hunter2")[0] == 200
    finally:
        d.stop()


def test_healthz_answers_while_the_scanner_is_frozen(tmp_path: Path, clamd_factory) -> None:  # type: ignore[no-untyped-def]
    import threading

    scanner: Clamd = clamd_factory()
    d = Daemon(tmp_path / "gw", scanner=scanner.address, scan_deadline=4).start()
    result: dict[str, tuple[int, str]] = {}
    try:
        scanner.freeze()
        data = make_mail(attachments=[("a.pdf", "application/pdf", b"%PDF-1.4 x" * 100)])
        t = threading.Thread(target=lambda: result.update(r=d.send(data)))
        t.start()
        assert _get(d, "/healthz")[0] == 200
        assert t.is_alive()
        t.join(30)
        assert result["r"][0] == 451
    finally:
        scanner.thaw()
        d.stop()
