"""The bytes the gateway sends, pinned: every kind of mail ``outbound/compose.py`` makes,
over a spread of inputs (non-ASCII names, long and encoded subjects, 8bit and
quoted-printable bodies, HTML parts, inline images, attachments, cautions, other time
zones) and over every fixture mail as an acknowledgement and an agent's notice.

Only the random parts are normalised (Message-ID and MIME boundaries); the Date is not,
so a faster way of writing any header must give the same bytes. tests/golden/compose.json
was written before composing was made cheaper (issue 21); to write it anew on purpose:
``python -m tests.test_compose_golden``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import pytest

from outbound import mime
from outbound.compose import (
    Composed,
    Part,
    Templates,
    acknowledgement,
    agent_notice,
    failure_notice,
    magic_link_mail,
    refusal_notice,
    relay,
)
from outbound.dates import mail_date
from outbound.files import LeftOut
from outbound.mime import Body
from parsers import parse
from routing.config import Agent, Tenant

GOLDEN = Path(__file__).parent / "golden" / "compose.json"
FIXTURES = Path(__file__).parent.parent / "fixtures"

ACME = Tenant(
    slug="acme",
    name="Acme Support",
    addresses=("support@acme.test",),
    tag_prefix="ACME",
    agents=(Agent(address="alice@acme.test", name="Alice Agent"),),
)
UMLAUT = Tenant(
    slug="zurich", name="Zürcher Kundendienst GmbH", addresses=("hilfe@zurich.test",),
    tag_prefix="ZH", languages=("de", "en"),
)  # fmt: skip
ALICE = Agent(address="alice@acme.test", name="Alice Agent")
JOERG = Agent(address="joerg@zurich.test", name="Jörg Müller-Lüdenscheidt")
NOW = datetime(2026, 11, 23, 9, 5, 7, 123456, tzinfo=UTC)
TIMES = [
    NOW,
    datetime(2026, 2, 1, 23, 59, 59, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    datetime(2027, 7, 4, 0, 0, 0, tzinfo=timezone(timedelta(hours=-8))),
    datetime(2026, 12, 31, 12, 0, 1, tzinfo=timezone(timedelta(0), "CET")),
]
LONG = "Our invoice printer on the third floor has stopped printing after the update " * 3
TEXTS = [
    "Please help, the printer is broken.\n",
    "Grüße aus Zürich — der Drucker druckt nicht.\nZeile zwei\n",
    "x" * 1200 + "\nshort line\n",  # over 998 octets: quoted-printable
    "a stray\rcarriage return and a NUL\x00 here\n",
    "no newline at the end",
    "",
]
PNG = bytes(range(256)) * 3


def _parts() -> tuple[Part, ...]:
    return (
        Part("report.pdf", "application/pdf", b"%PDF-1.4 " + bytes(range(200))),
        Part("logo.png", "image/png", PNG, content_id="logo@client.test", inline=True),
        Part("Übersicht März.xlsx", "Application/Vnd.Ms-Excel", b"PK\x03\x04" * 40),
        Part("bad type", "not a type", b"\x00\x01"),
    )


def cases() -> Iterator[tuple[str, Callable[[], Composed]]]:
    """(name, a call that composes one mail)."""
    subjects = [
        "Printer broken",
        "Drucker kaputt — Zürich",
        LONG,
        "Ärger " * 30,
        "[ACME-7] already tagged",
        "",
    ]
    for i, subject in enumerate(subjects):
        for j, (name, lang, portal) in enumerate(
            [("", "en", ""), ("Zoë Ünal", "de", "https://help.acme.test/t/acme/"),
             ("Kim", "tr", ""), ("Kim", "xx", "https://p/")]
        ):  # fmt: skip
            yield (
                f"ack-{i}-{j}",
                lambda subject=subject, name=name, lang=lang, portal=portal, j=j: acknowledgement(
                    tenant=UMLAUT if j == 1 else ACME,
                    hostname="gw.test",
                    ref="ACME-7",
                    subject=subject,
                    to_addr="zoe@client.test",
                    to_name=name,
                    reply_address="support+t7-abc@acme.test",
                    in_reply_to="<orig@client.test>" if j != 2 else None,
                    now=TIMES[j % len(TIMES)],
                    lang=lang,
                    portal=portal,
                ),
            )
    clients = ["Kim", "Zoë Ünal", "kim@client.test", 'Kim "The Boss" O\'Hara, Jr.']
    for i, text in enumerate(TEXTS):
        for j, client in enumerate(clients):
            k = i * len(clients) + j
            yield (
                f"notice-{i}-{j}",
                lambda text=text, client=client, k=k: agent_notice(
                    tenant=UMLAUT if k % 3 == 1 else ACME,
                    hostname="gw.test",
                    agent=JOERG if k % 2 else ALICE,
                    event=("new", "followup", "reopened")[k % 3],
                    ref=f"ACME-{k}",
                    subject=subjects[k % len(subjects)],
                    client=client,
                    text=text,
                    reply_address=f"support+t{k}-abc@acme.test",
                    in_reply_to=f"<m{k}@client.test>" if k % 4 else None,
                    references=[f"<r{n}@client.test>" for n in range(k % 25)],
                    now=TIMES[k % len(TIMES)],
                    caution=("", "unverified", "outsider", "")[k % 4],
                    ticket_url=f"https://desk.acme.test/acme/ACME-{k}" if k % 5 else "",
                    html='<p>Hello <b>there</b> &amp; <img src="cid:logo@client.test"></p>'
                    if k % 3 == 0
                    else None,
                    files=_parts()[: k % 5],
                    left_out=LeftOut(files=(("big.iso", 10_000_000, "limit"),), limit=5_000_000)
                    if k % 7 == 3
                    else None,
                ),
            )
    for j, (sender, agent) in enumerate([("bob@evil.test", ALICE), ("jörg@zurich.test", JOERG)]):
        yield f"refusal-{j}", lambda sender=sender, agent=agent, j=j: refusal_notice(
            tenant=ACME if j == 0 else UMLAUT, hostname="gw.test", agent=agent, ref="ACME-3",
            subject=subjects[j + 1], sender=sender, in_reply_to="<x@client.test>", now=TIMES[j],
        )  # fmt: skip
    yield "failure", lambda: failure_notice(
        tenant=UMLAUT, hostname="gw.test", agents=[ALICE, JOERG], ref="ZH-9", subject=LONG,
        recipients=["a@x.test", "b@y.test"], reason="550 5.1.1 no such user\r\nX-Injected: 1",
        now=TIMES[2],
    )  # fmt: skip
    for j, html in enumerate([None, "<p>Grüße, <i>Jörg</i></p>"]):
        yield f"relay-{j}", lambda html=html, j=j: relay(
            tenant=UMLAUT if j else ACME, hostname="gw.test", agent=JOERG if j else ALICE,
            ref="ACME-5", subject=subjects[j * 2], to=[("Zoë Ünal", "zoe@client.test"),
            ("", "kim@client.test"), ("Ümit", "ümit@münchen.test")][: j + 2], text=TEXTS[j],
            reply_address="support+t5@acme.test", in_reply_to="<c@client.test>",
            references=["<a@client.test>", "<b@client.test>"], now=TIMES[j], html=html,
            files=_parts()[:2] if j else (), lang=("en", "de")[j],
        )  # fmt: skip
    yield "magic-link", lambda: magic_link_mail(
        tenant=UMLAUT, hostname="gw.test", to_addr="zoe@client.test",
        subject="Ihr Anmeldelink", text="https://help/t/zurich/login?x=1\n", now=TIMES[1],
    )  # fmt: skip
    for path in sorted(FIXTURES.rglob("*.eml")):
        name = str(path.relative_to(FIXTURES))
        yield f"fixture-ack:{name}", lambda path=path: _fixture_ack(path)
        yield f"fixture-notice:{name}", lambda path=path: _fixture_notice(path)


def _parsed(path: Path):  # type: ignore[no-untyped-def]
    return parse(re.sub(rb"(?<!\r)\n", b"\r\n", path.read_bytes()))


def _fixture_ack(path: Path) -> Composed:
    p = _parsed(path)
    return acknowledgement(
        tenant=ACME, hostname="gw.acme.test", ref="ACME-12", subject=p.subject or "(no subject)",
        to_addr=p.from_addr or "x@client.test", to_name="", reply_address="support+t12@acme.test",
        in_reply_to=p.message_id, now=NOW, lang=p.language or "en",
        portal="https://help.acme.test/t/acme/",
    )  # fmt: skip


def _fixture_notice(path: Path) -> Composed:
    p = _parsed(path)
    files = tuple(
        Part(a.filename, a.content_type, a.data, a.content_id, a.inline) for a in p.attachments
    )
    return agent_notice(
        tenant=ACME, hostname="gw.acme.test", agent=ALICE, event="new", ref="ACME-12",
        subject=p.subject or "(no subject)", client=p.from_name or p.from_addr or "",
        text=p.reply_text or p.text, reply_address="support+t12-alice@acme.test",
        in_reply_to=p.message_id, references=[p.message_id] if p.message_id else [], now=NOW,
        ticket_url="https://desk.acme.test/acme/ACME-12", html=p.html_reply, files=files,
    )  # fmt: skip


_MESSAGE_ID = re.compile(r"<([a-z]+)\.[0-9a-f]{33}@")
_BOUNDARY = re.compile(r"=_([a-z]+)_[0-9a-f]{24}")


def normalised(mail: Composed) -> dict[str, object]:
    """The mail with its random parts (Message-ID, boundaries) made fixed."""
    body = mail.body.decode("utf-8")
    assert mail.message_id in body
    return {
        "message_id": _MESSAGE_ID.sub(r"<\1.X@", mail.message_id),
        "mail_from": mail.mail_from,
        "rcpt_tos": list(mail.rcpt_tos),
        "body": _BOUNDARY.sub(r"=_\1_X", _MESSAGE_ID.sub(r"<\1.X@", body)),
    }


def composed_all() -> dict[str, dict[str, object]]:
    return {name: normalised(make()) for name, make in cases()}


GOLDEN_CASES = json.loads(GOLDEN.read_text(encoding="utf-8")) if GOLDEN.exists() else {}


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_every_mail_is_byte_for_byte_what_it_was(name: str) -> None:
    made = dict(cases())
    assert name in made, f"{name}: a golden case no longer made"
    assert normalised(made[name]()) == GOLDEN_CASES[name]


def test_every_case_has_its_golden_bytes() -> None:
    assert sorted(name for name, _ in cases()) == sorted(GOLDEN_CASES)


def test_a_changed_byte_is_seen() -> None:
    """The comparison can fail: one changed character in a mail makes it differ."""
    name, make = next(iter(cases()))
    mail = make()
    changed = Composed(mail.message_id, mail.mail_from, mail.rcpt_tos, mail.body + b" ")
    assert normalised(changed) != GOLDEN_CASES[name]


def test_an_override_template_keeps_jinjas_globals(tmp_path: Path) -> None:
    """An admin's template may use jinja's globals (range, namespace) and its filters."""
    (tmp_path / "ack.txt.j2").write_text(
        "{% set ns = namespace(n=0) %}{% for i in range(3) %}{% set ns.n = ns.n + i %}"
        "{% endfor %}{{ ns.n }} {{ ref | lower }} {{ name | default('x', true) }}\n",
        encoding="utf-8",
    )
    t = Templates(tmp_path)
    text = t.render("acme", "ack.txt.j2", ref="ACME-1", name="")
    assert text == "3 acme-1 x\n"
    with pytest.raises(Exception, match="ref"):
        t.render("acme", "ack.txt.j2", name="")  # StrictUndefined: a missing name fails


def test_the_date_is_what_email_utils_writes() -> None:
    zones = [None, UTC, timezone(timedelta(hours=-3, minutes=-30)), timezone(timedelta(hours=14)),
             timezone(timedelta(seconds=-3661)), timezone(timedelta(0), "CET")]  # fmt: skip
    start = datetime(1999, 12, 31, 23, 59, 58)
    for i in range(400):
        naive = start + timedelta(days=i * 37, seconds=i * 7919, microseconds=i)
        for tz in zones:
            dt = naive if tz is None else naive.replace(tzinfo=tz)
            assert mail_date(dt) == format_datetime(dt), dt


def test_text_alone_is_written_as_the_whole_tree_writes_it() -> None:
    """``render``'s short way for a text-only mail gives the general way's bytes."""
    texts = [*TEXTS, LONG, *(_parsed(p).text for p in sorted(FIXTURES.rglob("*.eml")))]
    heads = [
        [("Subject", LONG), ("From", "=?utf-8?q?Zo=C3=AB?= <z@x.test>"), ("X-Loop", "gw")],
        [("Subject", "Ärger " * 30), ("To", "a@b.test")],
        [],
    ]
    for text in texts:
        for head in heads:
            whole = mime._render_tree(head, Body(text))
            assert mime.render(head, text) == whole
            assert mime.render(head, Body(text)) == whole


if __name__ == "__main__":
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN.write_text(
        json.dumps(composed_all(), indent=1, ensure_ascii=False, sort_keys=True) + "\n",
        encoding="utf-8",
    )
    print(f"wrote {GOLDEN}")
