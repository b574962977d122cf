"""gateway.intake.scan against a real clamd (tests/clamd_harness.py), plus a few fakes where a real
clamd cannot be made to misbehave (each fake says so).

Contract under test (gateway/intake/scan.py's docstring): only ``stream: OK`` is Clean;
the size-limit reply is Unscannable; down, hung, garbage are Unavailable; the deadline is
absolute; nothing raises.
"""

from __future__ import annotations

import asyncio
import io
import socket
import time
import uuid
import zipfile
from collections.abc import Awaitable, Callable, Coroutine
from email.message import EmailMessage
from typing import Any, TypeVar

import pytest

from gateway.intake.scan import Scanner, ScannerConfig
from gateway.intake.scan_result import Clean, Infected, Unavailable, Unscannable, parse_reply
from tests.clamd_harness import EICAR, Clamd

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def scanner(address: str, **kwargs: Any) -> Scanner:
    return Scanner(ScannerConfig(address=address, **kwargs))


def zip_of(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, data)
    return buf.getvalue()


def refused_address() -> str:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"127.0.0.1:{port}"


# --------------------------------------------------------------------------------------------
# Real clamd: verdicts
# --------------------------------------------------------------------------------------------


def test_clean_bytes_are_clean(clamd: Clamd) -> None:
    s = scanner(clamd.address)
    before = time.time()
    assert run(s.scan(b"Hello, helpdesk.\r\n")) == Clean()
    assert s.reachable is True
    assert s.last_checked is not None and s.last_checked >= before


@pytest.mark.parametrize("form", ["unix:", "path"])
def test_unix_socket_address(clamd: Clamd, form: str) -> None:
    assert clamd.socket_path is not None
    address = f"unix:{clamd.socket_path}" if form == "unix:" else str(clamd.socket_path)
    s = scanner(address)
    assert run(s.scan(b"plain text")) == Clean()
    assert isinstance(run(s.scan(EICAR)), Infected)


def test_empty_stream_is_clean(clamd: Clamd) -> None:
    assert run(scanner(clamd.address).scan(b"")) == Clean()


def test_eicar_is_infected(clamd: Clamd) -> None:
    verdict = run(scanner(clamd.address).scan(EICAR))
    assert isinstance(verdict, Infected)
    # .hdb signatures come back with clamd's ".UNOFFICIAL" suffix.
    assert verdict.signature.startswith("Eicar-Test-Signature")
    assert not verdict.limits_exceeded


def test_eicar_inside_zip_is_infected(clamd: Clamd) -> None:
    verdict = run(scanner(clamd.address).scan(zip_of("invoice.txt", EICAR)))
    assert isinstance(verdict, Infected)
    assert verdict.signature.startswith("Eicar-Test-Signature")


def test_eicar_base64_attachment_in_email_is_infected(clamd: Clamd) -> None:
    msg = EmailMessage()
    msg["From"] = "customer@example.org"
    msg["To"] = "support@tenant.example"
    msg["Subject"] = "see attachment"
    msg["Message-ID"] = "<scan-test@example.org>"
    msg.set_content("Please look at the attached file.\n")
    msg.add_attachment(EICAR, maintype="application", subtype="octet-stream", filename="a.bin")
    raw = msg.as_bytes()
    assert EICAR not in raw  # only the base64 form is on the wire: clamd must decode MIME
    assert b"Content-Transfer-Encoding: base64" in raw

    verdict = run(scanner(clamd.address).scan(raw))
    assert isinstance(verdict, Infected)
    assert verdict.signature.startswith("Eicar-Test-Signature")


def test_nested_zip_over_max_recursion_is_not_clean(clamd: Clamd) -> None:
    # Unique innermost content: clamd caches clean results by hash, so inner layers that an
    # earlier scan saw (at a shallower depth) would be skipped and the reply would be OK.
    data = f"harmless {uuid.uuid4()}".encode()
    name = "a.txt"
    for depth in range(25):  # MaxRecursion is 17
        data, name = zip_of(name, data), f"layer{depth}.zip"
    verdict = run(scanner(clamd.address).scan(data))
    assert isinstance(verdict, Infected)
    assert verdict.signature.startswith("Heuristics.Limits.Exceeded")
    assert verdict.limits_exceeded


