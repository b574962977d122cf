"""Languages, texts and the client page templates.

The templates are the contract with gateway/web/client.py: these tests pin down which
variables each one needs (StrictUndefined fails on a missing one), that every text exists in
every language with the same placeholders (a German page must not crash for lack of
``{address}``), and that nothing the CSP forbids (inline script or style) slips in.
"""

from __future__ import annotations

import json
import re
import string
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jinja2
import pytest
from jinja2 import meta

from gateway.web.i18n import LANGUAGES, MESSAGES, pick_language, translate, translator

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "gateway" / "web" / "templates"
CSS = ROOT / "gateway" / "web" / "static" / "gateway.css"

EVIL = "<script>alert(1)</script>"

BASE_VARS = {"t", "lang", "languages", "tenant_name", "css_href"}
# The exact variables each page uses, on top of base.html's: web_client.py relies on this.
PAGE_VARS: dict[str, set[str]] = {
    "form.html": {"base_path", "csrf", "challenge"},
    "sent.html": {"base_path", "address"},
    "continue.html": {"base_path", "csrf", "selector", "verifier"},
    "error.html": {"base_path", "message_key"},
    "tickets.html": {"tenant_slug", "csrf", "tickets"},
    "ticket.html": {"tenant_slug", "csrf", "ticket", "messages"},
}


# --- pick_language ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cookie", "header", "expected"),
    [
        ("de", "tr,en;q=0.9", "de"),  # cookie wins
        ("TR", None, "tr"),
        (" en ", "de", "en"),
        ("fr", "de", "de"),  # invalid cookie is ignored
        ("", "tr", "tr"),
        ("de-CH", "tr", "tr"),  # cookie must be one of our codes
        (None, "en;q=0.5, tr;q=0.9, de;q=0.8", "tr"),  # best q-value
        (None, "fr, de;q=0.3, en;q=0.2", "de"),
        (None, "de-CH", "de"),  # region tags count by their primary tag
        (None, "fr-CH, fr;q=0.9, de-AT;q=0.8, en;q=0.7", "de"),
        (None, "TR-tr", "tr"),
        (None, "de;q=0.9, tr;q=0.9", "de"),  # tie: first listed wins
        (None, "de;q=0, tr;q=0.1", "tr"),  # q=0 means "not acceptable"
        (None, "de;q=0", "en"),
        (None, "fr, ja, *", "en"),  # unknown -> en
        (None, None, "en"),
        (None, "", "en"),
        (None, ";;;,,,=q=;", "en"),  # garbage
        (None, "de;q=abc, tr;q=0.1", "tr"),  # malformed q is not acceptable
        (None, "de;q=nan, tr;q=inf", "en"),
        (None, "de;q=5, tr;q=0.5", "tr"),  # q out of range
        (None, "\x00\xff\u202e, de", "de"),
        (None, "x" * 100_000 + ", de", "en"),  # huge header: only a prefix is read
        (None, ", " * 50_000 + "de", "en"),
    ],
)
def test_pick_language(cookie: str | None, header: str | None, expected: str) -> None:
    assert pick_language(cookie, header) == expected


def test_pick_language_only_among_the_tenants_languages() -> None:
    """A tenant with languages = ["de", "en"] speaks German unless asked for English."""
    offered = ("de", "en")
    assert pick_language(None, None, offered) == "de"
    assert pick_language("tr", "tr", offered) == "de"
    assert pick_language(None, "tr, en;q=0.5", offered) == "en"
    assert pick_language("en", "de", offered) == "en"


# --- messages ---------------------------------------------------------------------------


def _fields(text: str) -> set[str]:
    """The placeholder names in one text, as str.format sees them."""
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def test_every_key_in_every_language_with_the_same_placeholders() -> None:
    assert set(MESSAGES) == set(LANGUAGES)
    keys = set(MESSAGES["en"])
    for lang in LANGUAGES:
        assert set(MESSAGES[lang]) == keys, lang
        for key in keys:
            text = MESSAGES[lang][key]
            assert text.strip(), (lang, key)
            assert _fields(text) == _fields(MESSAGES["en"][key]), (lang, key)


def test_placeholders_are_the_documented_ones() -> None:
    """The server fills these by name; a renamed placeholder would be a KeyError at runtime."""
    expected = {
        "title.form": {"tenant"},
        "sent.body": {"address"},
        "desk.title.form": {"tenant"},
        "desk.signed_in": {"agent"},
        "desk.sent.body": {"address"},
        "desk.search.title": {"query"},
        "desk.count": {"total"},
        "desk.page": {"page", "pages"},
        "desk.unit.min": {"n"},
        "desk.unit.h": {"n"},
        "desk.unit.d": {"n"},
        "desk.due.in": {"amount"},
        "desk.due.over": {"amount"},
        "desk.ticket.due_at": {"at"},
    }
    for key, text in MESSAGES["en"].items():
        assert _fields(text) == expected.get(key, set()), key


