"""The smaller defects of issue #16, each reproduced against a running daemon.

Every test here is the attack as an outsider would run it (real SMTP, real
HTTP to ``gateway run``) and asserts that it no longer works.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import weakref
from concurrent.futures import ThreadPoolExecutor
from email import message_from_bytes
from email.policy import default
from html import unescape
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import bcrypt
import pytest

from routing.secrets import load_keyring
from tests.daemon import Daemon
from tests.mail import make_mail
from tests.test_web_client import solve


def _cleartext_account(home: Path, host: str) -> str:
    secret = load_keyring(home / "var" / "keys.toml").encrypt(
        "hunter2", tenant="acme", field="password"
    )
    return f"""
[tenants.outbound]
host = "{host}"
security = "none"
username = "acme"
password = "{secret}"
"""


def _ticket(d: Daemon, who: str) -> None:
    code, text = d.send(make_mail(sender=who, subject="Hello"), sender=who)
    assert code == 250, text


def test_a_password_in_clear_to_another_host_is_refused(tmp_path: Path) -> None:
    """smtplib would send AUTH PLAIN (the password in base64) over plain TCP."""
    home = tmp_path / "gw"
    d = Daemon(home, acme_extra=_cleartext_account(home, "smtp.example.net"))
    check = subprocess.run(
        [sys.executable, "-m", "gateway", "config", "check", str(d.config)],
        capture_output=True,
        text=True,
        cwd=home,
    )
    assert check.returncode != 0
    assert "tenants[0].outbound.security" in check.stderr and "127.0.0.1" in check.stderr
    with pytest.raises(RuntimeError, match=r"outbound\.security"):
        d.start()
    assert d.proc is not None and d.proc.returncode != 0


def test_a_password_in_clear_to_loopback_stays_allowed(tmp_path: Path) -> None:
    home = tmp_path / "gw"
    d = Daemon(home, acme_extra=_cleartext_account(home, "127.0.0.1"))
    check = subprocess.run(
        [sys.executable, "-m", "gateway", "config", "check", str(d.config)],
        capture_output=True,
        text=True,
        cwd=home,
    )
    assert check.returncode == 0, check.stderr


def test_no_address_reaches_the_log_through_flanker(tmp_path: Path) -> None:
    """A From header only flanker's grammar reads: its lexer logs the rest of the
    header as its token, addresses and all."""
    d = Daemon(tmp_path / "gw").start()
    try:
        raw = (
            b"From: Zed Quux <quux.distinct@client.test> (c\x01 zeta.distinct@client.test)\r\n"
            b"To: support@acme.test\r\n"
            b"Cc: Yve <yve.distinct@client.test>, (x\x01 xan.distinct@client.test)\r\n"
            b"Subject: Hello\r\n"
            b"Message-ID: <flanker-1@client.test>\r\n"
            b"\r\n"
            b"Hello.\r\n"
        )
        code, _ = d.send(raw, sender="quux.distinct@client.test")
        assert code == 250
    finally:
        d.stop()
    log = d.log_path.read_text(encoding="utf-8", errors="replace")
    assert "pipeline" in log or "smtp" in log  # the daemon did log
    for who in ("quux.distinct", "zeta.distinct", "yve.distinct", "xan.distinct"):
        assert who not in log, who


# --- the web side ---------------------------------------------------------------------


class Client:
    """One HTTP/1.1 connection from a chosen loopback address (127.0.0.2 is another
    machine as far as the gateway can tell), keeping the CSRF cookie by hand."""

    def __init__(self, d: Daemon, source: str = "127.0.0.1") -> None:
        self.conn = http.client.HTTPConnection(
            "127.0.0.1", d.http_port, timeout=60, source_address=(source, 0)
        )
        self.cookies: dict[str, str] = {}
        weakref.finalize(self, self.conn.close)

    def request(
        self, method: str, path: str, fields: dict[str, str] | None = None, **headers: str
    ) -> tuple[int, str, http.client.HTTPMessage]:
        body = urllib.parse.urlencode(fields).encode() if fields is not None else None
        head = {k.replace("_", "-"): v for k, v in headers.items()}
        if body is not None:
            head["Content-Type"] = "application/x-www-form-urlencoded"
        if self.cookies:
            head["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        self.conn.request(method, path, body=body, headers=head)
        r = self.conn.getresponse()
        text = r.read().decode(errors="replace")
        for value in r.headers.get_all("Set-Cookie") or []:
            name, _, rest = value.partition("=")
            self.cookies[name] = rest.split(";", 1)[0]
        return r.status, text, r.headers

    def form(self, path: str = "/t/acme/") -> dict[str, str]:
        status, html, _ = self.request("GET", path)
        assert status == 200, html
        fields = {"csrf": re.search(r'name="csrf" value="([^"]+)"', html).group(1)}  # type: ignore[union-attr]
        challenge = re.search(r'data-challenge="([^"]+)"', html)
        if challenge:
            fields["altcha"] = solve(unescape(challenge.group(1)))
        return fields


def _links_to(d: Daemon, who: str) -> int:
    rows = d.query("SELECT body FROM outbox WHERE kind = 'link'")
    return sum(1 for r in rows if message_from_bytes(r[0], policy=default)["To"] == who)


def _wait_for_link(d: Daemon, who: str) -> int:
    deadline = time.monotonic() + 60
    while not _links_to(d, who) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _links_to(d, who)


def test_one_source_cannot_lock_the_tenant_out_of_links(tmp_path: Path) -> None:
    """1,000 link requests from one address, then another client still gets a link."""
    d = Daemon(tmp_path / "gw", http_extra="link_challenge = false").start()
    try:
        _ticket(d, "olga@client.test")
        bot = Client(d)
        fields = bot.form()
        for i in range(1000):
            status, _, _ = bot.request(
                "POST", "/t/acme/link", {**fields, "email": f"bot{i}@client.test"}
            )
            assert status == 200
        other = Client(d, source="127.0.0.2")
        status, _, _ = other.request(
            "POST", "/t/acme/link", {**other.form(), "email": "olga@client.test"}
        )
        assert status == 200
        assert _wait_for_link(d, "olga@client.test") == 1
        # the refused requests were recorded nowhere: the bot's source has its 20
        rows = d.query(
            "SELECT source, count(*) FROM auth_events WHERE kind = 'request'"
            " GROUP BY source ORDER BY 1"
        )
        assert [tuple(r) for r in rows] == [("127.0.0.1", 20), ("127.0.0.2", 1)]
    finally:
        d.kill()


def test_behind_a_proxy_the_world_is_not_loopback(tmp_path: Path) -> None:
    """A reverse proxy on this host: every request arrives from 127.0.0.1."""
    d = Daemon(tmp_path / "gw", http_extra='trusted_proxies = ["127.0.0.1"]').start()
    try:
        c = Client(d)
        assert c.request("GET", "/status")[0] == 200  # the proxy host itself
        for xff in ("203.0.113.7", "127.0.0.1, 203.0.113.7", "203.0.113.7, 127.0.0.1"):
            assert c.request("GET", "/status", X_Forwarded_For=xff)[0] == 403, xff
            assert c.request("GET", "/metrics", X_Forwarded_For=xff)[0] == 403, xff
        assert c.request("GET", "/healthz", X_Forwarded_For="203.0.113.7")[0] == 200

        # The per-source link limit is per client again, not one budget for all.
        _ticket(d, "pia@client.test")
        for i in range(25):
            c.request(
                "POST",
                "/t/acme/link",
                {**c.form(), "email": f"bot{i}@client.test"},
                X_Forwarded_For="198.51.100.1",
            )
        status, _, _ = c.request(
            "POST",
            "/t/acme/link",
            {**c.form(), "email": "pia@client.test"},
            X_Forwarded_For="203.0.113.8, 198.51.100.2",  # the client wrote the first
        )
        assert status == 200
        assert _wait_for_link(d, "pia@client.test") == 1
        sources = {r[0] for r in d.query("SELECT DISTINCT source FROM auth_events")}
        assert sources == {"198.51.100.1", "198.51.100.2"}
    finally:
        d.kill()


def test_a_proxy_we_were_not_told_about_is_not_loopback_either(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "gw").start()
    try:
        c = Client(d)
        assert c.request("GET", "/status")[0] == 200
        assert c.request("GET", "/status", X_Forwarded_For="203.0.113.7")[0] == 403
        assert c.request("GET", "/metrics", Forwarded="for=203.0.113.7")[0] == 403
    finally:
        d.kill()


def test_admin_guesses_are_throttled_per_source(tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(b"right horse", bcrypt.gensalt(4)).decode()
    d = Daemon(tmp_path / "gw", http_extra=f'admin_password_hash = "{hashed}"').start()
    try:

        def attempt(password: str, source: str = "127.0.0.1") -> int:
            auth = base64.b64encode(f"admin:{password}".encode()).decode()
            return Client(d, source).request("GET", "/status", Authorization=f"Basic {auth}")[0]

        with ThreadPoolExecutor(16) as pool:
            codes = sorted(pool.map(attempt, [f"guess{i}" for i in range(16)]))
        assert codes == [401] * 5 + [429] * 11
        assert attempt("right horse") == 429  # this source is out of tries for now
        assert attempt("right horse", source="127.0.0.2") == 200
    finally:
        d.kill()


def test_bcrypt_runs_in_the_web_apps_own_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not on the default executor, where the pipeline parses large mail."""
    from gateway.web import app as web_app
    from routing.config import HttpSettings

    threads: list[str] = []

    def checkpw(password: bytes, hashed: bytes) -> bool:
        threads.append(threading.current_thread().name)
        return False

    monkeypatch.setattr(web_app.bcrypt, "checkpw", checkpw)
    settings = HttpSettings(
        port=0, admin_password_hash=bcrypt.hashpw(b"x", bcrypt.gensalt(4)).decode()
    )

    async def main() -> int:
        async def status() -> dict[str, str]:
            return {}

        async def nothing() -> None:
            return None

        app = web_app.make_app(settings, status, nothing, dict)
        runner, port = await web_app.start_http(app, "127.0.0.1", 0)
        try:
            auth = base64.b64encode(b"admin:wrong").decode()
            async with aiohttp.ClientSession() as s:
                async with s.get(
                    f"http://127.0.0.1:{port}/status", headers={"Authorization": f"Basic {auth}"}
                ) as r:
                    return r.status
        finally:
            await runner.cleanup()

    assert asyncio.run(main()) == 401
    assert threads and all(t.startswith("admin-bcrypt") for t in threads), threads


