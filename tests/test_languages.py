"""Every mail to a client speaks the client's language (issue 17, "Ticket life").

The language is the one the client's mail is written in (its Content-Language, else
the text, routing/language.py), kept on the ticket, else the tenant's first; the texts
are templates per language that an admin's folder overrides (outbound/templates.py).
The end-to-end tests run the daemon over real SMTP with a real sink on both engines.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from email.utils import getaddresses
from pathlib import Path

import pytest

from outbound.language import planned_language
from outbound.templates import Templates
from outbound.texts import BUILTIN, CLIENT_TEMPLATES
from parsers import parse
from parsers.types import ParsedMessage
from routing.config import LANGUAGES, Tenant
from routing.language import _cld2, answer_language, detect
from tests.daemon import Daemon
from tests.mail import make_mail
from tests.smtp_sink import Received, Sink

FAST = """
[outbound]
retry_base = 0.2
retry_max = 1
poll_interval = 0.1
timeout = 10
"""

GERMAN = (
    "Guten Tag, unser Drucker im dritten Stock druckt seit heute Morgen nur noch "
    "leere Seiten. Können Sie bitte jemanden vorbeischicken?"
)
ENGLISH = "Hello, the printer on the third floor prints only blank pages since this morning."
FRENCH = "Bonjour, mon imprimante ne marche plus depuis ce matin, pouvez-vous m'aider ?"


def _parsed(body: str, content_language: str = ""):  # type: ignore[no-untyped-def]
    data = make_mail(body=body)
    if content_language:  # after the build: set_content drops Content-* headers
        data = f"Content-Language: {content_language}\r\n".encode() + data
    return parse(data)


# --- detection ------------------------------------------------------------------------


def test_the_text_tells_the_language() -> None:
    assert detect(_parsed(GERMAN)) == "de"
    assert detect(_parsed(ENGLISH)) == "en"
    assert detect(_parsed("Danke!")) == ""  # too short to tell: no guess
    # The same text, the same answer: the model is a fixed table, no sampling.
    assert {detect(_parsed(GERMAN)) for _ in range(5)} == {"de"}


def test_english_with_a_few_foreign_words_is_english() -> None:
    # py3langid alone answered French, German or a creole for such mail (figure 1's
    # corpus: ~390 of 1,522 English messages), so the client was answered in German;
    # CLD2, asked first, is sure of English.
    for words in ("naïve résumé — 東京 ★ Łódź", "Preis: 12 € „Anführung“ – ok", "Zürich café ✓"):
        body = (
            f"Hi team,\n\n{words} [REF-7-00028-9998]\n\n"
            "This is urgent for us.\n\nBest regards,\nJosé Jansen"
        )
        assert detect(_parsed(body)) == "en", words


def test_a_reply_too_short_for_cld2_is_told_by_py3langid() -> None:
    short = "Hallo,\n\ndie Seriennummer lautet XK-4471-B.\n\nGruß\nAnna"
    assert _cld2(short) is None  # not sure: the fallback tells it
    assert detect(_parsed(short)) == "de"
    assert _cld2("\udc80 a lone surrogate it cannot encode, in an English sentence") is None
    hebrew = "שלום, המדפסת בקומה השנייה לא עובדת כבר יומיים, אפשר לשלוח טכנאי?"
    assert _cld2(hebrew) == "he"  # CLD2 says "iw", the code ISO 639 retired


def test_content_language_wins_over_the_text() -> None:
    assert detect(_parsed(ENGLISH, "de-CH, en")) == "de"
    assert detect(_parsed(ENGLISH, "<script>")) == "en"  # not a code


def test_a_language_the_tenant_does_not_offer_gets_the_tenants_first() -> None:
    assert answer_language(_parsed(FRENCH), ("de", "en")) == "de"
    assert answer_language(_parsed(GERMAN), ("en", "de")) == "de"
    assert answer_language(_parsed(GERMAN), ("en",)) == "en"
    assert answer_language(_parsed("ok"), ("tr", "en")) == "tr"


def test_a_new_ticket_keeps_the_language_shown_only_when_the_tenant_has_a_choice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(answer in, keep on the ticket) for a new ticket: the shown language when the
    tenant offers it among several, else the tenant's first and nothing kept; a tenant
    of one language never asks the model (``Tenant.chooses_language``)."""
    german, french, short = _parsed(GERMAN), _parsed(FRENCH), _parsed("ok")

    def tenant(languages: tuple[str, ...]) -> Tenant:
        return Tenant("acme", "Acme", ("s@acme.test",), "ACME", languages=languages)

    def plan(languages: tuple[str, ...], parsed: ParsedMessage) -> tuple[str | None, ...]:
        return planned_language(tenant(languages), parsed, created=True, stored=None)

    assert plan(("en", "de"), german) == ("de", "de")
    assert plan(("de", "en"), french) == ("de", None)
    assert plan(("tr", "en"), short) == ("tr", None)
    # A follow-up answers in the stored language while still offered.
    t = tenant(("en", "de"))
    assert planned_language(t, german, created=False, stored="de") == ("de", None)
    assert planned_language(t, german, created=False, stored="fr") == ("en", None)
    assert planned_language(t, german, created=False, stored=None) == (None, None)

    def no_model(_parsed: object) -> str:
        raise AssertionError("a tenant of one language asked the model")

    monkeypatch.setattr("outbound.language.detect", no_model)
    assert plan(("de",), german) == ("de", None)
    assert plan(("en",), german) == ("en", None)


