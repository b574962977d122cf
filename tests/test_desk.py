"""The agents' desk at /a/<tenant>/ over real HTTP to a running daemon (both engines).

Everything is real: clients' mail over SMTP, attachments scanned by the session's
clamd, the sign-in link mailed through the tenant's SMTP account (tests/smtp_sink.py)
and read from there, the link spent by a POST. A cookie-keeping HTTP client plays the
browser (tests/test_desk_browser.py does it in Chromium, with axe-core).
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.web.desk_view import ListQuery, due_text, page_of, sla_of
from gateway.web.i18n import translator
from outbound.sla_watch import ticket_sla
from routing.config import Tenant
from routing.secrets import load_keyring
from routing.sla import Calendar, SlaPolicy, SlaSettings
from tests.clamd_harness import Clamd
from tests.daemon import Daemon
from tests.mail import make_mail
from tests.smtp_sink import Sink
from tests.test_web_client import Browser, wait_for_requests

PDF = b"%PDF-1.4\n% the desk test's attachment\n%%EOF\n"

RULES_AND_SLA = """
aliases = ["alice.home@private.test"]

[[tenants.agents]]
address = "bob@acme.test"
name = "Bob Agent"

[[tenants.queues]]
name = "general"

[[tenants.queues]]
name = "billing"

[[tenants.rules]]
name = "invoices"
when = {{ to = "billing@acme.test", new_ticket = true }}
then = {{ queue = "billing", tags = ["invoice"] }}

[[tenants.rules]]
name = "vip"
when = {{ from_domain = ["bigcorp.example"], new_ticket = true }}
then = {{ priority = "high", assign = "alice@acme.test" }}

[tenants.sla]
calendar = "24x7"
first_response = "4h"
resolution = "2d"
warn_before = "30m"

[[tenants.sla.targets]]
priority = "high"
first_response = "1h"

[tenants.outbound]
host = "127.0.0.1"
port = {port}
security = "starttls"
username = "{user}"
password = "{secret}"
ca_file = "{ca}"
"""

GLOBEX_AGENT_AND_OUTBOX = """
[[tenants.agents]]
address = "gina@globex.test"

[outbound]
retry_base = 0.2
retry_max = 1
poll_interval = 0.1
timeout = 10
"""


def desk_daemon(home: Path, sink: Sink, clamd: Clamd) -> Daemon:
    """A gateway with two acme agents (alice with an alias), queues, rules, an SLA, a
    globex agent, and the acme account at ``sink``: the desk tests' one setup."""
    secret = load_keyring(home / "var" / "keys.toml").encrypt(
        sink.password, tenant="acme", field="password"
    )
    acme = RULES_AND_SLA.format(port=sink.port, user=sink.user, secret=secret, ca=sink.ca_file)
    return Daemon(
        home,
        scanner=clamd.address,
        acme_extra=acme,
        extra=GLOBEX_AGENT_AND_OUTBOX,
        http_extra="insecure_cookies = true",
    )


def send(d: Daemon, who: str, subject: str, **kw: Any) -> str:
    """A client's new ticket over SMTP; its reference."""
    bare = who.rsplit("<", 1)[-1].rstrip(">")
    to = kw.get("to", "support@acme.test")
    code, text = d.send(make_mail(sender=who, subject=subject, **kw), to=to, sender=bare)
    assert code == 250, text
    return d.ref(text)


_SIGN_IN = re.compile(r"https?://\S+/a/\S+[?&]s=[0-9a-f]+\S*")


def _text(r: Any) -> str:
    """A received mail's plain text (a notice with files is multipart)."""
    body = r.msg.get_body(("plain",))
    return body.get_content() if body is not None else ""


def desk_link(sink: Sink, who: str, after: int = 0) -> str:
    """The desk link mailed to ``who`` (through the tenant's SMTP account)."""
    (mail,) = sink.wait_for(
        lambda r: who in r.rcpt_tos and _SIGN_IN.search(_text(r)), count=after + 1
    )[after:]  # a sign-in mail, not a notice (which links the ticket's desk page)
    m = _SIGN_IN.search(_text(mail))
    assert m, _text(mail)
    return m.group(0)