def test_scan_many_first_non_clean_wins(clamd: Clamd) -> None:
    s = scanner(clamd.address)
    assert run(s.scan_many([])) == Clean()
    assert run(s.scan_many([b"a", b"b", b"c"])) == Clean()
    verdict = run(s.scan_many([b"clean", EICAR, b"x" * 10]))
    assert isinstance(verdict, Infected)


def test_ping_live_clamd(clamd: Clamd) -> None:
    s = scanner(clamd.address)
    assert s.reachable is None and s.last_checked is None
    assert run(s.ping()) is True
    assert s.reachable is True and s.last_checked is not None


# --------------------------------------------------------------------------------------------
# Real clamd: size limit
# --------------------------------------------------------------------------------------------


def test_instream_size_limit_is_unscannable(clamd_factory: Callable[..., Clamd]) -> None:
    small = clamd_factory(stream_max_length="1M")
    one_mib = 1024 * 1024

    async def main() -> None:
        for address in (small.tcp_address, small.unix_address):
            assert address is not None
            s = scanner(address)
            # clamd answers "INSTREAM size limit exceeded. ERROR" and closes while we are still
            # sending; the reply must be read despite the reset, every time.
            for _ in range(5):
                verdict = await s.scan(b"A" * (2 * one_mib))
                assert isinstance(verdict, Unscannable), verdict
                assert "INSTREAM size limit exceeded" in verdict.reason
            assert isinstance(await s.scan(b"A" * (one_mib + 1)), Unscannable)
            # The limit is inclusive: exactly StreamMaxLength bytes are scanned.
            assert await s.scan(b"A" * one_mib) == Clean()
            assert s.reachable is True

    run(main())


def test_max_stream_is_unscannable_without_contacting_clamd() -> None:
    s = scanner(refused_address(), max_stream=1000)
    verdict = run(s.scan(b"x" * 1001))
    assert isinstance(verdict, Unscannable)
    assert s.reachable is None  # clamd was never asked
    assert isinstance(run(s.scan(b"x" * 1000)), Unavailable)  # at the limit: it is asked


# --------------------------------------------------------------------------------------------
# Real clamd: down, restarted, hung
# --------------------------------------------------------------------------------------------


def test_stopped_clamd_is_unavailable_then_recovers(
    clamd_factory: Callable[..., Clamd],
) -> None:
    private = clamd_factory()
    s = scanner(private.address, deadline=5.0)
    assert run(s.ping()) is True

    private.stop()  # SIGTERM by pid, waited for
    verdict = run(s.scan(b"hello"))
    assert isinstance(verdict, Unavailable), verdict
    assert s.reachable is False
    assert run(s.ping()) is False
    assert s.reachable is False
    unix = private.unix_address
    assert unix is not None
    assert isinstance(run(scanner(unix).scan(b"hello")), Unavailable)

    private.start()  # same config, port and socket
    assert run(s.scan(b"hello")) == Clean()
    assert s.reachable is True


def test_probe_forever_tracks_reachability(clamd_factory: Callable[..., Clamd]) -> None:
    private = clamd_factory()
    s = scanner(private.address, ping_timeout=1.0)
    interval = 0.1

    async def wait_for(predicate: Callable[[], bool], limit: float) -> float:
        t0 = time.monotonic()
        while not predicate():
            assert time.monotonic() - t0 < limit, "probe did not notice in time"
            await asyncio.sleep(0.01)
        return time.monotonic() - t0

    async def main() -> None:
        probe = asyncio.create_task(s.probe_forever(interval))
        try:
            await wait_for(lambda: s.reachable is True, 5.0)
            await asyncio.to_thread(private.stop)
            await wait_for(lambda: s.reachable is False, 5.0)
            await asyncio.to_thread(private.start)
            # F2: back to true within one probe interval (+ ping round trip and slack).
            await wait_for(lambda: s.reachable is True, interval + 1.0)
        finally:
            probe.cancel()
            with pytest.raises(asyncio.CancelledError):
                await probe

    run(main())