# --- templates ------------------------------------------------------------------------


def _names(text: str) -> set[str]:
    return set(re.findall(r"{{\s*(\w+)", text)) | set(re.findall(r"{% if (\w+)", text))


def test_every_client_mail_is_complete_in_every_language() -> None:
    """English and German (and Turkish) ship complete, with the same variables, so a
    client never gets an English mail for want of a text, nor a render error."""
    for name in CLIENT_TEMPLATES:
        english = BUILTIN[f"en/{name}"]
        for lang in LANGUAGES:
            text = BUILTIN.get(f"{lang}/{name}")
            assert text and text.strip(), (lang, name)
            assert _names(text) == _names(english), (lang, name)


def test_a_language_folder_overrides_that_language_only(tmp_path: Path) -> None:
    (tmp_path / "acme" / "de").mkdir(parents=True)
    (tmp_path / "acme" / "de" / "ack.txt.j2").write_text("Moin {{ ref }}\n")
    t = Templates(tmp_path)
    ctx = {"name": "", "ref": "ACME-1", "subject": "s", "tenant_name": "Acme", "portal": ""}
    assert t.render("acme", "ack.txt.j2", "de", **ctx) == "Moin ACME-1\n"
    assert t.render("acme", "ack.txt.j2", "en", **ctx).startswith("Hello,")
    assert t.render("globex", "ack.txt.j2", "de", **ctx).startswith("Guten Tag,")
    # A file straight in the folder speaks for every language; a language folder beats it.
    (tmp_path / "acme" / "ack.txt.j2").write_text("Any {{ ref }}\n")
    t = Templates(tmp_path)
    assert t.render("acme", "ack.txt.j2", "en", **ctx) == "Any ACME-1\n"
    assert t.render("acme", "ack.txt.j2", "de", **ctx) == "Moin ACME-1\n"
    # Agents' mail is English only: any language falls back to it.
    assert "could not be delivered" in t.render(
        "acme", "failure.txt.j2", "de", ref="A-1", subject="s", recipients="x", reason="r"
    )
    assert t.render("acme", "ack.txt.j2", "../../x", **ctx) == "Any ACME-1\n"  # not a path


# --- end to end -------------------------------------------------------------------------


@pytest.fixture
def account(tmp_path: Path) -> Iterator[Sink]:
    sink = Sink(tmp_path).start()
    yield sink
    sink.stop()


def _daemon(tmp_path: Path, sink: Sink, extra: str = "", workers: int | None = None) -> Daemon:
    home = tmp_path / "gw"
    gateway_extra = "" if workers is None else f"parse_workers = {workers}"
    return Daemon(
        home, acme_extra=sink.account(home), extra=FAST + extra, gateway_extra=gateway_extra
    )


def _ack_for(d: Daemon, sink: Sink, body: str) -> tuple[str, Received]:
    who = f"client.{uuid.uuid4().hex[:8]}@client.test"
    code, text = d.send(make_mail(sender=who, body=body), sender=who)
    assert code == 250, text
    ref = d.ref(text)
    (ack,) = sink.wait_for(lambda r: who in r.rcpt_tos and r.msg["Message-ID"].startswith("<ack."))
    return ref, ack


def test_a_german_client_is_answered_in_german_an_english_one_in_english(
    tmp_path: Path, account: Sink
) -> None:
    d = _daemon(tmp_path, account).start()
    try:
        ref_de, ack_de = _ack_for(d, account, GERMAN)
        body = ack_de.msg.get_content()
        assert body.startswith("Guten Tag,") and f"das Ticket {ref_de} eröffnet" in body, body
        ref_en, ack_en = _ack_for(d, account, ENGLISH)
        assert ack_en.msg.get_content().startswith("Hello,")
        langs = dict(d.query("SELECT ref, client_language FROM tickets"))
        assert langs == {ref_de: "de", ref_en: "en"}

        # The agent answers the German ticket in English: the client's footer stays German.
        (notice,) = account.wait_for(
            lambda r: "alice@acme.test" in r.rcpt_tos and ref_de in str(r.msg["Subject"])
        )
        reply_to = getaddresses([str(notice.msg["Reply-To"])])[0][1]
        answer = make_mail(
            sender="Alice Agent <alice@acme.test>",
            to=reply_to,
            subject=f"Re: {notice.msg['Subject']}",
            body="We will send someone this afternoon.",
        )
        code, text = d.send(answer, to=reply_to, sender="alice@acme.test")
        assert code == 250, text
        client = ack_de.rcpt_tos[0]
        (relay,) = account.wait_for(
            lambda r: client in r.rcpt_tos and r.msg["Message-ID"].startswith("<reply.")
        )
        text = relay.msg.get_content()
        assert "We will send someone" in text and "Antworten Sie einfach" in text, text

        # A first mail too short to tell is answered in the tenant's first language;
        # the client's next mail tells, and the ticket keeps it from then on.
        ref, ack = _ack_for(d, account, "Hilfe!")
        assert ack.msg.get_content().startswith("Hello,")
        reply_to = str(ack.msg["Reply-To"])
        who = ack.rcpt_tos[0]
        more = make_mail(sender=who, to=reply_to, subject=f"Re: {ack.msg['Subject']}", body=GERMAN)
        assert d.ref(d.send(more, to=reply_to, sender=who)[1]) == ref
        langs = dict(d.query("SELECT ref, client_language FROM tickets"))
        assert langs[ref] == "de"
    finally:
        d.stop()


