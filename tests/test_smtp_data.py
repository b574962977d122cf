"""The chunked DATA reader (gateway/intake/smtp_data.py) against RFC 5321's line rules.

A reference reads the same stream line by line, as aiosmtpd does; the reader must
give the same bytes however the stream is cut into network reads, leave what follows
the end of data unread, and give aiosmtpd's answers past a limit. Over real SMTP:
a message far over the size limit is refused 552 5.3.4 and the session goes on.
"""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest

from gateway.intake.smtp_data import TOO_LONG, TOO_MUCH, read_data
from tests.daemon import Daemon
from tests.mail import make_mail

LIMIT = 64 * 1024  # GatewaySMTP.line_length_limit, the reader's limit


def _reference(stream: bytes) -> tuple[bytes, bytes]:
    """(message, rest): line by line, a lone dot ends, a leading dot is dropped."""
    out, pos = [], 0
    while True:
        end = stream.index(b"\r\n", pos) + 2
        line = stream[pos:end]
        pos = end
        if line == b".\r\n":
            return b"".join(out), stream[pos:]
        out.append(line[1:] if line.startswith(b".") else line)


def _read(stream: bytes, cuts: list[int], size_limit: int | None = None) -> tuple[object, bytes]:
    """Feed ``stream`` to a StreamReader in pieces cut at ``cuts``; (result, what is left)."""

    async def run() -> tuple[object, bytes]:
        reader = asyncio.StreamReader(limit=LIMIT)
        bounds = [0, *sorted(cuts), len(stream)]

        async def feed() -> None:
            for a, b in itertools.pairwise(bounds):
                reader.feed_data(stream[a:b])
                await asyncio.sleep(0)
            reader.feed_eof()

        feeder = asyncio.ensure_future(feed())
        result = await read_data(reader, size_limit, LIMIT)
        await feeder
        return result, await reader.read()

    return asyncio.run(run())


def _random_message(rng: random.Random) -> bytes:
    pieces = [b".", b"..", b"\r\n", b"\n", b"\r", b".\r\n", b"\r\n.", b"x", b"text. ", b"=3D"]
    body = b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 400)))
    body = body.replace(b"\r\n.\r\n", b"\r\n..\r\n")  # no end of data inside (stuffed)
    if body.startswith(b".\r\n"):
        body = b"." + body
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body


def test_same_bytes_as_line_by_line_however_the_stream_is_cut() -> None:
    rng = random.Random(21)
    for _ in range(300):
        stream = _random_message(rng) + b".\r\nQUIT\r\n"
        want, rest = _reference(stream)
        cuts = [rng.randrange(len(stream)) for _ in range(rng.randrange(0, 12))]
        got, left = _read(stream, cuts)
        assert (got, left) == (want, rest), stream


def test_empty_message_and_a_leading_stuffed_dot() -> None:
    assert _read(b".\r\nQUIT\r\n", []) == (b"", b"QUIT\r\n")
    assert _read(b"..\r\n.\r\n", [1, 2]) == (b".\r\n", b"")
    assert _read(b"a\r\n\r\n.\r\n", [3, 4, 5, 6]) == (b"a\r\n\r\n", b"")


def test_a_big_message_in_many_reads_is_whole() -> None:
    line = b"QUJDRA" * 12 + b"\r\n"
    body = line * 20_000 + b"..dot\r\n" + line * 100
    got, left = _read(body + b".\r\nMAIL FROM:<a@b.test>\r\n", list(range(0, len(body), 4096)))
    assert got == line * 20_000 + b".dot\r\n" + line * 100
    assert left == b"MAIL FROM:<a@b.test>\r\n"


def test_over_the_size_limit_is_552_after_the_end_of_data() -> None:
    body = b"y" * 70 + b"\r\n"
    got, left = _read(body * 1000 + b".\r\nQUIT\r\n", [5000], size_limit=50_000)
    assert (got, left) == (TOO_MUCH, b"QUIT\r\n")
    got, _ = _read(body * 10 + b".\r\n", [], size_limit=720)  # exactly the limit: taken
    assert got == body * 10


@pytest.mark.parametrize("length", [LIMIT + 1, 3 * LIMIT])
def test_a_line_over_the_limit_is_500(length: int) -> None:
    stream = b"ok\r\n" + b"z" * length + b"\r\nok\r\n.\r\nNOOP\r\n"
    assert _read(stream, [1000]) == (TOO_LONG, b"NOOP\r\n")
    fine = b"z" * LIMIT + b"\r\n"
    assert _read(fine + b".\r\n", [10]) == (fine, b"")


def test_far_over_the_size_limit_is_refused_and_the_session_goes_on(tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = Daemon(tmp_path / "gw", max_size=1_000_000).start()
    try:
        big = make_mail(body=("b" * 76 + "\n") * 60_000)  # ~4.7 MB: nothing of it is kept
        small = make_mail(body="A printer on floor 3 is jammed.\n.leading dot\n")
        with d.smtp() as s:
            s.ehlo()
            s.mail("carol@client.test")
            s.rcpt("support@acme.test")
            code, msg = s.data(big)
            assert (code, msg.split()[0]) == (552, b"5.3.4")
            s.mail("carol@client.test")
            s.rcpt("support@acme.test")
            code, msg = s.data(small)
            assert code == 250, msg
        assert d.query("SELECT count(*) FROM messages")[0][0] == 1
        (text,) = d.query("SELECT text FROM messages")[0]
        assert ".leading dot" in text and "..leading" not in text
    finally:
        d.stop()
