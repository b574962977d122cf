"""STARTTLS on the SMTP listener, with a certificate from a private CA (trustme): a
client that requires TLS verifies it and delivers; with require_tls, a client that
does not start TLS is refused before MAIL, a bad certificate path is a config error,
and plaintext sent behind STARTTLS never runs inside the TLS session."""

from __future__ import annotations

import smtplib
import socket
import ssl
from pathlib import Path

import pytest
import trustme

from tests.daemon import Daemon
from tests.mail import make_mail


@pytest.fixture
def ca(tmp_path: Path) -> trustme.CA:
    return trustme.CA()


def _tls_daemon(tmp_path: Path, ca: trustme.CA, require: bool) -> Daemon:
    cert = ca.issue_cert("gw.test", "127.0.0.1")
    home = tmp_path / "gw"
    home.mkdir()
    cert.private_key_pem.write_to_path(str(home / "smtp.key"))
    cert.cert_chain_pems[0].write_to_path(str(home / "smtp.crt"))
    d = Daemon(home)
    keys = 'tls_cert = "smtp.crt"\ntls_key = "smtp.key"\n'
    keys += f"require_tls = {str(require).lower()}\n"
    text = d.config.read_text().replace("[smtp]\n", "[smtp]\n" + keys, 1)
    d.config.write_text(text)
    return d


def _client_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


def test_a_client_that_requires_tls_delivers(tmp_path: Path, ca: trustme.CA) -> None:
    d = _tls_daemon(tmp_path, ca, require=True).start()
    try:
        with smtplib.SMTP("127.0.0.1", d.port, local_hostname="client.test", timeout=30) as s:
            s.ehlo()
            assert s.has_extn("starttls")
            code, _ = s.starttls(context=_client_context(ca))  # verifies chain and name
            assert code == 220
            peer = s.sock.getpeercert()
            assert peer is not None
            assert ("DNS", "gw.test") in peer["subjectAltName"]
            assert s.sock.version() in ("TLSv1.2", "TLSv1.3")
            s.ehlo()
            s.sendmail("c@x.test", ["support@acme.test"], make_mail(subject="over TLS"))
        assert [t["subject"] for t in d.dump()] == ["over TLS"]
        # Without STARTTLS the same server refuses mail: nothing reaches the store.
        with smtplib.SMTP("127.0.0.1", d.port, local_hostname="client.test", timeout=30) as s:
            s.ehlo()
            code, msg = s.mail("c@x.test")
            assert code == 530 and b"STARTTLS" in msg
        # A client that trusts another CA does not get through the handshake.
        other = ssl.create_default_context()
        trustme.CA().configure_trust(other)
        with smtplib.SMTP("127.0.0.1", d.port, local_hostname="client.test", timeout=30) as s:
            s.ehlo()
            with pytest.raises(ssl.SSLCertVerificationError):
                s.starttls(context=other)
        assert len(d.dump()) == 1
    finally:
        d.stop()


def test_tls_offered_but_not_required(tmp_path: Path, ca: trustme.CA) -> None:
    d = _tls_daemon(tmp_path, ca, require=False).start()
    try:
        with smtplib.SMTP("127.0.0.1", d.port, local_hostname="client.test", timeout=30) as s:
            s.ehlo()
            assert s.has_extn("starttls")
            s.sendmail("c@x.test", ["support@acme.test"], make_mail(subject="plain"))
        assert [t["subject"] for t in d.dump()] == ["plain"]
    finally:
        d.stop()


def test_bad_certificate_is_a_config_error(tmp_path: Path, ca: trustme.CA) -> None:
    d = _tls_daemon(tmp_path, ca, require=True)
    (d.home / "smtp.key").write_text("not a key\n")
    out = d.cli("config", "check")
    assert out.returncode == 1
    assert b"smtp.tls_cert: cannot load the certificate and key" in out.stderr


def test_plaintext_pipelined_after_starttls_is_dropped(tmp_path: Path, ca: trustme.CA) -> None:
    """CVE-2011-0411's kind: commands sent in the clear behind STARTTLS, in its packet,
    are never run inside the TLS session (RFC 3207 4.2), PIPELINING offered or not."""
    d = _tls_daemon(tmp_path, ca, require=False).start()
    try:
        with socket.create_connection(("127.0.0.1", d.port), timeout=30) as raw:
            f = raw.makefile("rb")
            assert f.readline().startswith(b"220")
            raw.sendall(b"EHLO client.test\r\n")
            while f.readline()[3:4] != b" ":
                pass
            raw.sendall(b"STARTTLS\r\nRSET\r\nMAIL FROM:<intruder@evil.test>\r\n")
            assert f.readline().startswith(b"220")
            tls = _client_context(ca).wrap_socket(raw, server_hostname="gw.test")
            g = tls.makefile("rb")
            tls.sendall(b"EHLO client.test\r\n")
            lines = [g.readline()]
            while lines[-1][3:4] != b" ":
                lines.append(g.readline())
            # The first reply inside TLS is EHLO's own (no answers to the injected lines)
            assert len(lines) > 2 and b"250-PIPELINING\r\n" in lines, lines
            # and the injected MAIL never ran: a RCPT needs one.
            tls.sendall(b"RCPT TO:<support@acme.test>\r\n")
            rcpt = g.readline()
            tls.sendall(b"QUIT\r\n")
        assert rcpt.startswith(b"503 ") and b"MAIL" in rcpt, rcpt
    finally:
        d.stop()
