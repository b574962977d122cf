"""Files both ways, and mail that can be read raw (issue 17), through real SMTP.

A client's mail with a PDF, an inline screenshot and a file too big for the notice
goes into a running daemon (a real clamd scans it); the agent's notice, taken from
the tenant's real SMTP account (tests/smtp_sink.py), carries the stored files byte
for byte, the screenshot inline by its Content-ID, and names the big one with its
size and the link to the ticket's page. The agent answers from a mail client with
HTML, a quoted notice, an inline image and guide.pdf: the client gets all of it but
the quote, byte for byte. Every mail in the sink is 7bit/8bit with whole links; the
sign-in link copied from the raw mail signs in.
"""

from __future__ import annotations

import os
import re
import urllib.parse
import uuid
from collections.abc import Iterator
from email import message_from_bytes
from email.message import EmailMessage, Message
from email.policy import SMTP, default
from email.utils import getaddresses
from pathlib import Path

import pytest

from routing.secrets import load_keyring
from tests.clamd_harness import Clamd
from tests.daemon import Daemon
from tests.ports import free_port
from tests.smtp_sink import Received, Sink
from tests.test_web_client import Browser, _request_link, _sign_in

PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(3000)
PDF = b"%PDF-1.4\n" + os.urandom(6000) + b"\n%%EOF\n"
BIG = os.urandom(40 * 1024)  # over the 32 KiB this gateway's notices may carry


@pytest.fixture
def account(tmp_path: Path) -> Iterator[Sink]:
    sink = Sink(tmp_path).start()
    yield sink
    sink.stop()


@pytest.fixture
def gateway(tmp_path: Path, account: Sink, clamd: Clamd) -> Iterator[Daemon]:
    home = tmp_path / "gw"
    keys = load_keyring(home / "var" / "keys.toml")
    secret = keys.encrypt(account.password, tenant="acme", field="password")
    d = Daemon(
        home,
        scanner=clamd.address,
        acme_extra=f"""
[tenants.outbound]
host = "127.0.0.1"
port = {account.port}
security = "starttls"
username = "{account.user}"
password = "{secret}"
ca_file = "{account.ca_file}"
""",
        extra="""
[outbound]
retry_base = 0.2
retry_max = 1
poll_interval = 0.1
timeout = 10
notice_attachments_max = "32 KiB"
""",
        http_extra="insecure_cookies = true",
    )
    # A known web port, so the links we mail (public_url) can be fetched.
    port = free_port()
    d.config.write_text(
        d.config.read_text().replace(
            '[http]\nlisten = "127.0.0.1:0"',
            f'[http]\nlisten = "127.0.0.1:{port}"\npublic_url = "http://127.0.0.1:{port}"',
        )
    )
    d.start()
    yield d
    d.stop()


def _to(addr: str, prefix: str):  # type: ignore[no-untyped-def]
    return lambda r: addr in r.rcpt_tos and r.msg["Message-ID"].startswith(f"<{prefix}.")


def _files(msg: Message) -> dict[str, Message]:
    return {p.get_filename(): p for p in msg.walk() if p.get_filename()}


def _assert_readable(mail: Received) -> None:
    """7bit/8bit text, lines under SMTP's 998 octets, every link whole on one line."""
    lines = mail.data.split(b"\r\n")
    assert max(len(line) for line in lines) <= 998
    msg = message_from_bytes(mail.data, policy=default)
    for part in msg.walk():
        if part.get_content_maintype() == "text" and not part.get_filename():
            assert part["Content-Transfer-Encoding"] in ("7bit", "8bit"), part
    for link in re.findall(rb"https?://\S+", mail.data):
        assert not link.endswith(b"=") and b"=3D" not in link, link


