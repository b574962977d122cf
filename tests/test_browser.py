"""The clients' pages in a real headless Chromium (Debian's, driven by Playwright).

A client asks for a link, reads it from the mail the gateway queued, opens
it, continues, sees exactly their tickets, replies, and sees the reply on the
ticket. Each page is kept as a screenshot in test-artifacts/screenshots/.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.daemon import Daemon
from tests.mail import make_mail
from tests.test_web_client import _link

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
# What the machine's own probe found Chromium needs here as root, offline.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: apt-get install chromium (make test does)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


def test_sign_in_read_and_reply_in_chromium(tmp_path: Path, browser: Browser) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    d = Daemon(tmp_path / "gw").start()
    try:
        who = "carol@client.test"
        code, text = d.send(
            make_mail(sender=f"Carol <{who}>", subject="Printer jammed"), sender=who
        )
        assert code == 250
        ref = d.ref(text)
        other = d.send(make_mail(sender="dave@client.test", subject="Dave's secret"))[1]
        other_ref = d.ref(other)

        context = browser.new_context(locale="de-DE")
        page = context.new_page()
        base = f"http://127.0.0.1:{d.http_port}"
        page.goto(f"{base}/t/acme/")
        page.screenshot(path=str(SHOTS / "1-form.png"), full_page=True)
        assert page.locator("html").get_attribute("lang") == "de"
        page.fill("input[name=email]", who)
        page.locator("form button, form input[type=submit]").first.click()
        page.wait_for_url(f"{base}/t/acme/link")  # after the page's proof of work
        page.screenshot(path=str(SHOTS / "2-sent.png"), full_page=True)

        page.goto(_link(d, who))
        page.screenshot(path=str(SHOTS / "3-continue.png"), full_page=True)
        page.locator("form button, form input[type=submit]").first.click()
        page.wait_for_url(f"{base}/t/acme/tickets")
        page.screenshot(path=str(SHOTS / "4-tickets.png"), full_page=True)
        body = page.content()
        assert ref in body and "Printer jammed" in body
        assert other_ref not in body and "secret" not in body
        cookies = {c["name"]: c for c in context.cookies()}
        assert cookies["gw_session"]["httpOnly"] and cookies["gw_session"]["sameSite"] == "Lax"

        page.click(f"a[href='/t/acme/tickets/{ref}']")
        page.wait_for_url(f"{base}/t/acme/tickets/{ref}")
        assert "floor 3" in page.content()
        page.fill("textarea[name=text]", "Still jammed, sorry!")
        page.locator(
            "form[action$='/reply'] button, form[action$='/reply'] input[type=submit]"
        ).first.click()
        page.wait_for_url(f"{base}/t/acme/tickets/{ref}")
        page.screenshot(path=str(SHOTS / "5-ticket.png"), full_page=True)
        assert "Still jammed, sorry!" in page.content()

        rows = d.query(
            "SELECT m.source FROM messages m JOIN tickets t ON t.id = m.ticket_id "
            "WHERE t.ref = ? ORDER BY m.id",
            ref,
        )
        assert [r[0] for r in rows] == ["smtp", "web"]
        # Guessing the other client's ticket URL shows nothing.
        response = page.goto(f"{base}/t/acme/tickets/{other_ref}")
        assert response is not None and response.status == 404
        context.close()
    finally:
        d.stop()
