"""The Dovecot harness against the stdlib imaplib: the poller's tests trust these behaviours
(login, delivery, capabilities, UID MOVE, disconnects, UIDVALIDITY changes, clean stop, TLS
with the session's CA), so they are checked here on the real server rather than assumed."""

from __future__ import annotations

import imaplib
import os
import pwd
import re
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from tests.dovecot_harness import (  # noqa: F401  (fixtures)
    Dovecot,
    _group_pids,
    dovecot,
    dovecot_factory,
)


@contextmanager
def imap(
    server: Dovecot, user: str = "support", password: str = "secret"
) -> Iterator[imaplib.IMAP4]:
    """A logged-in imaplib session, logged out (if still alive) afterwards."""
    conn = imaplib.IMAP4(server.host, server.port, timeout=10)
    try:
        conn.login(user, password)
        yield conn
    finally:
        try:
            conn.logout()
        except (imaplib.IMAP4.abort, OSError):
            conn.shutdown()  # a cut session: logout() fails and would leave the socket open


def _message(subject: str) -> tuple[str, bytes]:
    mid = f"<{uuid.uuid4().hex}@harness.test>"
    data = (
        f"From: customer@example.org\r\nTo: support@example.com\r\nSubject: {subject}\r\n"
        f"Message-ID: {mid}\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nHello.\r\n"
    ).encode()
    return mid, data


def _uidvalidity(conn: imaplib.IMAP4, folder: str) -> int:
    typ, _ = conn.select(folder)
    assert typ == "OK"
    _, values = conn.response("UIDVALIDITY")
    return int(values[0])


def test_login_works_and_bad_password_is_refused(dovecot: Dovecot) -> None:  # noqa: F811
    with imap(dovecot, "help") as conn:
        assert conn.noop()[0] == "OK"
    conn = imaplib.IMAP4(dovecot.host, dovecot.port, timeout=10)
    with pytest.raises(imaplib.IMAP4.error):
        conn.login("support", "wrong")
    conn.logout()


def test_saved_message_is_visible_over_imap_and_count_agrees(dovecot: Dovecot) -> None:  # noqa: F811
    folder = f"Saved{uuid.uuid4().hex[:8]}"
    assert dovecot.count("support", folder) == 0  # missing folder counts as empty
    mid, data = _message("visible")
    dovecot.save("support", data, folder)
    assert dovecot.count("support", folder) == 1
    # doveadm ran as root but switched to the userdb's uid: the imap process owns the files.
    nobody = pwd.getpwnam("nobody").pw_uid
    maildir = dovecot.home("support") / "Maildir"
    assert {p.stat().st_uid for p in maildir.rglob("*")} == {nobody}
    with imap(dovecot) as conn:
        typ, num = conn.select(folder)
        assert typ == "OK" and num == [b"1"]
        typ, found = conn.uid("SEARCH", "HEADER", "Message-ID", mid)
        assert typ == "OK" and found[0].split()
        typ, fetched = conn.uid("FETCH", found[0].split()[0], "(BODY.PEEK[])")
        assert typ == "OK" and data.replace(b"\r\n", b"\n") in fetched[0][1].replace(b"\r\n", b"\n")


def test_capabilities_include_idle_move_uidplus(dovecot: Dovecot) -> None:  # noqa: F811
    # Dovecot lists MOVE and UIDPLUS only after login; the greeting's list is shorter.
    with imap(dovecot) as conn:
        typ, data = conn.capability()
        assert typ == "OK"
        caps = set(data[0].decode().upper().split())
    assert {"IDLE", "MOVE", "UIDPLUS"} <= caps


