"""A real Dovecot IMAP server for tests, in a temporary folder, with a passwd-file of users.

The IMAP poller must be tested against a server that really does IDLE, MOVE, UIDPLUS,
disconnects and UIDVALIDITY changes, which no fake does faithfully. The config is a private
instance's (it may run as root in a sandbox): everything Dovecot writes lives
under ``workdir``, it listens on 127.0.0.1 only, maildirs owned by ``nobody:nogroup``.

TLS is real too: a private CA and a server certificate for ``127.0.0.1`` / ``localhost`` are made
once per test session (``cryptography``, EC P-256: milliseconds, so start time does not grow),
Dovecot runs with ``ssl = yes`` and offers STARTTLS on ``port`` and implicit TLS on
``imaps_port``; ``ca_file`` is the CA a client must trust. TLS is offered, not required: plaintext
LOGIN on ``port`` stays allowed, as the plain tests need. ``Dovecot(..., tls=False)`` runs with
``ssl = no`` (no STARTTLS advertised, no imaps listener), which is what a server that cannot
do TLS looks like. Mail is placed, counted and disturbed with ``doveadm -c <conf>``, which
works on the same config and therefore on the same instance.

Use the ``dovecot`` session fixture (users ``support`` and ``help``, password ``secret``) for a
shared instance and ``dovecot_factory`` for private ones (tests that stop it, kick users or
change UIDVALIDITY). Processes are only ever signalled by the pid in ``<base_dir>/master.pid``
(and its process group, which is ours). If Dovecot cannot start, the fixture fails with the
Dovecot log; it never skips.

The fixtures use their own ``mkdtemp`` folders under ``/tmp`` rather than pytest's ``tmp_path``:
Dovecot's unprivileged users (``dovenull``, ``nobody``) must traverse the path, and pytest
resets ``/tmp/pytest-of-<user>`` to 0700 whenever another session starts, which would pull the
floor from under a running instance.

Re-export in ``tests/conftest.py``::

    from tests.dovecot_harness import dovecot, dovecot_factory  # noqa: F401
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import ipaddress
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.ports import free_port

__all__ = [
    "DOVEADM_BINARY",
    "DOVECOT_BINARY",
    "Dovecot",
    "DovecotError",
    "DovecotStartError",
    "SessionPKI",
    "dovecot",
    "dovecot_factory",
    "session_pki",
]

DOVECOT_BINARY = shutil.which("dovecot") or "/usr/sbin/dovecot"
DOVEADM_BINARY = shutil.which("doveadm") or "/usr/bin/doveadm"

#: Start takes well under a second here; the bound is for slow CI machines.
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
DOVEADM_TIMEOUT = 30.0

#: The userdb's owner of every maildir; ``doveadm`` run as root drops to it too.
MAIL_USER = "nobody"
MAIL_GROUP = "nogroup"


class DovecotStartError(RuntimeError):
    """Dovecot did not come up; the message carries its log."""


class DovecotError(RuntimeError):
    """A ``doveadm`` command failed; the message carries its output."""


class SessionPKI:
    """PEM bytes of a private CA and of a server certificate it signed (127.0.0.1, localhost)."""

    def __init__(self, ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> None:
        self.ca_pem, self.cert_pem, self.key_pem = ca_pem, cert_pem, key_pem


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None,
    signer: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = (
            builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
                critical=False,
            )
        )
    return builder.sign(signer, hashes.SHA256())


@functools.cache
def session_pki() -> SessionPKI:
    """The session's CA and server certificate, made on first use and shared by every instance.

    Python 3.13's default context sets VERIFY_X509_STRICT, so the CA has key usage and both
    certificates have key identifiers: a certificate without them would fail for the wrong
    reason.
    """
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("helpdesk-test CA", ca_key, None, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate("127.0.0.1", key, ca.subject, ca_key, ca=False)
    pem = serialization.Encoding.PEM
    return SessionPKI(
        ca.public_bytes(pem),
        cert.public_bytes(pem),
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )


def _make_traversable(path: Path) -> None:
    """chmod 755 ``path`` and add o+x to any ancestor without it.

    Dovecot's login and mail processes run as ``dovenull`` / ``nobody`` and must reach the
    sockets, the users file and the homes; a ``mkdtemp`` folder is 0700.
    """
    path.chmod(0o755)
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(stat.S_IMODE(mode) | stat.S_IXGRP | stat.S_IXOTH)


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a zombie has stopped doing anything)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != b"Z"


def _group_pids(pgid: int) -> list[int]:
    """Live processes in process group ``pgid`` (Dovecot's master and its children)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
            pids.append(int(entry))
    return pids


class Dovecot:
    """One Dovecot master with its own config, users, homes, sockets and log under ``workdir``.

    ``start()`` can be called again after ``stop()`` (same config, port and mail): a test can
    take the server away and bring it back with the mail still there.
    """

    host: str = "127.0.0.1"

    def __init__(
        self, workdir: Path, users: dict[str, str] | None = None, *, tls: bool = True
    ) -> None:
        self.workdir = Path(workdir)
        self.tls = tls
        self.users = dict(users if users is not None else {"support": "secret"})
        for name, password in self.users.items():
            if not name or any(c in name for c in ":/\n") or ":" in password or "\n" in password:
                raise ValueError(f"user name or password unusable in a passwd-file: {name!r}")
        self.port = free_port()  # plaintext, STARTTLS offered when ``tls``
        self.imaps_port = free_port() if tls else 0  # implicit TLS; 0: no listener
        self.instance_name = f"helpdesk-test-{uuid.uuid4().hex[:12]}"
        self.base_dir = self.workdir / "run"
        self.state_dir = self.workdir / "state"
        self.home_root = self.workdir / "home"
        self.users_path = self.workdir / "users"
        self.conf_path = self.workdir / "dovecot.conf"
        self.log_path = self.workdir / "dovecot.log"
        self.out_path = self.workdir / "dovecot.out"
        self.pid_path = self.base_dir / "master.pid"
        self.ca_file = self.workdir / "ca.pem"  # what a client trusts to verify this server
        self.cert_path = self.workdir / "server.pem"
        self.key_path = self.workdir / "server.key"
        self.start_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None

    # -- files ----------------------------------------------------------------------------------

    def home(self, user: str) -> Path:
        """The user's home; the maildir is ``home / "Maildir"``."""
        return self.home_root / user

    def config_text(self) -> str:
        """The dovecot.conf we run with (complete: nothing from /etc/dovecot is included)."""
        if self.tls:
            # ssl = yes offers TLS without requiring it (that would be ssl = required);
            # no ssl_dh: the ECDHE suites need none, and Dovecot 2.3 starts without it.
            ssl = f"ssl = yes\nssl_cert = <{self.cert_path}\nssl_key = <{self.key_path}"
            imaps_ssl = "\n    ssl = yes"
        else:
            ssl, imaps_ssl = "ssl = no", ""
        return f"""\
# Written by tests/dovecot_harness.py: a private instance for the tests
base_dir = {self.base_dir}
state_dir = {self.state_dir}
instance_name = {self.instance_name}
listen = 127.0.0.1
protocols = imap
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login
log_path = {self.log_path}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.users_path}
}}
userdb {{
  driver = static
  args = uid={MAIL_USER} gid={MAIL_GROUP} home={self.home_root}/%u allow_all_users=yes
}}
mail_location = maildir:~/Maildir
mail_fsync = always
# IDLE, MOVE and UIDPLUS are in Dovecot 2.3's default capability list; nothing to enable.
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.imaps_port}{imaps_ssl}
  }}
  chroot =
}}
service anvil {{
  chroot =
  # No per-IP auth penalty: every test logs in from 127.0.0.1, and one wrong-password test
  # would otherwise delay all later logins on a shared instance by 2-15 s. A failed login is
  # still answered after auth_failure_delay (2 s), as in production.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""

    def _write_files(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        _make_traversable(self.workdir)
        for d in (self.base_dir, self.state_dir, self.home_root):
            d.mkdir(exist_ok=True)
        self.users_path.write_text(
            "".join(f"{name}:{{PLAIN}}{pw}::::::\n" for name, pw in self.users.items())
        )
        self.users_path.chmod(0o644)
        if self.tls:
            pki = session_pki()
            self.ca_file.write_bytes(pki.ca_pem)
            self.ca_file.chmod(0o644)
            self.cert_path.write_bytes(pki.cert_pem)
            self.key_path.write_bytes(pki.key_pem)
            self.key_path.chmod(0o600)  # read by Dovecot's config process, which runs as root
        self.conf_path.write_text(self.config_text())
        self.conf_path.chmod(0o644)
        for name in self.users:
            self.home(name).mkdir(exist_ok=True)
        # Homes and everything in them belong to the userdb's uid/gid (mail processes run as it).
        shutil.chown(self.home_root, MAIL_USER, MAIL_GROUP)
        for root, dirs, files in os.walk(self.home_root):
            for name in dirs + files:
                shutil.chown(os.path.join(root, name), MAIL_USER, MAIL_GROUP)

    def log_text(self) -> str:
        """Dovecot's log file plus whatever the master printed, for failure messages."""
        parts = []
        for path in (self.log_path, self.out_path):
            with contextlib.suppress(OSError):
                parts.append(f"--- {path.name} ---\n{path.read_text(errors='replace')}")
        return "\n".join(parts) or "(no dovecot output)"

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        """The master's pid (from ``master.pid``) while running."""
        if self._pid is None:
            raise RuntimeError("dovecot is not running")
        return self._pid

    @property
    def running(self) -> bool:
        return self._pid is not None and _pid_alive(self._pid)

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Write the config, start the master and wait for an IMAP greeting on the port.

        The master runs with ``-F`` (foreground) as our child so that it is reaped, not left
        as a zombie, when stopped. Raises DovecotStartError with the log if it exits or does
        not greet within ``timeout``.
        """
        if self._pid is not None:
            raise RuntimeError("dovecot already running")
        if not os.path.exists(DOVECOT_BINARY):
            raise DovecotStartError(f"{DOVECOT_BINARY} not found: apt-get install dovecot-imapd")
        self._write_files()
        with contextlib.suppress(FileNotFoundError):
            self.pid_path.unlink()
        t0 = time.monotonic()
        with open(self.out_path, "ab") as out:
            self._proc = subprocess.Popen(
                [DOVECOT_BINARY, "-F", "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() can sweep the children
            )
        self._pid = self._proc.pid
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = self._pid = None
                raise DovecotStartError(
                    f"dovecot exited with {code} during start\n{self.log_text()}"
                )
            if self._greets():
                break
            if time.monotonic() - t0 > timeout:
                self.stop()
                raise DovecotStartError(
                    f"dovecot gave no IMAP greeting within {timeout:g}s\n{self.log_text()}"
                )
            time.sleep(0.05)
        with contextlib.suppress(OSError, ValueError):
            self._pid = int(self.pid_path.read_text().split()[0])
        self.start_seconds = time.monotonic() - t0

    def _greets(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0) as s:
                return s.recv(256).startswith(b"* OK")
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM the master by the pid in master.pid and wait for it; then SIGTERM what is
        left of its process group, wait, and SIGKILL the rest. Idempotent.

        The second round is needed: the master exits within a second, but an imap process
        serving a logged-in client lingers about ten seconds before it notices, keeping the
        client connected to a server that is supposedly down.
        """
        pid = self._pid
        proc, self._proc, self._pid = self._proc, None, None
        if pid is None:
            return
        with contextlib.suppress(OSError, ValueError):
            pid = int(self.pid_path.read_text().split()[0])
        pgid = proc.pid if proc is not None else pid

        def wait_until(done: Callable[[], bool], seconds: float) -> bool:
            deadline = time.monotonic() + seconds
            while True:
                if proc is not None:
                    proc.poll()  # reap the master so it does not linger as a zombie
                if done():
                    return True
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.02)

        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            os.kill(pid, signal.SIGCONT)
        wait_until(lambda: not _pid_alive(pid), STOP_TIMEOUT)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            leftovers = [p for p in {pid, *_group_pids(pgid)} if _pid_alive(p)]
            if not leftovers:
                break
            for leftover in leftovers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(leftover, sig)
            wait_until(lambda left=leftovers: not any(map(_pid_alive, left)), 3.0)
        if proc is not None:
            proc.wait(timeout=STOP_TIMEOUT)

    def __enter__(self) -> Dovecot:
        if self._pid is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- doveadm --------------------------------------------------------------------------------

    def doveadm(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run ``doveadm -c <conf> ARGS`` and return the result without checking it."""
        return subprocess.run(
            [DOVEADM_BINARY, "-c", str(self.conf_path), *args],
            input=stdin if stdin is not None else b"",
            capture_output=True,
            timeout=DOVEADM_TIMEOUT,
            check=False,
        )

    def _doveadm_ok(self, *args: str, stdin: bytes | None = None) -> str:
        result = self.doveadm(*args, stdin=stdin)
        if result.returncode != 0:
            raise DovecotError(
                f"doveadm {' '.join(args)} exited with {result.returncode}: "
                f"{result.stderr.decode(errors='replace').strip()}"
            )
        return result.stdout.decode(errors="replace")

    def create_folder(self, user: str, folder: str) -> None:
        """Create (and subscribe) ``folder``; no error if it already exists."""
        if folder.upper() == "INBOX":
            return
        result = self.doveadm("mailbox", "create", "-s", "-u", user, folder)
        if result.returncode != 0 and b"already exists" not in result.stderr:
            raise DovecotError(
                f"doveadm mailbox create {folder!r} exited with {result.returncode}: "
                f"{result.stderr.decode(errors='replace').strip()}"
            )

    def save(self, user: str, data: bytes, folder: str = "INBOX") -> None:
        """Deliver ``data`` (a whole RFC 5322 message) into ``folder``, creating it if missing.

        doveadm run as root switches to the userdb's uid, so the files belong to ``nobody``
        and the imap process can move and expunge them.
        """
        self.create_folder(user, folder)
        self._doveadm_ok("save", "-u", user, "-m", folder, stdin=data)

    def count(self, user: str, folder: str = "INBOX") -> int:
        """Messages in ``folder``; 0 if the folder does not exist."""
        result = self.doveadm("mailbox", "status", "-u", user, "messages", folder)
        if result.returncode != 0:
            if b"doesn't exist" in result.stderr or b"not found" in result.stderr.lower():
                return 0
            raise DovecotError(
                f"doveadm mailbox status {folder!r} exited with {result.returncode}: "
                f"{result.stderr.decode(errors='replace').strip()}"
            )
        # Flow format; 2.3.19 prints "INBOX messages=1", the mailbox name first.
        text = result.stdout.decode(errors="replace")
        match = re.search(r"(?:^|\s)messages=(\d+)", text)
        if match is None:
            raise DovecotError(f"unexpected doveadm mailbox status output: {text!r}")
        return int(match.group(1))

    def kick(self, user: str) -> None:
        """Cut all of the user's IMAP sessions (a real server-side disconnect)."""
        self._doveadm_ok("kick", user)

    def set_uidvalidity(self, user: str, folder: str, value: int) -> None:
        """Change the folder's UIDVALIDITY (what a restored or recreated mailbox looks like)."""
        if not 0 < value < 2**32:
            raise ValueError("UIDVALIDITY is a non-zero 32-bit number")
        self._doveadm_ok("mailbox", "update", "-u", user, "--uid-validity", str(value), folder)


def _start_or_fail(instance: Dovecot) -> Dovecot:
    try:
        instance.start()
    except DovecotStartError as exc:
        pytest.fail(f"could not start a real dovecot: {exc}", pytrace=False)
    return instance


def dovecot_workdir() -> Path:
    """A fresh folder under /tmp that Dovecot's unprivileged users can be let into (see above)."""
    return Path(tempfile.mkdtemp(prefix="dovecot-", dir="/tmp"))


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    """One real Dovecot for the whole session, users ``support`` and ``help`` (``secret``).

    Shared: tests should use their own folders or unique Message-IDs, and use
    ``dovecot_factory`` to stop, kick or change UIDVALIDITY.
    """
    workdir = dovecot_workdir()
    instance = Dovecot(workdir, {"support": "secret", "help": "secret"})
    try:
        yield _start_or_fail(instance)
    finally:
        instance.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def dovecot_factory() -> Iterator[Callable[..., Dovecot]]:
    """Start private Dovecot instances (``dovecot_factory({"u": "pw"})``, ``tls=False`` for one
    without TLS); each is stopped by pid at the end of the test, whatever the test did to it."""
    started: list[Dovecot] = []

    def factory(users: dict[str, str] | None = None, *, tls: bool = True) -> Dovecot:
        instance = Dovecot(dovecot_workdir(), users, tls=tls)
        started.append(instance)
        return _start_or_fail(instance)

    try:
        yield factory
    finally:
        for instance in started:
            instance.stop()
            shutil.rmtree(instance.workdir, ignore_errors=True)