def test_lockout_reads_exactly_like_a_bad_link() -> None:
    for lang in LANGUAGES:
        assert MESSAGES[lang]["error.locked"] == MESSAGES[lang]["error.link"], lang


def test_translate_fills_placeholders_and_falls_back() -> None:
    assert translate("de", "title.form", tenant="Acme") == "Ihre Support-Tickets bei Acme"
    assert translate("xx", "form.submit") == "Send me a link"
    assert translate("tr", "no.such.key") == "no.such.key"
    # A user-supplied value is a value, never a format string.
    assert "{0}{x}" in translate("en", "sent.body", address="{0}{x}@example.com")
    t = translator("tr")
    assert t("logout") == MESSAGES["tr"]["logout"]


def test_sign_in_mail_is_plain_text_with_the_link_in_every_language() -> None:
    """The sign-in mail is a template per language (outbound/texts.py), like every mail
    to a client: the link whole on a line of its own, the lifetime stated, no markup."""
    from outbound.templates import Templates

    link = "https://h.example/t/acme/login?s=a&v=b"
    templates = Templates()
    for lang in LANGUAGES:
        body = templates.render("acme", "signin.txt.j2", lang, link=link, tenant_name="Acme")
        assert f"\n{link}\n" in body
        assert "15" in body
        assert "<" not in body
    subject = templates.render("acme", "signin_subject.txt.j2", "de", tenant_name="Acme")
    assert subject.strip() == "Ihr Anmeldelink für Acme"


# --- templates --------------------------------------------------------------------------


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


def _context(name: str, lang: str) -> dict[str, Any]:
    """Exactly the variables ``name`` is documented to need, with hostile values in text."""
    ctx: dict[str, Any] = {
        "t": translator(lang),
        "lang": lang,
        "languages": LANGUAGES,
        "tenant_name": f"Acme {EVIL}",
        "css_href": "/static/gateway.css",
    }
    everything: dict[str, Any] = {
        "tenant_slug": "acme",
        "base_path": "/t/acme",
        "csrf": "csrf-token-123",
        "challenge": json.dumps({"salt": EVIL, "challenge": "ab", "maxnumber": 1}),
        "address": f"x{EVIL}@example.com",
        "selector": "sel123",
        "verifier": "ver456",
        "message_key": "error.link",
        "tickets": [
            {
                "ref": "ACME-1",
                "subject": EVIL,
                "status": "open",
                "updated_at": "2024-05-01T08:15:00+00:00",
            },
            {
                "ref": "ACME-2",
                "subject": "Invoice",
                "status": "closed",
                "updated_at": datetime(2024, 4, 2, 9, 30, 12, 345, tzinfo=UTC),
            },
            {
                "ref": "ACME-3",
                "subject": "Toner",
                "status": "pending",
                "updated_at": "2024-05-02T08:15:00+00:00",
            },
        ],
        "ticket": {"ref": "ACME-1", "subject": f"Help {EVIL}", "status": "open"},
        "messages": [
            {
                "author": f"Client {EVIL}",
                "is_support": False,
                "date": "2024-05-01 10:00",
                "text": f"Line one\nLine two {EVIL}",
                "attachments": [
                    {"name": f"a{EVIL}.pdf", "size": 123_456, "url": "/t/acme/files/1"},
                ],
            },
            {
                "author": "Agent Smith",
                "is_support": True,
                "date": "2024-05-01 11:00",
                "text": "Thanks, we are on it.",
                "attachments": [],
            },
            {
                "author": translator(lang)("ticket.support"),  # what web_client.py passes
                "is_support": True,
                "date": "2024-05-01 12:00",
                "text": "Fixed.",
                "attachments": [],
            },
        ],
    }
    ctx.update({k: everything[k] for k in PAGE_VARS[name]})
    return ctx


