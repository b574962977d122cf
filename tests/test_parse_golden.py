"""Every field of every ParsedMessage, and its told language, unchanged by a speed-up.

A change to the parser that means to change no result (issue 21: a cheaper parse)
is checked here against digests recorded before it: figure 1's corpus (seed 7, as
the generator writes it and as the bench delivers it, CRLF with tags replaced), the
real messages of fixtures/, and every golden reply body as a UTF-8 mail (the
language model's widest test: a dozen languages). A change that means to change a
result records the digests anew, on purpose, and says why in its commit:

    .venv/bin/python -m tests.test_parse_golden --write
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path

from parsers import ParseError, parse
from parsers.dates import iso_date
from routing.language import detect

ROOT = Path(__file__).resolve().parent.parent
DIGESTS = ROOT / "tests" / "golden" / "parsed.json"
_HEAD = (
    b"From: Client <client@example.test>\r\nTo: support@acme.test\r\n"
    b"Subject: golden\r\nMessage-ID: <golden@example.test>\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
)


def messages(workdir: Path) -> Iterator[tuple[str, bytes]]:
    """(name, raw bytes) of every message the digests cover, in a fixed order."""
    folder = workdir / "corpus"
    generator = str(ROOT / "tests/corpus/gen_corpus.py")
    subprocess.run(
        [sys.executable, generator, str(folder), "--count", "1000", "--seed", "7"],
        check=True,
        capture_output=True,
        timeout=600,
    )
    for path in sorted(folder.glob("*.eml")):
        data = path.read_bytes()
        yield f"corpus/{path.name}", data
        crlf = _untagged(data).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        yield f"corpus-crlf/{path.name}", crlf
    for path in sorted((ROOT / "fixtures").rglob("*.eml")):
        yield str(path.relative_to(ROOT)), path.read_bytes()
    for path in sorted((ROOT / "fixtures" / "replies").glob("*.txt")):
        if not path.name.endswith(".expected.txt"):
            yield str(path.relative_to(ROOT)), _HEAD + path.read_bytes()


def _untagged(data: bytes) -> bytes:
    """What the bench delivers (bench/common.py): no ``{{TAG:...}}`` known."""
    while b"{{TAG:" in data:
        start = data.index(b"{{TAG:")
        end = data.find(b"}}", start)
        data = data[:start] + b"unknown" + data[end + 2 :]
    return data


def digest(data: bytes) -> str:
    """Every field (an attachment's bytes by their hash) and the told language, hashed."""
    try:
        parsed = parse(data)
    except ParseError as exc:
        return f"refused:{type(exc).__name__}:{exc}"
    fields = {f.name: getattr(parsed, f.name) for f in dataclasses.fields(parsed)}
    fields["attachments"] = tuple(
        (repr(a), hashlib.sha256(a.data).hexdigest()) for a in parsed.attachments
    )
    fields["language"] = (parsed.language, detect(parsed))
    return hashlib.sha256(repr(sorted(fields.items())).encode()).hexdigest()[:20]


def digests() -> dict[str, str]:
    with tempfile.TemporaryDirectory(prefix="golden-") as tmp:
        return {name: digest(data) for name, data in messages(Path(tmp))}


def test_every_parsed_field_is_as_recorded() -> None:
    expected = json.loads(DIGESTS.read_text(encoding="utf-8"))
    got = digests()
    assert len(got) >= 2000
    assert sorted(got) == sorted(expected)
    changed = [name for name in expected if got[name] != expected[name]]
    assert not changed, f"{len(changed)} messages parse differently: {changed[:10]}"


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    DIGESTS.write_text(json.dumps(digests(), indent=0, sort_keys=True) + "\n", encoding="utf-8")


def _stdlib_iso(value: str) -> str:
    try:
        return parsedate_to_datetime(value).isoformat()
    except Exception as exc:  # the parser reads any of these as "bad-date"
        return type(exc).__name__


def test_the_common_date_form_reads_as_the_stdlib_reads_it() -> None:
    """parsers/dates.py reads RFC 5322's one form itself: every edge the stdlib has
    (unknown zone, two-digit-like years, impossible fields, odd offsets) answers alike."""
    days = ["", "Wed, ", "Mon, ", "wed, ", "Wed ", "Xyz, "]
    dates = ["02 Dec 2026", "2 Dec 2026", "31 Feb 2026", "00 Jan 2024", "7 dec 2026"]
    dates += ["29 Feb 2024", "01 Jan 0099", "01 Jan 1000", "01 Jan 9999", "01 Jan 2024,"]
    times = ["19:43:00", "23:59:60", "24:00:00", "00:00:00", "7:05:09", "12:61:00"]
    zones = ["+0000", "-0000", "+0100", "-0130", "+0099", "+2359", "+9999", "-2400", "GMT", "+01"]
    seen = 0
    for day in days:
        for date in dates:
            for time in times:
                for zone in zones:
                    value = f"{day}{date} {time} {zone}"
                    assert _iso(value) == _stdlib_iso(value), value
                    seen += 1
    assert seen == len(days) * len(dates) * len(times) * len(zones)


def _iso(value: str) -> str:
    try:
        return iso_date(value)
    except Exception as exc:
        return type(exc).__name__