def ask_link(b: Browser, slug: str, who: str) -> str:
    before = int(b.d.query("SELECT count(*) FROM auth_events WHERE kind = 'request'")[0][0])
    fields = b.form(f"/{slug}/")
    code, html, _ = b.post(f"/{slug}/link", {"email": who, **fields})
    assert code == 200, html
    wait_for_requests(b.d, before + 1)
    return html


def sign_in(b: Browser, link: str) -> tuple[int, dict[str, str]]:
    """Open the link (the continue page) and press Continue, as a person would."""
    path = link.split(str(b.d.http_port), 1)[1]
    code, html, _ = b.get(path)
    assert code == 200, html
    fields = dict(re.findall(r'name="(csrf|s|v)" value="([^"]*)"', html))
    action = re.search(r'<form method="post" action="([^"]+)"', html).group(1)  # type: ignore[union-attr]
    code, _, headers = b.post(action, fields)
    return code, headers


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[Sink]:
    s = Sink(tmp_path).start()
    yield s
    s.stop()


@pytest.fixture
def desk(tmp_path: Path, sink: Sink, clamd: Clamd) -> Iterator[Daemon]:
    d = desk_daemon(tmp_path / "gw", sink, clamd).start()
    yield d
    d.stop()


def test_an_agent_signs_in_lists_filters_opens_and_downloads(desk: Daemon, sink: Sink) -> None:
    d = desk
    carol = send(
        d, "Carol <carol@client.test>", "Printer jammed",
        body="The printer on floor 3 is out of toner.\n\nOn Monday Carol wrote:\n> old history",
        attachments=[("jam report.pdf", "application/pdf", PDF)],
        message_id="<carol-1@client.test>",
    )  # fmt: skip
    vip = send(d, "vic@bigcorp.example", "VIP outage")
    bill = send(d, "dora@client.test", "Invoice 7 wrong", to="billing@acme.test")

    b = Browser(d)
    # Alice signs in through her alias: the link goes there, the session is hers.
    page = ask_link(b, "a/acme", "alice.home@private.test")
    assert "alice.home@private.test" in page
    code, headers = sign_in(b, desk_link(sink, "alice.home@private.test"))
    assert code == 303 and headers["Location"] == "/a/acme/t/"
    assert "gw_agent" in headers["Set-Cookie"] and "Path=/a/acme/" in headers["Set-Cookie"]

    code, html, _ = b.get("/a/acme/t/")  # "mine": only what is assigned to Alice
    assert code == 200 and vip in html and carol not in html and bill not in html
    assert "Alice Agent" in html and "in 1 h" in html  # the high-priority target: 1 h

    _, html, _ = b.get("/a/acme/t/?list=unassigned")
    assert carol in html and bill in html and vip not in html
    _, html, _ = b.get("/a/acme/t/?list=open")
    # Sorted by due time: the 1-hour target first, then the 4-hour ones.
    assert html.index(vip) < html.index(carol) and html.index(vip) < html.index(bill)
    assert "carol@client.test" in html and "in 4 h" in html
    _, html, _ = b.get("/a/acme/t/?list=open&queue=billing")
    assert bill in html and carol not in html and vip not in html
    _, html, _ = b.get("/a/acme/t/?list=open&tag=invoice")
    assert bill in html and carol not in html
    _, html, _ = b.get("/a/acme/t/?list=open&priority=high")
    assert vip in html and bill not in html
    _, html, _ = b.get("/a/acme/t/?list=closed")
    assert carol not in html
    _, html, _ = b.get("/a/acme/t/?list=nonsense&page=x&priority=<b>")  # a clear default
    assert vip in html

    # The search box (store/search.py): text, sender and ref, with the filters on top.
    _, html, _ = b.get("/a/acme/t/?q=Toner+floor")
    assert carol in html and vip not in html and bill not in html
    _, html, _ = b.get("/a/acme/t/?q=dora%40client.test")
    assert bill in html and carol not in html
    _, html, _ = b.get(f"/a/acme/t/?q={vip.lower()}")
    assert vip in html and carol not in html
    _, html, _ = b.get("/a/acme/t/?q=toner&priority=high")
    assert carol not in html
    code, html, _ = b.get("/a/acme/t/?q=%22%29+OR+NEAR%28*")  # FTS syntax is just words
    assert code == 200 and carol not in html

    # Alice notes on Carol's ticket by mail, to the address the desk shows her; an
    # outsider answers Carol's mail (References); a hostile subject stays text.
    code, html, _ = b.get(f"/a/acme/t/{carol}")
    reply_to = re.search(r'href="mailto:([^?"]+)\?', html).group(1)  # type: ignore[union-attr]
    note = make_mail(sender="alice@acme.test", to=reply_to, subject=f"Re: [{carol}]",
                     body="#note\nToner is on order.")  # fmt: skip
    assert d.send(note, to=reply_to, sender="alice@acme.test")[0] == 250
    send(
        d, "mallory@elsewhere.test", "Re: Printer jammed", body="Mine is broken too.",
        headers={"References": "<carol-1@client.test>"},
    )  # fmt: skip
    evil = send(d, "eve@client.test", "<script>alert(1)</script>")
    _, html, _ = b.get("/a/acme/t/?list=open")
    assert evil in html and "<script>alert" not in html and "&lt;script&gt;" in html

    code, html, _ = b.get(f"/a/acme/t/{carol}")
    assert code == 200 and "floor 3" in html
    assert "Toner is on order." in html and "Internal note" in html
    assert "Mine is broken too." in html and "Not a participant" in html
    assert "<details" in html and "old history" in html  # quoted text, folded
    assert re.search(r'href="mailto:support\+t\d+-a[^@"]+@acme\.test\?subject=', html)
    assert "#close" in html and "#assign alice@acme.test" in html
    assert "ticket.created" in html  # the audit trail
    assert "First response" in html  # the SLA clocks
    url = re.search(r'href="(/a/acme/t/[^"]+/files/[0-9a-f]{64})"', html).group(1)  # type: ignore[union-attr]
    req = b.opener.open(b.base + url, timeout=30)
    assert req.read() == PDF
    assert "jam%20report.pdf" in req.headers["Content-Disposition"]
    assert b.get(f"/a/acme/t/{carol}/files/{'0' * 64}")[0] == 404
    assert b.get("/a/acme/t/ACME-999")[0] == 404
    viewed = "SELECT count(*) FROM audit_events WHERE action = 'desk.ticket_viewed'"
    assert d.count_reaching(viewed, 1) >= 1  # the view's row is written in a batch
    actions = [r[0] for r in d.query("SELECT action FROM audit_events ORDER BY id")]
    assert "desk.ticket_viewed" in actions and "desk.attachment_downloaded" in actions

    # Signed out, the same cookie opens nothing.
    csrf = b.form("/a/acme/t/")["csrf"]
    assert b.post("/a/acme/logout", {"csrf": csrf})[0] == 303
    assert b.get("/a/acme/t/")[0] == 303


