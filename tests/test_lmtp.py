"""The LMTP listener (RFC 2033) of a real daemon, over TCP and over a unix socket.

A raw client reads every reply after DATA, so the tests see exactly what an MTA
sees: one reply per accepted recipient, in RCPT order, none for a refused one.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from routing.config import parse_config
from tests.daemon import Daemon

MAIL = (
    b"From: Client <client@example.test>\r\n"
    b"To: support@acme.test\r\n"
    b"Subject: printer on fire\r\n"
    b"Message-ID: <lmtp-1@example.test>\r\n"
    b"\r\n"
    b"It is on fire.\r\n"
)

GLOBEX_REFUSES = """
[[tenants.rules]]
name = "closed"
then = { reject = "550 5.7.1 Globex takes no mail" }
"""


class Lmtp:
    """A bare LMTP client: each command's replies as (code, text) lines."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.file = sock.makefile("rb")

    def reply(self) -> list[tuple[int, str]]:
        lines = []
        while True:
            line = self.file.readline().decode().rstrip("\r\n")
            assert line, "connection closed"
            lines.append((int(line[:3]), line[4:]))
            if line[3] == " ":
                return lines

    def cmd(self, text: str) -> list[tuple[int, str]]:
        self.sock.sendall(text.encode() + b"\r\n")
        return self.reply()

    def send(self, rcpts: list[str], data: bytes = MAIL) -> tuple[list[int], list[str]]:
        """One transaction: the RCPT codes, then every reply after the final dot."""
        assert self.cmd("MAIL FROM:<client@example.test>")[0][0] == 250
        codes = [self.cmd(f"RCPT TO:<{r}>")[0][0] for r in rcpts]
        assert self.cmd("DATA")[0][0] == 354
        self.sock.sendall(data + b".\r\n")
        accepted = sum(1 for code in codes if code == 250)
        after = [self.reply()[0] for _ in range(accepted)]
        return codes, [f"{code} {text}" for code, text in after]


def _client(sock: socket.socket) -> Lmtp:
    client = Lmtp(sock)
    assert client.reply()[0][0] == 220
    return client


@pytest.fixture
def tcp(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path / "gw", lmtp="127.0.0.1:0", extra=GLOBEX_REFUSES).start()
    try:
        yield d
    finally:
        d.stop()


def test_tcp_one_recipient_accepted_one_refused(tcp: Daemon) -> None:
    with socket.create_connection(("127.0.0.1", tcp.lmtp_port), timeout=60) as sock:
        c = _client(sock)
        lhlo = c.cmd("LHLO mta.test")
        assert (250, "ENHANCEDSTATUSCODES") in lhlo
        assert (250, "PIPELINING") in lhlo  # RFC 2033 4: an LMTP server MUST support it
        codes, after = c.send(["support@acme.test", "nobody@acme.test"])
        assert codes == [250, 550]
        assert len(after) == 1 and tcp.ref(after[0]).startswith("ACME-"), after
        assert c.cmd("QUIT")[0][0] == 221
    rows = tcp.query("SELECT tenant, source FROM messages")
    assert [(r[0], r[1]) for r in rows] == [("acme", "lmtp")]


def test_per_recipient_replies_differ_after_data(tcp: Daemon) -> None:
    """One tenant takes the mail, the other's rule refuses it: two replies, in RCPT
    order, and only the refused recipient is the MTA's to bounce."""
    with socket.create_connection(("127.0.0.1", tcp.lmtp_port), timeout=60) as sock:
        c = _client(sock)
        c.cmd("LHLO mta.test")
        codes, after = c.send(["help@globex.test", "support@acme.test"])
        assert codes == [250, 250]
        assert after[0] == "550 5.7.1 Globex takes no mail", after
        assert tcp.ref(after[1]).startswith("ACME-"), after
    assert [r[0] for r in tcp.query("SELECT tenant FROM messages")] == ["acme"]


def test_helo_and_ehlo_are_not_lmtp(tcp: Daemon) -> None:
    with socket.create_connection(("127.0.0.1", tcp.lmtp_port), timeout=60) as sock:
        c = _client(sock)
        assert c.cmd("EHLO mta.test")[0][0] == 500
        assert c.cmd("HELO mta.test")[0][0] == 500


def test_unix_socket_two_tenants_two_replies(tmp_path: Path) -> None:
    path = tmp_path / "lmtp.sock"
    path.write_bytes(b"")  # not a socket: the daemon must refuse to replace it
    d = Daemon(tmp_path / "gw", lmtp=str(path))
    with pytest.raises(
        RuntimeError, match=r"lmtp\.listen: .*lmtp\.sock exists and is not a socket"
    ):
        d.start()
    path.unlink()
    d.start()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(60)
            sock.connect(str(path))
            c = _client(sock)
            c.cmd("LHLO mta.test")
            codes, after = c.send(["support@acme.test", "help@globex.test"])
        assert codes == [250, 250]
        assert d.ref(after[0]).startswith("ACME-"), after
        assert d.ref(after[1]).startswith("GLOBEX-"), after
        rows = d.query("SELECT tenant FROM messages ORDER BY tenant")
        assert [r[0] for r in rows] == ["acme", "globex"]
    finally:
        d.stop()
    assert not path.exists()  # removed on the way out


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:2424", ("127.0.0.1", 2424, None)),
        ("/tmp/lmtp.sock", ("", 0, Path("/tmp/lmtp.sock"))),
        ("unix:lmtp.sock", ("", 0, Path("/tmp/lmtp.sock"))),
    ],
)
def test_listen_forms(listen: str, expected: tuple[str, int, Path | None]) -> None:
    parsed = parse_config(Path("/tmp/gateway.toml"), f'[lmtp]\nlisten = "{listen}"\n')
    assert parsed.checker.problems == []
    lmtp = parsed.config.lmtp
    assert (lmtp.host, lmtp.port, lmtp.path) == expected


def test_bad_listen_names_key_and_line() -> None:
    parsed = parse_config(Path("/etc/gw/gateway.toml"), '\n[lmtp]\nlisten = "nowhere"\n')
    assert parsed.checker.problems == [
        "/etc/gw/gateway.toml:3: lmtp.listen: expected HOST:PORT, /path/to/socket or unix:path"
    ]
    assert not parse_config(Path("/x.toml"), "").config.lmtp.enabled
    parsed = parse_config(Path("/x.toml"), '[lmtp]\nlisten = "/no/such/dir/lmtp.sock"\n')
    assert parsed.checker.problems == ["/x.toml:2: lmtp.listen: no such folder: /no/such/dir"]