def test_every_response_carries_the_security_headers(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "gw", http_extra="link_challenge = false").start()
    try:
        who = "quinn@client.test"
        _ticket(d, who)
        c = Client(d)
        seen = [
            c.request("GET", "/no/such/page"),  # the router's 404
            c.request("GET", "/t/nosuch/"),  # ours, raised
            c.request("GET", "/t/acme/tickets"),  # 303 to the form
        ]
        c.request("POST", "/t/acme/link", {**c.form(), "email": who})
        assert _wait_for_link(d, who) == 1
        link = urllib.parse.urlsplit(_newest_link(d, who))
        status, html, _ = c.request("GET", f"{link.path}?{link.query}")
        assert status == 200
        fields = dict(re.findall(r'name="(s|v|csrf)" value="([^"]*)"', html))
        signed_in = c.request("POST", link.path, fields)
        assert "gw_session" in (signed_in[2].get("Set-Cookie") or "")  # the session's 303
        seen.append(signed_in)
        assert [s[0] for s in seen] == [404, 404, 303, 303]
        for _, _, headers in seen:
            assert "default-src 'none'" in headers["Content-Security-Policy"]
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert headers["Referrer-Policy"] == "no-referrer"
            assert headers["Cache-Control"] == "no-store"
    finally:
        d.kill()