def test_nobody_else_gets_the_desk(desk: Daemon, sink: Sink) -> None:
    d = desk
    ref = send(d, "carol@client.test", "Carol's ticket")

    # A client signs in to her own pages; her session opens no desk page.
    client = Browser(d)
    before = int(d.query("SELECT count(*) FROM auth_events WHERE kind = 'request'")[0][0])
    fields = client.form("/t/acme/")
    assert client.post("/t/acme/link", {"email": "carol@client.test", **fields})[0] == 200
    wait_for_requests(d, before + 1)
    link = _outbox_link(d, "carol@client.test")
    code, _ = sign_in(client, link)
    assert code == 303 and client.get("/t/acme/tickets")[0] == 200
    assert client.get("/a/acme/t/")[0] == 303  # the cookie's path is /t/acme/
    token = next(c.value for c in client.jar if c.name == "gw_session")
    assert _with_cookie(d, "/a/acme/t/", "gw_agent", token)[0] == 303  # nor copied over

    # A client's address asking the desk: the same page, and no link.
    outsider = Browser(d)
    same = ask_link(outsider, "a/acme", "carol@client.test")
    agent_page = ask_link(Browser(d), "a/acme", "bob@acme.test")
    assert same.replace("carol@client.test", "X") == agent_page.replace("bob@acme.test", "X")
    desk_link(sink, "bob@acme.test")  # Bob's came, so Carol's would have by now
    assert not [r for r in sink.received if "carol@client.test" in r.rcpt_tos
                and "/a/acme/" in _text(r)]  # fmt: skip

    # Another tenant's agent: no link from acme, and her globex session opens nothing here.
    ask_link(Browser(d), "a/acme", "gina@globex.test")
    gina = Browser(d)
    ask_link(gina, "a/globex", "gina@globex.test")
    code, headers = sign_in(gina, _outbox_link(d, "gina@globex.test"))
    assert code == 303 and headers["Location"] == "/a/globex/t/"
    assert gina.get("/a/globex/t/")[0] == 200
    assert gina.get(f"/a/acme/t/{ref}")[0] == 303
    token = next(c.value for c in gina.jar if c.name == "gw_agent")
    assert _with_cookie(d, f"/a/acme/t/{ref}", "gw_agent", token)[0] == 303
    links = d.query("SELECT tenant, address FROM link_tokens ORDER BY id")
    assert [tuple(r) for r in links] == [
        ("acme", "carol@client.test"),
        ("acme", "bob@acme.test"),
        ("globex", "gina@globex.test"),
    ]

    # An agent's session is no client session either.
    assert _with_cookie(d, "/t/acme/tickets", "gw_session", token)[0] == 303


