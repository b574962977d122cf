"""What parsers/mime.py changes in email.feedparser for speed changes nothing it parses:
the multipart boundary match it gives the parser before Python 3.13 (CPython
gh-106628's: ``str.startswith`` and one shared regex, not a regex compiled from each
part's boundary), and the search for a payload's last line end that looks only at its
end. Every message splits exactly as with the stock parser, odd boundaries, line ends
and broken closings included."""

from __future__ import annotations

import email.feedparser
import itertools
import re
import sys
from collections.abc import Callable
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parsers.mime import parse_tree

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = sorted((ROOT / "fixtures").rglob("*.eml"))

_BEFORE_313 = pytest.mark.skipif(
    sys.version_info >= (3, 13), reason="3.13's feedparser matches boundaries this way itself"
)
_STOCK_EOL = re.compile(r"(\r\n|\r|\n)\Z")


def _shape(tree: Message) -> list[tuple[Any, ...]]:
    """Everything the parse decided about the parts: where each one starts and ends."""
    return [
        (
            part.get_content_type(),
            part.get_boundary(),
            part.preamble,
            part.epilogue,
            None if part.is_multipart() else part.get_payload(),
            [type(d).__name__ for d in part.defects],
        )
        for part in tree.walk()
    ]


def _stock(data: bytes, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    with monkeypatch.context() as m:
        m.setattr(email.feedparser, "re", re)
        m.setattr(email.feedparser, "NLCRE_eol", _STOCK_EOL)
        return _shape(parse_tree(data))


def _nested(outer: str, inner: str, nl: str = "\r\n", close: str = "--") -> bytes:
    return nl.join(
        [
            "From: a@b.test",
            f'Content-Type: multipart/mixed; boundary="{outer}"',
            "",
            "preamble line",
            f"--{outer}",
            f'Content-Type: multipart/alternative; boundary="{inner}"',
            "",
            f"--{inner}   ",  # trailing blanks still open a part
            "Content-Type: text/plain",
            "",
            f"--{inner}x is text, not a boundary",
            f"--{outer}2 neither",
            f"--{inner}--x neither",
            f"--{inner}",
            "Content-Type: text/html",
            "",
            "<p>hi</p>",
            f"--{inner}--",
            "inner epilogue",
            f"--{outer}",
            "Content-Type: application/octet-stream",
            "",
            "data",
            f"--{outer}{close}",
        ]
    ).encode("utf-8", "surrogateescape")


ODD = ["simple", "a+b (c)?.*$^[x]{1}|", "with space", "=_Part_1.2:3/4,'5'", "back\\slash"]


@pytest.mark.parametrize("boundary", ODD)
@pytest.mark.parametrize("nl", ["\r\n", "\n", "\r"])
@pytest.mark.parametrize("close", ["--", "--\r\n", "--  \n", "", "--trailing junk"])
def test_odd_boundaries_split_as_the_stock_parser_splits_them(
    boundary: str, nl: str, close: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _nested(boundary, boundary + "-in", nl, close)
    assert _shape(parse_tree(data)) == _stock(data, monkeypatch)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_fixture_splits_as_the_stock_parser_splits_it(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = path.read_bytes()
    assert _shape(parse_tree(data)) == _stock(data, monkeypatch)


_BCHARS = st.text(
    alphabet=st.sampled_from("az09'()+_,-./:=? \\*[]$^|\t"), min_size=1, max_size=40
).filter(lambda b: b.strip() == b)


@settings(max_examples=200, deadline=None)
@given(boundary=_BCHARS, nl=st.sampled_from(["\r\n", "\n", "\r"]), close=st.text(max_size=4))
def test_any_boundary_splits_as_the_stock_parser_splits_it(
    boundary: str, nl: str, close: str
) -> None:
    data = _nested(boundary, boundary + "'", nl, close)
    with pytest.MonkeyPatch.context() as m:
        assert _shape(parse_tree(data)) == _stock(data, m)


@_BEFORE_313
def test_no_regex_is_compiled_for_a_boundary(monkeypatch: pytest.MonkeyPatch) -> None:
    """The point of it: a boundary never seen before costs no ``re`` compile (~110 µs,
    and a slot of ``re``'s cache)."""
    compiled: list[str] = []
    real: Callable[..., Any] = re._compile  # type: ignore[attr-defined]

    def counting(pattern: Any, flags: Any) -> Any:
        compiled.append(str(pattern))
        return real(pattern, flags)

    monkeypatch.setattr(re, "_compile", counting)
    tree = parse_tree(_nested("neverseen7f3a", "neverseen7f3ainner"))
    assert len(tree.get_payload()) == 2
    assert not [p for p in compiled if "neverseen7f3a" in p]


def test_the_last_line_end_is_found_as_the_stock_search_finds_it() -> None:
    """Every string of up to 7 characters over a letter, CR and LF: the same match (or
    none) as the stock regex's search over the whole string."""
    fast = email.feedparser.NLCRE_eol
    assert not isinstance(fast, re.Pattern)  # the end-only search is in place
    for n in range(8):
        for chars in itertools.product("a\r\n", repeat=n):
            text = "".join(chars)
            want, got = _STOCK_EOL.search(text), fast.search(text)
            assert (got and (got.span(), got.group(0))) == (want and (want.span(), want.group(0)))