def _newest_link(d: Daemon, who: str) -> str:
    for row in d.query("SELECT body FROM outbox WHERE kind = 'link' ORDER BY id DESC"):
        msg = message_from_bytes(row[0], policy=default)
        if msg["To"] == who:
            return re.search(r"https?://\S+", msg.get_content()).group(0)  # type: ignore[union-attr]
    raise AssertionError(who)


def test_the_link_form_wants_a_proof_of_work(tmp_path: Path) -> None:
    """On by default: a bot posting the form without solving gets nothing sent."""
    d = Daemon(tmp_path / "gw").start()
    try:
        who = "rita@client.test"
        _ticket(d, who)
        c = Client(d)
        status, html, headers = c.request("GET", "/t/acme/")
        assert status == 200
        assert 'src="/static/challenge.js"' in html and "<noscript>" in html
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        js = c.request("GET", "/static/challenge.js")
        assert js[0] == 200 and "crypto.subtle" in js[1]

        fields = c.form()
        unsolved = {"csrf": fields["csrf"], "email": who}
        assert c.request("POST", "/t/acme/link", unsolved)[0] == 403
        wrong = json.loads(base64.b64decode(fields["altcha"]))
        wrong["number"] += 1
        forged = base64.b64encode(json.dumps(wrong).encode()).decode()
        assert c.request("POST", "/t/acme/link", {**unsolved, "altcha": forged})[0] == 403
        assert c.request("POST", "/t/acme/link", {**unsolved, "altcha": fields["altcha"]})[0] == 200
        assert _wait_for_link(d, who) == 1
        # a solution is good once
        assert c.request("POST", "/t/acme/link", {**unsolved, "altcha": fields["altcha"]})[0] == 403
        assert d.query("SELECT count(*) FROM auth_events WHERE kind = 'request'")[0][0] == 1
    finally:
        d.kill()


