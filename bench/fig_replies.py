"""Figure 10: how often ``reply_text`` is exactly right on the golden set of replies.

    python -m bench.fig_replies          # the score of ours, talon and email-reply-parser
    python -m bench.fig_replies -v       # and the cases each one gets wrong

The set is ``fixtures/replies/``: one body per case as a mail client writes it
(``NN-client-lang.txt``) and the reply the sender wrote this time
(``NN-client-lang.expected.txt``). Every tool is scored by the same rule: its
output and the expectation compared after trailing blanks on each line and
blank lines around the text are dropped, so a tool is not penalised for
whitespace it does not promise. talon and email-reply-parser are optional (the
``bench`` extra); a tool that is not installed is reported as absent.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPLIES = Path(__file__).resolve().parent.parent / "fixtures" / "replies"


def cases(folder: Path = REPLIES) -> list[tuple[str, str, str]]:
    """(name, body, expected reply) for every case of the golden set, in file order."""
    out = []
    for exp in sorted(folder.glob("*.expected.txt")):
        name = exp.name.removesuffix(".expected.txt")
        body = (folder / f"{name}.txt").read_text(encoding="utf-8")
        out.append((name, body, exp.read_text(encoding="utf-8")))
    return out


def normalise(text: str) -> str:
    return "\n".join(ln.rstrip() for ln in text.strip("\n").split("\n")).strip()


def _ours() -> Callable[[str], str]:
    from parsers.quotes import reply_text

    return reply_text


def _talon() -> Callable[[str], str]:
    from talon import quotations

    return lambda body: quotations.extract_from_plain(body)


def _email_reply_parser() -> Callable[[str], str]:
    from email_reply_parser import EmailReplyParser

    return EmailReplyParser.parse_reply


TOOLS: dict[str, Callable[[], Callable[[str], str]]] = {
    "ours": _ours,
    "talon": _talon,
    "email-reply-parser": _email_reply_parser,
}


def _version(tool: str) -> str | None:
    from importlib import metadata

    dist = {"ours": "helpdesk-gateway"}.get(tool, tool)
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def score(fn: Callable[[str], str], golden: list[tuple[str, str, str]]) -> dict[str, Any]:
    """Exact matches of ``fn`` on the set, and the names of the cases it gets wrong."""
    failed = []
    for name, body, expected in golden:
        try:
            got = fn(body)
        except Exception:  # a tool that crashes on a case gets it wrong, no more
            got = None
        if got is None or normalise(got) != normalise(expected):
            failed.append(name)
    return {"exact": len(golden) - len(failed), "total": len(golden), "failed": failed}


def fig10() -> dict[str, Any]:
    """The figure's JSON: per tool its score and failures, or why it is absent."""
    golden = cases()
    tools: dict[str, Any] = {}
    for tool, load in TOOLS.items():
        try:
            fn = load()
        except ImportError as exc:
            tools[tool] = {"absent": f"{type(exc).__name__}: {exc}"}
            continue
        tools[tool] = {"version": _version(tool), **score(fn, golden)}
    return {"cases": len(golden), "tools": tools}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.fig_replies", description=__doc__)
    ap.add_argument("-v", "--verbose", action="store_true", help="list the failed cases")
    args = ap.parse_args(argv)
    fig = fig10()
    for tool, r in fig["tools"].items():
        if "absent" in r:
            print(f"{tool:20} absent ({r['absent']})")
            continue
        print(f"{tool:20} {r['exact']:3} of {r['total']} exact")
        if args.verbose:
            for name in r["failed"]:
                print(f"    {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
