"""The golden set of replies (fixtures/replies/): reply_text exact on every case.

Each case is a body as a mail client writes it (Gmail, Apple Mail, Thunderbird,
Outlook, Yahoo, GMX/web.de, Samsung, in a dozen languages) and the text its
sender wrote this time; bench/fig_replies.py scores other tools on the same set.
"""

from __future__ import annotations

import pytest

from bench.fig_replies import REPLIES, cases
from parsers.quotes import is_forward, read_reply, reply_text, split_reply

GOLDEN = cases()


def test_the_set_is_large_and_paired() -> None:
    assert len(GOLDEN) >= 60
    bodies = {p.name for p in REPLIES.glob("*.txt") if not p.name.endswith(".expected.txt")}
    assert len(bodies) == len(GOLDEN)  # no body without its expectation


@pytest.mark.parametrize(("name", "body", "expected"), GOLDEN, ids=[c[0] for c in GOLDEN])
def test_reply_text_golden(name: str, body: str, expected: str) -> None:
    assert reply_text(body) == expected.rstrip("\n")


@pytest.mark.parametrize(("name", "body", "expected"), GOLDEN, ids=[c[0] for c in GOLDEN])
def test_split_reply_keeps_every_line(name: str, body: str, expected: str) -> None:
    """Folding hides lines, never loses one: reply and rest hold every non-blank line."""
    reply, rest = split_reply(body)
    assert reply == expected.rstrip("\n")
    shown = [ln.rstrip() for ln in (reply + "\n" + rest).split("\n") if ln.strip()]
    assert sorted(shown) == sorted(ln.rstrip() for ln in body.split("\n") if ln.strip())


def test_split_reply_without_history_has_no_rest() -> None:
    assert split_reply("Hello,\n\nthe printer jams.\n") == ("Hello,\n\nthe printer jams.", "")


def test_split_reply_rest_is_the_quote() -> None:
    body = "New text.\n\nOn Mon, 4 Mar 2024, Support wrote:\n> old text\n"
    assert split_reply(body) == (
        "New text.",
        "On Mon, 4 Mar 2024, Support wrote:\n> old text",
    )


@pytest.mark.parametrize(
    "subject",
    [
        "Fwd: Invoice charged twice",  # Gmail, Apple Mail, Thunderbird
        "FW: printer broken",  # Outlook, en
        "Fw: printer broken",
        "WG: Drucker defekt",  # de
        "TR: imprimante en panne",  # fr
        "RV: impresora rota",  # es
        "I: stampante guasta",  # it
        "Doorst: printer kapot",  # nl
        "ENC: impressora quebrada",  # pt
        "VB: skrivaren",  # sv
        "VS: printeren",  # da, no
        "PD: drukarka",  # pl
        "Пересл: принтер",  # ru
        "转发: 打印机",  # zh
        "転送：プリンター",  # ja, full-width colon
        "Fwd[2]: printer",
        "  fwd : printer",
    ],
)
def test_a_forward_is_known_by_its_subject(subject: str) -> None:
    assert is_forward(subject)


@pytest.mark.parametrize(
    "subject",
    [
        "Re: Fwd: printer",  # a reply to a forward quotes it
        "AW: WG: Drucker",
        "printer broken",
        "Fwd printer",
        "Forward: the plan",  # no client writes it; a word of the subject
        "Trouble: printer",
        "Info: maintenance",
        "VPN: down",
        "[ACME-12] printer",
        "",
    ],
)
def test_a_subject_without_a_forward_prefix_is_not_a_forward(subject: str) -> None:
    assert not is_forward(subject)


_OUTLOOK_FORWARD = (
    "Please handle.\n\n-----Original Message-----\nFrom: Bob <bob@client.test>\n"
    "Sent: Friday, December 4, 2026 10:00 AM\nTo: Ann <ann@example.org>\n"
    "Subject: printer broken\n\nOur printer is broken since Monday.\n"
)


def test_outlooks_separator_opens_a_forwarded_mail_when_the_subject_says_forward() -> None:
    """Outlook writes the same separator above a quote and above a forwarded mail."""
    assert reply_text(_OUTLOOK_FORWARD) == "Please handle."
    assert reply_text(_OUTLOOK_FORWARD, forward=True) == _OUTLOOK_FORWARD.strip()
    assert read_reply(_OUTLOOK_FORWARD, forward=True) == (_OUTLOOK_FORWARD.strip(), True)
    assert read_reply(_OUTLOOK_FORWARD) == ("Please handle.", False)
    reply, rest = split_reply(_OUTLOOK_FORWARD, "FW: printer broken")
    assert (reply, rest) == (_OUTLOOK_FORWARD.strip(), "")
    assert split_reply(_OUTLOOK_FORWARD, "RE: printer broken")[0] == "Please handle."


def test_a_forward_subject_keeps_the_senders_own_quotes_out() -> None:
    body = "Done.\n> did you restart it?\n\n" + _OUTLOOK_FORWARD.split("\n\n", 1)[1]
    assert reply_text(body, forward=True).startswith("Done.\n\n-----Original Message-----")