def test_the_desk_locks_out_like_the_client_pages(desk: Daemon, sink: Sink) -> None:
    """Five bad tries with an agent's link lock the agent out; a spent link is spent."""
    b = Browser(desk)
    ask_link(b, "a/acme", "bob@acme.test")
    link = desk_link(sink, "bob@acme.test")
    selector = re.search(r"s=([0-9a-f]+)", link).group(1)  # type: ignore[union-attr]
    for _ in range(5):
        csrf = b.form("/a/acme/")["csrf"]
        code, html, _ = b.post("/a/acme/login", {"csrf": csrf, "s": selector, "v": "wrong"})
        assert code == 403 and "invalid, expired or already used" in html
    code, _ = sign_in(b, link)  # the right link, now locked
    assert code == 403 and b.get("/a/acme/t/")[0] == 303
    # No session was made, by the bad tries or the locked good one.
    assert desk.query("SELECT count(*) FROM web_sessions")[0][0] == 0


def _outbox_link(d: Daemon, who: str) -> str:
    """The newest link queued for ``who`` (globex has no SMTP account of its own here)."""
    from tests.test_web_client import _link

    return _link(d, who)


def _with_cookie(d: Daemon, path: str, name: str, value: str) -> tuple[int, str, dict[str, str]]:
    b = Browser(d)
    req = urllib.request.Request(b.base + path, headers={"Cookie": f"{name}={value}"})
    return b._open(req)


# --- the list's rules, without a server -------------------------------------------------


def test_due_text_reads_like_a_person() -> None:
    en, de = translator("en"), translator("de")
    assert due_text(en, 2 * 3600 + 60) == "in 2 h"
    assert due_text(en, 90) == "in 2 min"
    assert due_text(en, -3 * 86400) == "3 d overdue"
    assert due_text(de, 7200) == "in 2 Std."