def test_frozen_clamd_is_unavailable_at_the_deadline(clamd: Clamd) -> None:
    # SIGSTOP is a real hang: the kernel still accepts connections and buffers our upload,
    # clamd never answers. The bounds check the deadline's correctness, not speed.
    s = scanner(clamd.address, deadline=1.0, ping_timeout=0.5)
    clamd.freeze()
    try:

        async def main() -> None:
            t0 = time.monotonic()
            verdict = await s.scan(b"B" * (4 * 1024 * 1024))  # bigger than socket buffers
            elapsed = time.monotonic() - t0
            assert isinstance(verdict, Unavailable), verdict
            assert "deadline" in verdict.reason
            assert 0.8 <= elapsed <= 3.0, elapsed
            assert s.reachable is False

            # One absolute deadline for all parts, not one per part.
            t0 = time.monotonic()
            verdict = await s.scan_many([b"a", b"b", b"c", b"d"])
            elapsed = time.monotonic() - t0
            assert isinstance(verdict, Unavailable), verdict
            assert 0.8 <= elapsed <= 3.0, elapsed

            t0 = time.monotonic()
            assert await s.ping() is False
            assert time.monotonic() - t0 <= 2.0

        run(main())
    finally:
        clamd.thaw()
    assert run(s.scan(b"after thaw")) == Clean()
    assert s.reachable is True


def test_refused_port_is_unavailable() -> None:
    s = scanner(refused_address())
    verdict = run(s.scan(b"hello"))
    assert isinstance(verdict, Unavailable)
    assert "Connect" in verdict.reason or "refused" in verdict.reason.lower()
    assert s.reachable is False
    assert run(s.ping()) is False


def test_missing_unix_socket_is_unavailable(tmp_path: Any) -> None:
    verdict = run(scanner(f"unix:{tmp_path}/nope.sock").scan(b"hello"))
    assert isinstance(verdict, Unavailable)


# --------------------------------------------------------------------------------------------
# Fakes: misbehaviour a real clamd cannot be made to produce on demand
# --------------------------------------------------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_instream(reader: asyncio.StreamReader) -> None:
    """Consume a request like clamd does: the command, and for zINSTREAM every chunk up to the
    zero-length one."""
    if await reader.readuntil(b"\0") != b"zINSTREAM\0":
        return
    while True:
        size = int.from_bytes(await reader.readexactly(4), "big")
        if size == 0:
            return
        await reader.readexactly(size)


async def with_fake_server(handler: Handler, body: Callable[[str], Awaitable[T]]) -> T:
    """Run a FAKE clamd on 127.0.0.1 with ``handler`` for the duration of ``body(address)``."""
    tasks: set[asyncio.Task[None]] = set()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            tasks.discard(task)

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        return await body(f"127.0.0.1:{port}")
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await server.wait_closed()


def test_fake_garbage_reply_is_unavailable() -> None:
    # FAKE clamd: a real one cannot be made to answer garbage.
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_instream(reader)
        writer.write(b"hello\0")
        await writer.drain()

    async def body(address: str) -> None:
        s = scanner(address, deadline=5.0)
        verdict = await s.scan(b"data")
        assert isinstance(verdict, Unavailable), verdict
        assert "hello" in verdict.reason
        assert s.reachable is False
        assert await s.ping() is False  # "hello" is not PONG either

    run(with_fake_server(garbage, body))


