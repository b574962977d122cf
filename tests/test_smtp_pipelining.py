"""PIPELINING (RFC 2920; RFC 2033 requires it of LMTP, tests/test_lmtp.py): advertised,
and a pipelined group's replies in order, the positive ones to RSET, MAIL and RCPT sent
with the next reply in one write while the client's next command is already in the
reader."""

from __future__ import annotations

import asyncio
import socket

from gateway.intake.smtp import GatewaySMTP, session_options
from gateway.intake.smtp_setup import session_factory
from tests.daemon import Daemon
from tests.mail import make_mail

WRITES: list[bytes] = []


class _Counted(GatewaySMTP):
    """Our SMTP, each write of the session recorded (what the client cannot see: a
    stream socket joins writes that arrive before its read)."""

    def _cb_client_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        super()._cb_client_connected(reader, writer)
        real = writer.write

        def write(data: bytes | bytearray | memoryview) -> None:
            WRITES.append(bytes(data))
            real(data)

        writer.write = write  # type: ignore[method-assign]


async def _reply(r: asyncio.StreamReader) -> list[bytes]:
    """One whole reply's lines (a multi-line reply to its last line)."""
    lines = []
    while True:
        line = await asyncio.wait_for(r.readline(), 10)
        assert line, "connection closed"
        lines.append(line)
        if line[3:4] != b"-":
            return lines


def _session(exchanges: list[tuple[bytes, int]]) -> list[list[bytes]]:
    """Against an in-process GatewaySMTP on a loopback port, with aiosmtpd's default
    hooks (every address taken): each payload in one write, then that many replies read.
    The session's writes are in WRITES; the replies, as read, are returned."""
    WRITES.clear()

    async def main() -> list[list[bytes]]:
        loop = asyncio.get_running_loop()
        factory = session_factory(_Counted, object(), **session_options("mx.test", 10_000))
        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        got: list[list[bytes]] = []
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            await _reply(r)  # greeting
            for payload, replies in exchanges:
                w.write(payload)
                await w.drain()
                for _ in range(replies):
                    got.append(await _reply(r))
            w.close()
        finally:
            server.close()
        return got

    return asyncio.run(main())


def test_a_pipelined_group_gets_its_replies_in_one_write() -> None:
    group = (
        b"MAIL FROM:<a@client.test>\r\nRCPT TO:<one@acme.test>\r\n"
        b"RCPT TO:<two@acme.test>\r\nDATA\r\n"
    )
    data = b"Subject: x\r\n\r\nhi\r\n.\r\n"
    got = _session([(b"EHLO client.test\r\n", 1), (group, 4), (data, 1)])
    codes = [reply[-1][:3] for reply in got]
    assert codes == [b"250", b"250", b"250", b"250", b"354", b"250"]
    # The greeting; EHLO's lines in one write; MAIL, both RCPTs and DATA's 354 in one;
    # the end of data's.
    assert len(WRITES) == 4, WRITES
    assert WRITES[2].count(b"\r\n") == 4 and WRITES[2].startswith(b"250 ")
    assert WRITES[2].split(b"\r\n")[3].startswith(b"354 ")


def test_a_refusal_is_not_held_and_takes_the_held_replies_with_it() -> None:
    group = b"RSET\r\nMAIL FROM:<a@client.test>\r\nRCPT NOT:<x@acme.test>\r\nNOOP\r\n"
    got = _session([(b"EHLO client.test\r\n", 1), (group, 4)])
    codes = [reply[-1][:3] for reply in got]
    assert codes == [b"250", b"250", b"250", b"501", b"250"]
    assert [w[:3] for w in WRITES[2:]] == [b"250", b"250"], WRITES  # after greeting, EHLO
    assert WRITES[2].count(b"\r\n") == 3 and b"\r\n501 " in WRITES[2]  # RSET, MAIL, RCPT


def test_a_client_that_waits_for_each_reply_gets_each_at_once() -> None:
    """Nothing more in the reader: no reply waits (a held one would wait forever)."""
    steps = [
        (b"EHLO client.test\r\n", 1),
        (b"MAIL FROM:<a@client.test>\r\n", 1),
        (b"RCPT TO:<one@acme.test>\r\n", 1),
        (b"RCPT TO:<two@acme.test>\r\nRSE", 1),  # the next command not yet whole
        (b"T\r\n", 1),
    ]
    got = _session(steps)
    assert [reply[-1][:3] for reply in got] == [b"250"] * 5
    assert len(WRITES) == 6  # the greeting and one a reply


def test_the_daemon_advertises_pipelining_and_takes_a_pipelined_group(daemon: Daemon) -> None:
    with daemon.smtp() as s:
        s.ehlo()
        assert s.has_extn("pipelining") and s.has_extn("enhancedstatuscodes")
    mail = make_mail(sender="pipe@client.test", subject="Pipelined")
    group = (
        b"EHLO client.test\r\nMAIL FROM:<pipe@client.test>\r\n"
        b"RCPT TO:<support@acme.test>\r\nRCPT TO:<nobody@nowhere.test>\r\nDATA\r\n"
    )
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=30) as sock:
        f = sock.makefile("rb")
        assert f.readline().startswith(b"220")
        sock.sendall(group)
        codes = []
        while len(codes) < 5:
            line = f.readline()
            assert line, codes
            if line[3:4] == b" ":
                codes.append(line[:3])
        assert codes == [b"250", b"250", b"250", b"550", b"354"], codes
        lines = mail.replace(b"\r\n", b"\n").rstrip(b"\n").split(b"\n")
        sock.sendall(b"".join(b"." * line.startswith(b".") + line + b"\r\n" for line in lines))
        sock.sendall(b".\r\n")
        end = f.readline()
        sock.sendall(b"QUIT\r\n")
    assert end.startswith(b"250 2.0.0"), end
    rows = daemon.query("SELECT subject FROM messages WHERE from_addr = ?", "pipe@client.test")
    assert [r[0] for r in rows] == ["Pipelined"]