def test_known_and_unknown_addresses_are_answered_before_any_lookup(tmp_path: Path) -> None:
    """Structurally: the store is not touched before the answer, for either address.
    The writer here holds every unit of work until the test lets it go."""
    from gateway.web.pages import SiteParts
    from gateway.web.signin import SignIn
    from routing.config import load_config

    (tmp_path / "gateway.toml").write_text(
        '[http]\nlisten = "127.0.0.1:0"\nlink_challenge = false\n'
        '[[tenants]]\nslug = "acme"\naddresses = ["support@acme.test"]\n',
        encoding="utf-8",
    )
    config = load_config(tmp_path / "gateway.toml")

    class HeldWriter:
        def __init__(self) -> None:
            self.release = asyncio.Event()
            self.waiting = 0
            self.done = 0

        async def submit(self, work: Any) -> bool:
            self.waiting += 1
            await self.release.wait()
            self.done += 1
            return False

    async def main() -> tuple[list[int], int, int]:
        writer = HeldWriter()
        parts = SiteParts(config, writer, None, None, None, lambda: None)  # type: ignore[arg-type]
        site = SignIn(parts)
        app = aiohttp.web.Application()
        app.router.add_post("/t/{slug}/link", site.request_link)
        runner = aiohttp.web.AppRunner(app)
        await runner.setup()
        server = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
        await server.start()
        port = runner.addresses[0][1]
        codes = []
        async with aiohttp.ClientSession() as s:
            for who in ("known@client.test", "nobody@client.test"):
                async with s.post(
                    f"http://127.0.0.1:{port}/t/acme/link",
                    data={"email": who, "csrf": "c"},
                    headers={"Cookie": "gw_csrf=c"},
                ) as r:
                    codes.append(r.status)
        answered_with_work_held = writer.waiting - writer.done
        writer.release.set()
        await site.drain()
        await runner.cleanup()
        return codes, answered_with_work_held, writer.done

    codes, held, done = asyncio.run(main())
    assert codes == [200, 200]
    assert held == 2 and done == 2  # both answered while their lookups waited


def test_trusted_proxies_must_be_addresses_or_networks(tmp_path: Path) -> None:
    from routing.config import load_config
    from routing.errors import ConfigError

    path = tmp_path / "gateway.toml"
    tenant = '[[tenants]]\nslug = "acme"\naddresses = ["support@acme.test"]\n'
    path.write_text(
        '[http]\ntrusted_proxies = ["127.0.0.1", "10.0.0.0/8", "::1"]\n' + tenant,
        encoding="utf-8",
    )
    assert load_config(path).http.trusted_proxies == ("127.0.0.1", "10.0.0.0/8", "::1")
    path.write_text('[http]\ntrusted_proxies = ["proxy.local", 5]\n' + tenant, encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "'proxy.local'" in str(e.value) and "5" in str(e.value)