@pytest.mark.parametrize(
    "reply",
    [
        b"stream: OK",  # no terminator, then close: possibly truncated
        b"",  # close without a word
        b"stream: OK\0",  # sent before reading the stream: cannot have scanned it
        b"x" * 10000,  # not a clamd line
    ],
)
def test_fake_untrustworthy_ok_is_unavailable(reply: bytes) -> None:
    # FAKE clamd: replies a real one does not send.
    async def early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(reply)
        await writer.drain()

    async def body(address: str) -> None:
        verdict = await scanner(address, deadline=5.0).scan(b"D" * (8 * 1024 * 1024))
        assert isinstance(verdict, Unavailable), verdict

    run(with_fake_server(early, body))


def test_fake_drip_feed_hits_absolute_deadline() -> None:
    # FAKE clamd that is never idle long enough for an idle timer: one byte every 0.1 s, no NUL.
    # An idle timeout would wait forever; the absolute deadline must not.
    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_instream(reader)
        for _ in range(200):
            writer.write(b"s")
            await writer.drain()
            await asyncio.sleep(0.1)

    async def body(address: str) -> None:
        t0 = time.monotonic()
        verdict = await scanner(address, deadline=1.0).scan(b"data")
        elapsed = time.monotonic() - t0
        assert isinstance(verdict, Unavailable), verdict
        assert 0.8 <= elapsed <= 3.0, elapsed

    run(with_fake_server(drip, body))


def test_fake_newline_form_ok_is_clean() -> None:
    # FAKE clamd using the newline form (what clamd sends for nINSTREAM) after reading it all.
    async def ok_newline(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_instream(reader)
        writer.write(b"stream: OK\n")
        await writer.drain()

    async def body(address: str) -> None:
        assert await scanner(address).scan(b"data" * 100000) == Clean()

    run(with_fake_server(ok_newline, body))


# --------------------------------------------------------------------------------------------
# Pure parsing and configuration
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"stream: OK\0", Clean()),
        (b"stream: OK\n", Clean()),
        (b"stream: OK", Unavailable),
        (b"stream: ok\0", Unavailable),
        (b"stream: OK \0", Unavailable),
        (b"OK\0", Unavailable),
        (b"stream: Eicar-Test-Signature FOUND\0", Infected("Eicar-Test-Signature")),
        (
            b"stream: Heuristics.Limits.Exceeded.MaxRecursion FOUND\0",
            Infected("Heuristics.Limits.Exceeded.MaxRecursion"),
        ),
        (b"stream:  FOUND\0", Unavailable),
        (b"INSTREAM size limit exceeded. ERROR\0", Unscannable),
        (b"INSTREAM size limit exceeded. ERROR\n", Unscannable),
        (b"stream: Can't allocate memory ERROR\0", Unavailable),
        (b"COMMAND READ TIMED OUT\0", Unavailable),
        (b"UNKNOWN COMMAND\0", Unavailable),
        (b"stream: OK\0\0", Unavailable),
        (b"\xffstream: OK\0", Unavailable),
        (b"", Unavailable),
    ],
)
def test_parse_reply(raw: bytes, expected: object) -> None:
    verdict = parse_reply(raw)
    if isinstance(expected, type):
        assert isinstance(verdict, expected), verdict
    else:
        assert verdict == expected


def test_parse_reply_ok_before_end_of_stream_is_not_clean() -> None:
    assert isinstance(parse_reply(b"stream: OK\0", complete=False), Unavailable)
    assert isinstance(
        parse_reply(b"INSTREAM size limit exceeded. ERROR\0", complete=False), Unscannable
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"address": "localhost"},
        {"address": "host:port"},
        {"address": "127.0.0.1:0"},
        {"address": "unix:"},
        {"address": "127.0.0.1:3310", "deadline": 0},
        {"address": "127.0.0.1:3310", "chunk_size": 0},
        {"address": "127.0.0.1:3310", "max_stream": -1},
        {"address": "127.0.0.1:3310", "ping_timeout": 0},
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ScannerConfig(**kwargs)


def test_config_accepts_address_forms() -> None:
    for address in ("127.0.0.1:3310", "[::1]:3310", "unix:/run/clamd.sock", "/run/clamd.sock"):
        ScannerConfig(address=address)
