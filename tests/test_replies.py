"""The golden set of replies (fixtures/replies/): reply_text exact on every case.

Each case is a body as a mail client writes it (Gmail, Apple Mail, Thunderbird,
Outlook, Yahoo, GMX/web.de, Samsung, in a dozen languages) and the text its
sender wrote this time; bench/fig_replies.py scores other tools on the same set.
"""

from __future__ import annotations

import pytest

from bench.fig_replies import REPLIES, cases
from parsers.quotes import reply_text, split_reply

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
