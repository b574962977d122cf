"""Where people read: the reply first, its quoted history folded (issue #19).

On the client's web page the history sits in a <details> element (a native,
keyboard-usable toggle) below what the sender wrote this time; `gateway
tickets show` prints the reply and a line counting the folded quoted lines,
and `--quoted` prints the whole message.
"""

from __future__ import annotations

import html as htmllib
import re

from tests.daemon import Daemon
from tests.mail import make_mail
from tests.test_web_client import (  # noqa: F401 (site is a fixture)
    Browser,
    _link,
    _request_link,
    _sign_in,
    site,
)

REPLY = "The serial number is XK-4471-B."
BODY = (
    f"Hello,\n\n{REPLY}\n\nAnna\n\n"
    "Am Mo., 4. März 2024 um 10:15 Uhr schrieb Support <\nsupport@acme.test>:\n\n"
    "> Please send us the serial number of the printer.\n"
    "> Kind regards\n"
)


def _client_page(site: Daemon, who: str, subject: str, body: str) -> tuple[str, str]:  # noqa: F811
    """(ref, the ticket page its client sees) of a new ticket from ``who``."""
    code, text = site.send(make_mail(sender=who, subject=subject, body=body), sender=who)
    assert code == 250, text
    ref = site.ref(text)
    b = Browser(site)
    assert _request_link(b, who)[0] == 200
    assert _sign_in(b, _link(site, who))[0] == 303
    code, page, _ = b.get(f"/t/acme/tickets/{ref}")
    assert code == 200
    return ref, page


def test_client_page_folds_the_quoted_history(site: Daemon) -> None:  # noqa: F811
    _, page = _client_page(site, "anna@client.test", "Printer", BODY)
    shown = re.search(r'<div class="message-text">(.*?)</div>', page, re.DOTALL)
    assert shown and htmllib.unescape(shown.group(1)) == f"Hello,\n\n{REPLY}\n\nAnna"
    folded = re.search(r'<details class="message-quoted">(.*?)</details>', page, re.DOTALL)
    assert folded, page
    assert re.search(r"<summary>Show quoted text</summary>", folded.group(1))
    inner = htmllib.unescape(folded.group(1))
    assert "> Please send us the serial number" in inner and "schrieb Support" in inner
    assert REPLY not in inner


def test_tickets_show_folds_and_quoted_shows_all(daemon: Daemon) -> None:
    carl = "carl@client.test"
    code, text = daemon.send(make_mail(sender=carl, subject="Folding", body=BODY), sender=carl)
    assert code == 250, text
    ref = daemon.ref(text)
    plain = daemon.cli("tickets", "show", ref)
    assert plain.returncode == 0, plain.stderr
    out = plain.stdout.decode()
    assert REPLY in out and "Please send us the serial number" not in out
    assert "[4 quoted lines folded; --quoted shows them]" in out
    whole = daemon.cli("tickets", "show", ref, "--quoted").stdout.decode()
    assert REPLY in whole and "> Please send us the serial number" in whole
    assert "folded" not in whole


FORWARD = (
    "Please take this one.\n\n-----Original Message-----\nFrom: Bob <bob@client.test>\n"
    "Sent: Friday, December 4, 2026 10:00 AM\nTo: Dana <dana@client.test>\n"
    "Subject: printer broken\n\nOur printer on floor 3 prints blank pages since Monday.\n"
)


def test_a_forwarded_mail_is_shown_not_folded(site: Daemon) -> None:  # noqa: F811
    """Outlook's separator above a forwarded mail is the one above a quote: the subject's
    "FW:" tells the page and `tickets show` that the mail below it is to be read."""
    ref, page = _client_page(site, "dana@client.test", "FW: printer broken", FORWARD)
    shown = re.search(r'<div class="message-text">(.*?)</div>', page, re.DOTALL)
    assert shown, page
    assert "prints blank pages since Monday" in htmllib.unescape(shown.group(1))
    assert "message-quoted" not in page
    out = site.cli("tickets", "show", ref).stdout.decode()
    assert "prints blank pages since Monday" in out and "folded" not in out