class _Checker(HTMLParser):
    """Collects what the accessibility and CSP checks look at."""

    def __init__(self) -> None:
        super().__init__()
        self.html_lang: str | None = None
        self.headings: list[int] = []
        self.label_for: set[str] = set()
        self.controls: list[dict[str, str | None]] = []
        self.forms: list[dict[str, str | None]] = []
        self.hidden: list[set[str]] = []
        self.attrs: list[tuple[str, str, str | None]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        self.attrs.extend((tag, k, v) for k, v in attrs)
        if tag == "html":
            self.html_lang = a.get("lang")
        if re.fullmatch(r"h[1-6]", tag):
            self.headings.append(int(tag[1]))
        if tag == "label":
            self.label_for.add(a.get("for") or "")
        if tag == "form":
            self.forms.append(a)
            self.hidden.append(set())
        if tag == "input" and a.get("type") == "hidden":
            self.hidden[-1].add(a.get("name") or "")
        elif tag in ("input", "textarea", "select"):
            self.controls.append(a)


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("name", sorted(PAGE_VARS))
def test_template_renders_safely(name: str, lang: str) -> None:
    html = _env().get_template(name).render(**_context(name, lang))

    assert EVIL not in html
    # No inline script: the one script there is, on the link form, is our own file.
    scripts = re.findall(r"<script\b[^>]*>", html.lower())
    assert scripts in ([], ['<script src="/static/challenge.js" defer>']), scripts
    assert scripts == [] or name == "form.html"
    assert not re.search(r"<script\b[^>]*>[^<]", html, re.I)
    assert "<style" not in html.lower()
    assert "&lt;script&gt;" in html  # the hostile tenant name, shown as text

    page = _Checker()
    page.feed(html)
    page.close()
    assert page.html_lang == lang
    for tag, attr, value in page.attrs:
        assert attr != "style", tag
        assert not attr.startswith("on"), (tag, attr)
        assert not (value or "").lower().strip().startswith("javascript:"), (tag, attr)

    # Headings: exactly one h1, and no level skipped on the way down.
    assert page.headings.count(1) == 1 and page.headings[0] == 1
    for before, after in zip(page.headings, page.headings[1:], strict=False):
        assert after <= before + 1, page.headings

    # Every visible control has a label; every POST form carries the CSRF token.
    for control in page.controls:
        assert control.get("id") in page.label_for, control
    for form, hidden in zip(page.forms, page.hidden, strict=True):
        assert form.get("method") == "post"
        assert (form.get("action") or "").startswith("/t/acme/")
        assert "csrf" in hidden, form
        assert 'value="csrf-token-123"' in html


@pytest.mark.parametrize("name", sorted(PAGE_VARS))
def test_template_variables_are_exactly_documented(name: str) -> None:
    env = _env()
    used = set()
    for source_name in ("base.html", name):
        source = env.loader.get_source(env, source_name)[0]  # type: ignore[union-attr]
        used |= meta.find_undeclared_variables(env.parse(source))
    assert used == BASE_VARS | PAGE_VARS[name]


def test_missing_variable_fails_loudly() -> None:
    ctx = _context("continue.html", "en")
    del ctx["verifier"]
    with pytest.raises(jinja2.UndefinedError):
        _env().get_template("continue.html").render(**ctx)


def test_form_page_posts_an_email_address() -> None:
    html = _env().get_template("form.html").render(**_context("form.html", "de"))
    assert 'action="/t/acme/link"' in html
    email = re.search(r'<input id="email"[^>]*>', html)
    assert email is not None
    for attr in ('name="email"', 'type="email"', "required", 'autocomplete="email"'):
        assert attr in email.group(0), attr
    assert "Ihre Support-Tickets bei Acme &lt;script&gt;" in html
    assert '<html lang="de">' in html
    assert 'href="?lang=tr"' in html


def test_continue_page_carries_the_token_but_no_language_links() -> None:
    html = _env().get_template("continue.html").render(**_context("continue.html", "en"))
    assert 'action="/t/acme/login"' in html
    assert 'name="s" value="sel123"' in html
    assert 'name="v" value="ver456"' in html
    assert "?lang=" not in html


def test_error_page_shows_the_message() -> None:
    for key in ("error.link", "error.locked", "error.csrf", "error.notfound"):
        ctx = _context("error.html", "tr") | {"message_key": key}
        html = _env().get_template("error.html").render(**ctx)
        assert translate("tr", key) in html
        assert 'href="/t/acme/"' in html


def test_ticket_pages_link_and_format() -> None:
    env = _env()
    listing = env.get_template("tickets.html").render(**_context("tickets.html", "en"))
    assert 'href="/t/acme/tickets/ACME-1"' in listing
    assert 'action="/t/acme/logout"' in listing
    assert ">Open<" in listing and ">Closed<" in listing
    assert 'class="status status-pending">Waiting for your reply<' in listing
    assert ">2024-05-01 08:15<" in listing  # ISO string, to the minute
    assert ">2024-04-02 09:30<" in listing  # datetime, to the minute

    empty = env.get_template("tickets.html").render(
        **(_context("tickets.html", "en") | {"tickets": []})
    )
    assert MESSAGES["en"]["tickets.none"] in empty
    assert "<table" not in empty

    page = env.get_template("ticket.html").render(**_context("ticket.html", "en"))
    assert 'action="/t/acme/tickets/ACME-1/reply"' in page
    assert 'name="text"' in page and "required" in page
    assert 'class="message-text">Line one\nLine two &lt;script&gt;' in page
    assert page.count('class="message message-support"') == 2
    assert page.count('class="badge"') == 1  # not on an author already called "Support"
    assert 'Agent Smith <span class="badge">Support</span>' in page
    assert "123.5 kB" in page
    assert 'href="/t/acme/tickets"' in page


def test_stylesheet_is_self_contained() -> None:
    css = CSS.read_text(encoding="utf-8")
    assert "@import" not in css
    assert "url(" not in css
    assert "white-space: pre-wrap" in css
    assert ":focus-visible" in css
