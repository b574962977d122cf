"""What a parse costs on mail shaped as mail clients send it, before and after a change.

    python -m bench.parse_real --base /tmp/base-checkout [--rounds 6] [--out FILE.json]

Figure 1's corpus is small text mail, most of it one part: it hides what real mail
costs the parser. Here each kind is parsed by ``--base``'s parser and this checkout's
in turn (a fresh interpreter each round, ``PYTHONPATH``, alternating which goes first),
and every message has boundaries of its own, as real messages do: the kinds made of
copies of one message get each copy's made new (``re``'s cache would otherwise
remember the first copy's boundary and the others would cost the base side nothing).

- ``corpus``: figure 1's text mix (``bench.common.corpus``, 1,000 drawn);
- ``corpus-multipart``: its multipart messages alone;
- ``outlook-reply``: a reply as Outlook writes it: multipart/alternative, plain text and
  26 KB of HTML (a style sheet, a paragraph and a span for each line);
- ``html-only``: the same HTML with no plain part (the HTML must be rendered to text);
- ``attachment-10mb``: a short text and a 7.5 MB binary file, base64 (10 MB).

Reported: CPU µs per parse (``time.process_time``), the median of the rounds per side,
and after/before. One JSON object on the last line (and ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
KINDS = ["corpus", "corpus-multipart", "outlook-reply", "html-only", "attachment-10mb"]
_BOUNDARY = re.compile(rb'boundary="?([^";\r\n]+)', re.I)


def _outlook_html() -> str:
    style = "p.MsoNormal{margin:0cm;font-size:11.0pt;font-family:Calibri,sans-serif}" * 40
    lines = "".join(
        f"<p class=MsoNormal><span style='font-size:11.0pt;color:#1F497D'>Line {i} of the "
        "reply, with the words a client writes.</span></p>"
        for i in range(150)
    )
    return f"<html><head><style>{style}</style></head><body>{lines}</body></html>"


def _mails(kind: str, datas: list[bytes]) -> list[bytes]:
    if kind == "corpus":
        return datas
    if kind == "corpus-multipart":
        return [d for d in datas if _BOUNDARY.search(d)]
    head = "From: Kim <kim@client.test>\r\nTo: support@acme.test\r\nSubject: Toner\r\n"
    html = _outlook_html()
    plain = "\r\n".join(
        f"Line {i} of the reply, with the words a client writes." for i in range(150)
    )
    if kind == "outlook-reply":
        body = (
            'Content-Type: multipart/alternative; boundary="=_alt_b0undary"\r\n\r\n'
            f"--=_alt_b0undary\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{plain}\r\n"
            f"--=_alt_b0undary\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n"
            "--=_alt_b0undary--\r\n"
        )
        return [(head + body).encode()] * 100
    if kind == "html-only":
        return [(head + f"Content-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n").encode()] * 100
    assert kind == "attachment-10mb"
    from tests.mail import make_mail  # the parent's harness (never a side's)

    blob = random.Random(7).randbytes(7_500_000)
    return [
        make_mail(body="See the file.", attachments=[("a.bin", "application/octet-stream", blob)])
    ] * 3


def _fresh(datas: list[bytes]) -> list[bytes]:
    """Each message with its boundaries made its own (a copy of a message is another
    message), as each real message's are; the same length of mail, near enough."""
    out = []
    for i, d in enumerate(datas):
        for b in set(_BOUNDARY.findall(d)):
            new = b + b"m%d" % i
            d = d.replace(b"--" + b, b"--" + new)  # the delimiter lines
            d = re.sub(
                rb'(?i)(boundary="?)' + re.escape(b), rb"\g<1>" + new.replace(b"\\", rb"\\"), d
            )
        out.append(d)
    return out


def _measure(kind: str, data_file: Path) -> float:
    """In this interpreter (one side's parser, one round): CPU µs per parse."""
    from parsers import parse

    datas = json.loads(data_file.read_text())["mails"]
    mails = [d.encode("latin-1") for d in datas]
    for m in mails[:5]:
        parse(m)  # imports and first-use caches are no parse's cost
    batch = _fresh(mails)
    c0 = time.process_time()
    for m in batch:
        parse(m)
    return (time.process_time() - c0) / len(batch) * 1e6


def _side(root: Path, kind: str, data_file: Path) -> float:
    """This file run as a script, so that ``parsers`` is ``root``'s alone."""
    env = dict(os.environ, PYTHONPATH=str(root))
    out = subprocess.run(
        [sys.executable, __file__, "--measure", kind, "--data", str(data_file)],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(out.stdout.splitlines()[-1])["cpu_us"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.parse_real")
    ap.add_argument("--base", type=Path)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--corpus", type=int, default=1000)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--measure", choices=KINDS, help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure:
        print(json.dumps({"cpu_us": _measure(args.measure, args.data)}))
        return 0
    if args.base is None:
        ap.error("--base is required")
    from bench.common import corpus, machine, summary, workdir

    result: dict[str, Any] = {"machine": machine(), "base": str(args.base), "kinds": {}}
    with workdir("parse-real") as tmp:
        datas = [m.data for m in corpus(args.corpus, tmp) if not m.scan]
        for kind in KINDS:
            data_file = tmp / f"{kind}.json"
            mails = _mails(kind, datas)
            data_file.write_text(json.dumps({"mails": [m.decode("latin-1") for m in mails]}))
            sides: dict[str, list[float]] = {"before": [], "after": []}
            for r in range(args.rounds):
                order = [("before", args.base), ("after", ROOT)]
                for name, root in order if r % 2 == 0 else reversed(order):
                    sides[name].append(_side(root, kind, data_file))
            before, after = summary(sides["before"]), summary(sides["after"])
            result["kinds"][kind] = {
                "messages": len(mails),
                "bytes_mean": sum(map(len, mails)) // len(mails),
                "before_us": before,
                "after_us": after,
                "after_over_before": after["median"] / before["median"],
            }
            print(
                f"{kind:18} {len(mails):5} mails  before {before['median']:9,.0f} µs  "
                f"after {after['median']:9,.0f} µs  x{after['median'] / before['median']:.2f}",
                file=sys.stderr,
            )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