def test_files_travel_both_ways_byte_exact(gateway: Daemon, account: Sink) -> None:
    who = f"carol.{uuid.uuid4().hex[:6]}@client.test"
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = f"Carol <{who}>", "support@acme.test", "Jam"
    mail["Message-ID"] = f"<{uuid.uuid4().hex}@client.test>"
    mail.set_content("See the attached screenshot, the log and the big dump.\n")
    mail.add_alternative('<p>See the screenshot:</p><img src="cid:shot1@client.test">', "html")
    mail.get_payload()[1].add_related(PNG, "image", "png", cid="<shot1@client.test>")
    mail.add_attachment(PDF, maintype="application", subtype="pdf", filename="log.pdf")
    mail.add_attachment(BIG, maintype="application", subtype="octet-stream", filename="dump.bin")
    code, text = gateway.send(mail.as_bytes(policy=SMTP), sender=who)
    assert code == 250, text
    ref = gateway.ref(text)
    page = f"http://127.0.0.1:{gateway.http_port}/a/acme/t/{ref}"

    (notice,) = account.wait_for(_to("alice@acme.test", "notice"))
    n = notice.msg
    files = _files(n)
    assert files["log.pdf"].get_content() == PDF
    shot = next(p for p in n.walk() if p["Content-ID"] == "<shot1@client.test>")
    assert shot.get_content() == PNG and shot.get_content_disposition() == "inline"
    related = next(p for p in n.walk() if p.get_content_type() == "multipart/related")
    assert shot in related.get_payload()
    html = n.get_body(("html",)).get_content()
    assert 'src="cid:shot1@client.test"' in html and "See the screenshot" in html
    assert "dump.bin" not in files  # over the notice's limit: named, with the link
    body = n.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert "dump.bin (40.0 KiB; over this mail's limit of 32.0 KiB" in body, body
    assert f"\n{page}\n" in body and body.count(page) == 2  # the list's and every notice's
    _assert_readable(notice)

    # Alice answers from her mail client: HTML with the notice quoted below, a
    # command on top, an inline picture and guide.pdf.
    reply = EmailMessage()
    reply["From"], reply["To"] = "Alice Agent <alice@acme.test>", n["Reply-To"]
    reply["Subject"], reply["In-Reply-To"] = f"Re: {n['Subject']}", n["Message-ID"]
    reply["Message-ID"] = f"<{uuid.uuid4().hex}@acme.test>"
    quoted = "\n".join("> " + line for line in body.splitlines())
    reply.set_content(
        f"#priority high\n\nHello Carol, please follow the attached guide.\n\n"
        f"On Mon, Carol via Acme Support wrote:\n{quoted}\n"
    )
    reply.add_alternative(
        '<div dir="ltr"><div>#priority high</div><div>Hello Carol, please follow the '
        '<b>attached guide</b>.</div><img src="cid:tray@acme.test"></div>'
        '<div class="gmail_quote"><div class="gmail_attr">On Mon, Carol wrote:</div>'
        "<blockquote>QUOTED-NOTICE See the attached screenshot</blockquote></div>",
        "html",
    )
    reply.get_payload()[1].add_related(PNG[::-1], "image", "png", cid="<tray@acme.test>")
    reply.add_attachment(PDF[::-1], maintype="application", subtype="pdf", filename="guide.pdf")
    to = getaddresses([str(n["Reply-To"])])[0][1]
    code, text = gateway.send(reply.as_bytes(policy=SMTP), to=to, sender="alice@acme.test")
    assert code == 250 and gateway.ref(text) == ref, text

    (relay,) = account.wait_for(_to(who, "reply"))
    r = relay.msg
    assert _files(r)["guide.pdf"].get_content() == PDF[::-1]
    tray = next(p for p in r.walk() if p["Content-ID"] == "<tray@acme.test>")
    assert tray.get_content() == PNG[::-1]
    alternative = next(p for p in r.walk() if p.get_content_type() == "multipart/alternative")
    assert [p.get_content_type() for p in alternative.iter_parts()] == ["text/plain", "text/html"]
    html = r.get_body(("html",)).get_content()
    assert "<b>attached guide</b>" in html and 'src="cid:tray@acme.test"' in html
    assert "QUOTED-NOTICE" not in html and "wrote:" not in html and "#priority" not in html
    text = r.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert "please follow the attached guide" in text
    assert "See the attached screenshot" not in text and "#priority" not in text
    _assert_readable(relay)
    assert gateway.query("SELECT priority FROM tickets")[0][0] == "high"

    # A quote the text shows but no HTML marker does (a client we do not know):
    # the HTML could carry the notice, so the client gets the text alone. HTML with
    # no quote at all goes as it is. An answer below the quote (Thunderbird's default):
    # the HTML cut at its marker holds nothing, so the text alone, without the quote.
    for n_relay, (plain, markup) in enumerate(
        [
            (f"Any news?\n\nOn Mon, Carol wrote:\n{quoted}\n", "<p>Any news?</p><p>QUOTED</p>"),
            ("One more thing.\n", "<p>One more <i>thing</i>.</p>"),
            (
                f"On Mon, Carol wrote:\n{quoted}\n\nBottom answer.\n",
                '<div class="moz-cite-prefix">On Mon, Carol wrote:<br></div>'
                '<blockquote type="cite">QUOTED</blockquote><p>Bottom <i>answer</i>.</p>',
            ),
        ],
        start=2,
    ):
        again = EmailMessage()
        again["From"], again["To"], again["Subject"] = "alice@acme.test", to, "Re: x"
        again.set_content(plain)
        again.add_alternative(markup, "html")
        code, text = gateway.send(again.as_bytes(policy=SMTP), to=to, sender="alice@acme.test")
        assert code == 250, text
        relays = account.wait_for(_to(who, "reply"), count=n_relay)
        last = relays[n_relay - 1].msg
        html_part = last.get_body(("html",))
        if n_relay == 2:
            assert html_part is None and "QUOTED" not in str(last)
        elif n_relay == 3:
            assert html_part is not None and "<i>thing</i>" in html_part.get_content()
        else:
            assert html_part is None and "QUOTED" not in str(last)
            assert "Bottom answer." in last.get_body(("plain",)).get_content()


def test_every_mail_is_readable_raw_and_the_link_works(gateway: Daemon, account: Sink) -> None:
    """The acknowledgement and the sign-in mail as a plain sink holds them: the link
    cut out of the raw bytes (no decoding) signs the client in."""
    who = "dora@client.test"
    body = "Grüße aus Köln, the printer is jammed. " * 3
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = who, "support@acme.test", "Drucker"
    mail["Message-ID"] = f"<{uuid.uuid4().hex}@client.test>"
    mail.set_content(body)
    code, text = gateway.send(mail.as_bytes(policy=SMTP), sender=who)
    assert code == 250, text
    (ack,) = account.wait_for(_to(who, "ack"))
    (notice,) = account.wait_for(_to("alice@acme.test", "notice"))
    assert b"Content-Transfer-Encoding: 8bit" in notice.data  # UTF-8 as it is
    assert "Grüße aus Köln".encode() in notice.data
    for m in (ack, notice):
        _assert_readable(m)

    b = Browser(gateway)
    code, _ = _request_link(b, who)
    assert code == 200
    (link_mail,) = account.wait_for(_to(who, "link"))
    _assert_readable(link_mail)
    assert b"quoted-printable" not in link_mail.data
    raw = re.search(rb"^(https?://\S+)\r$", link_mail.data, re.MULTILINE)
    assert raw, link_mail.data
    link = raw.group(1).decode()
    assert urllib.parse.urlsplit(link).netloc == f"127.0.0.1:{gateway.http_port}"
    code, headers = _sign_in(b, link)
    assert code == 303 and headers["Location"].endswith("/t/acme/tickets")