def test_a_stale_or_hostile_query_falls_back_to_the_defaults() -> None:
    tenant = Tenant(slug="acme", name="Acme", addresses=("s@acme.test",), tag_prefix="ACME")
    q = ListQuery.parse({"list": "x", "page": "-3", "priority": "<b>", "queue": "nope"}, tenant)
    assert q == ListQuery()
    assert ListQuery.parse({"page": "9" * 50}, tenant).page == 100_000
    q = ListQuery.parse({"list": "closed", "tag": " vip ", "page": "2"}, tenant)
    assert (q.view, q.tag, q.page) == ("closed", "vip", 2)
    assert q.url("/a/acme", page=3) == "/a/acme/t/?list=closed&tag=vip&page=3"


def _row(ref: str, created: datetime, **kw: Any) -> dict[str, Any]:
    row = {
        "ref": ref, "status": "open", "queue": "general", "priority": "normal",
        "created_at": created, "updated_at": created, "first_response_at": None,
        "resolved_at": None, "pauses": [], "tags": [],
        "sla_since": created - timedelta(days=1),  # SLA began before: its clocks count
    }  # fmt: skip
    return row | kw


NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
SLA_TENANT = Tenant(
    slug="acme", name="Acme", addresses=("s@acme.test",), tag_prefix="ACME",
    sla=SlaSettings(
        default=SlaPolicy(calendar=Calendar(), first_response=4 * 3600, warn_before=1800)
    ),
)  # fmt: skip


def test_the_lists_sort_by_due_and_know_waiting_and_late() -> None:
    now, tenant = NOW, SLA_TENANT
    h = timedelta(hours=1)
    rows = [
        _row("fresh", now - h),  # due in 3 h
        _row("late", now - 6 * h),  # 2 h past its target
        _row("risky", now - 3.75 * h),  # due in 15 min: at risk
        _row("later", now - 5 * h, first_response_at=now - 4 * h,
             pauses=[(now - 4 * h, None)]),  # answered, waiting on the client
        _row("pending", now - 2 * h, status="pending"),
    ]  # fmt: skip
    page, total = page_of([dict(r) for r in rows], ListQuery(view="open"), tenant, now)
    assert [r["ref"] for r in page] == ["late", "risky", "pending", "fresh", "later"]
    assert total == 5 and page[0]["sla"]["over"] == 2 * 3600
    waiting, _ = page_of([dict(r) for r in rows], ListQuery(view="waiting"), tenant, now)
    assert [r["ref"] for r in waiting] == ["pending", "later"]
    late, _ = page_of([dict(r) for r in rows], ListQuery(view="late"), tenant, now)
    assert [r["ref"] for r in late] == ["late", "risky"]
    many = [_row(f"t{i}", now - timedelta(minutes=i)) for i in range(30)]
    second, total = page_of(many, ListQuery(view="open", page=2), tenant, now)
    assert total == 30 and [r["ref"] for r in second] == [f"t{i}" for i in range(4, -1, -1)]


def test_a_ticket_from_before_sla_began_shows_no_clock() -> None:
    """The desk's lists and the CLI (``ticket_sla``) keep the SLA watch's rule: a backlog
    opened before SLA began for the tenant is never alerted on, so it shows no clock
    either (it would show as long overdue)."""
    now, tenant = NOW, SLA_TENANT
    opened = now - timedelta(hours=6)
    backlog = _row("old", opened, sla_since=opened + timedelta(minutes=1), sla_notified=[])
    unrecorded = _row("unrecorded", opened, sla_since=None, sla_notified=[])
    watched = _row("new", opened, sla_since=opened, sla_notified=[])
    for row in (backlog, unrecorded):
        assert sla_of(tenant, row, now)["state"] == ""
        assert ticket_sla(tenant, row, now) is None
    assert sla_of(tenant, watched, now)["state"] == "breached"
    assert ticket_sla(tenant, watched, now)["state"] == "breached"  # type: ignore[index]