def test_the_admins_folder_wins_for_its_language(tmp_path: Path, account: Sink) -> None:
    folder = tmp_path / "gw" / "wording" / "acme" / "de"
    folder.mkdir(parents=True)
    (folder / "ack.txt.j2").write_text(
        "Moin! Ihr Anliegen hat die Nummer {{ ref }}.\n", encoding="utf-8"
    )
    d = _daemon(tmp_path, account, 'templates = "wording"\n').start()
    try:
        ref, ack = _ack_for(d, account, GERMAN)
        assert ack.msg.get_content().rstrip() == f"Moin! Ihr Anliegen hat die Nummer {ref}."
        _ref, ack_en = _ack_for(d, account, ENGLISH)
        assert ack_en.msg.get_content().startswith("Hello,")  # ours: no English override

    finally:
        d.stop()


def _model_loaded(pid: int) -> bool:
    """numpy (py3langid's tables) mapped into the process: the model was loaded."""
    return "numpy" in Path(f"/proc/{pid}/maps").read_text()


def _warm_at_ready(d: Daemon, pid: int) -> bool:
    """The model was loaded in ``pid`` before the daemon's listeners opened (unless the
    load outlasted the daemon's bounded wait for it, which it says)."""
    return _model_loaded(pid) or '"language.warm_slow"' in d.log_text()


def _children(d: Daemon) -> list[int]:
    assert d.proc is not None
    pid = d.proc.pid
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _workers_of(d: Daemon) -> list[int]:
    """The daemon's parse workers (not its send worker, gateway/sending/)."""
    return [p for p in _children(d) if b"gateway.intake.parse_worker" in _cmdline(p)]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # gone meanwhile
        return b""


def test_parse_workers_load_the_model_at_start_and_tell_the_language(
    tmp_path: Path, account: Sink
) -> None:
    """Tenants offer several languages: each worker loads the model before the daemon
    listens (no mail waits on it) and tells the language with the parse (the writer
    does not classify again), and the client is answered in its language all the
    same. The daemon has no model at start: it loads its own only once small mail
    comes alone (tests/test_parse_pool.py)."""
    d = _daemon(tmp_path, account, workers=1).start()
    try:
        (worker,) = _workers_of(d)
        assert _warm_at_ready(d, worker)  # no mail yet
        assert d.proc is not None and not _model_loaded(d.proc.pid)
        ref, ack = _ack_for(d, account, GERMAN)
        assert ack.msg.get_content().startswith("Guten Tag,")
        assert d.query("SELECT client_language FROM tickets WHERE ref = ?", ref)[0][0] == "de"
        _ref, ack = _ack_for(d, account, ENGLISH)
        assert ack.msg.get_content().startswith("Hello,")
    finally:
        d.stop()


def test_without_parse_workers_the_daemon_loads_the_model_at_start(
    tmp_path: Path, account: Sink
) -> None:
    d = _daemon(tmp_path, account, workers=0).start()
    try:
        assert d.proc is not None and _warm_at_ready(d, d.proc.pid)  # no mail yet
        ref, ack = _ack_for(d, account, GERMAN)
        assert ack.msg.get_content().startswith("Guten Tag,")
        assert d.query("SELECT client_language FROM tickets WHERE ref = ?", ref)[0][0] == "de"
    finally:
        d.stop()


@pytest.mark.parametrize("workers", [0, 1])
def test_tenants_of_one_language_never_load_the_model(
    tmp_path: Path, account: Sink, workers: int
) -> None:
    """No tenant offers a second language nor tests one: the model (~100 MiB) is never
    loaded, by the daemon or a worker, whatever the mail."""
    home = tmp_path / "gw"
    d = Daemon(
        home,
        acme_settings='languages = ["en"]',
        acme_extra=account.account(home),
        extra='languages = ["en"]\n' + FAST,
        gateway_extra=f"parse_workers = {workers}",
    ).start()
    try:
        ref, ack = _ack_for(d, account, GERMAN)
        assert ack.msg.get_content().startswith("Hello,")
        assert d.query("SELECT client_language FROM tickets WHERE ref = ?", ref)[0][0] is None
        assert d.proc is not None
        assert len(_workers_of(d)) == workers
        assert not any(_model_loaded(p) for p in [d.proc.pid, *_children(d)])
    finally:
        d.stop()