def test_uid_move_to_folder_works(dovecot: Dovecot) -> None:  # noqa: F811
    tag = uuid.uuid4().hex[:8]
    src, dst = f"In{tag}", f"Done{tag}"
    dovecot.save("help", _message("move me")[1], src)
    dovecot.save("help", _message("stay")[1], dst)  # creates dst with one message already
    with imap(dovecot, "help") as conn:
        conn.select(src)
        typ, data = conn.uid("MOVE", "1", dst)
        assert typ == "OK"
        # UIDPLUS: the server reports the new UID (COPYUID validity src-uid dst-uid).
        # (RFC 6851 sends it in an untagged OK before the EXPUNGE; imaplib keeps that aside.)
        texts = [*conn.untagged_responses.get("OK", []), *data]
        assert any(re.search(rb"\[COPYUID \d+ 1 2\]", t) for t in texts if isinstance(t, bytes))
    assert dovecot.count("help", src) == 0
    assert dovecot.count("help", dst) == 2


def test_kick_ends_an_open_session(dovecot_factory: Callable[..., Dovecot]) -> None:  # noqa: F811
    server = dovecot_factory()
    with imap(server) as conn:
        conn.select("INBOX")
        server.kick("support")
        # doveadm returns once the session is signalled; its process ends a moment
        # later, so a NOOP may still be answered. Bounded: 100 tries, about 10 s.
        with pytest.raises((imaplib.IMAP4.abort, OSError)):
            for _ in range(100):
                conn.noop()
                time.sleep(0.1)
    with imap(server) as conn:  # the server itself is still there
        assert conn.noop()[0] == "OK"


def test_set_uidvalidity_changes_what_select_reports(
    dovecot_factory: Callable[..., Dovecot],  # noqa: F811
) -> None:
    server = dovecot_factory({"support": "secret"})
    server.save("support", _message("before")[1])
    with imap(server) as conn:
        before = _uidvalidity(conn, "INBOX")
    new = before + 1000
    server.set_uidvalidity("support", "INBOX", new)
    with imap(server) as conn:
        assert _uidvalidity(conn, "INBOX") == new
        typ, data = conn.uid("FETCH", "1:*", "(FLAGS)")
        assert typ == "OK" and data[0] is not None  # the message survived
    assert server.count("support") == 1


def test_stop_leaves_no_process_and_restart_keeps_mail(
    dovecot_factory: Callable[..., Dovecot],  # noqa: F811
) -> None:
    server = dovecot_factory()
    server.save("support", _message("kept")[1])
    with imap(server) as conn:
        conn.select("INBOX")
        pid = server.pid
        server.stop()
        with pytest.raises((imaplib.IMAP4.abort, OSError)):
            conn.noop()
    assert not os.path.exists(f"/proc/{pid}")
    assert _group_pids(pid) == []  # no imap, auth, log or stats child left running
    server.stop()  # idempotent
    server.start()
    assert server.pid != pid
    assert server.count("support") == 1
    with imap(server) as conn:
        assert conn.select("INBOX") == ("OK", [b"1"])


def test_tls_verifies_with_the_harness_ca_and_only_with_it(dovecot: Dovecot) -> None:  # noqa: F811
    trusted = ssl.create_default_context(cafile=str(dovecot.ca_file))
    with imaplib.IMAP4_SSL(dovecot.host, dovecot.imaps_port, ssl_context=trusted) as conn:
        conn.login("support", "secret")
        assert conn.sock.version() in ("TLSv1.2", "TLSv1.3")
    for host in ("127.0.0.1", "localhost"):  # both names are in the certificate
        conn = imaplib.IMAP4(host, dovecot.port, timeout=10)
        assert "STARTTLS" in conn.capabilities
        assert conn.starttls(trusted)[0] == "OK"
        conn.login("support", "secret")
        conn.logout()
    system = ssl.create_default_context()  # the system store does not know our CA
    with pytest.raises(ssl.SSLCertVerificationError):
        imaplib.IMAP4_SSL(dovecot.host, dovecot.imaps_port, ssl_context=system)


def test_without_tls_no_starttls_is_offered(
    dovecot_factory: Callable[..., Dovecot],  # noqa: F811
) -> None:
    server = dovecot_factory(tls=False)
    assert server.imaps_port == 0
    with imap(server) as conn:  # plaintext login still works
        assert "STARTTLS" not in conn.capabilities
