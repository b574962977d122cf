"""A real clamd for tests, in a temporary folder, with a one-line signature database.

No freshclam and no network: ``db/test.hdb`` holds the EICAR test file's MD5 and size, which is
enough for clamd to start (in about a second) and to detect EICAR, also inside zips and MIME.
The config is production's (docs/daemon.md, "ClamAV (clamd)": AlertExceedsMax, MaxScanTime,
MaxRecursion, MaxFiles, ScanMail, StreamMaxLength), because clamd's defaults fail open.

Use the ``clamd`` session fixture for a shared instance, ``clamd_factory`` for private ones
(fault tests that stop or freeze clamd, or a different ``StreamMaxLength``), or the
``running_clamd()`` context manager outside pytest. Processes are only ever signalled by the pid
we started. If clamd cannot start, the fixture fails with the clamd log; it never skips.

Re-export in ``tests/conftest.py``::

    from tests.clamd_harness import clamd, clamd_factory  # noqa: F401
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.ports import free_port

__all__ = [
    "CLAMD_BINARY",
    "EICAR",
    "EICAR_HDB_LINE",
    "Clamd",
    "ClamdStartError",
    "clamd",
    "clamd_factory",
    "running_clamd",
]

#: The EICAR anti-virus test file (68 bytes). Harmless by design; every scanner detects it.
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
EICAR_MD5 = "44d88612fea8a8f36de82e1278abb02f"
EICAR_HDB_LINE = f"{EICAR_MD5}:{len(EICAR)}:Eicar-Test-Signature"
assert hashlib.md5(EICAR).hexdigest() == EICAR_MD5 and len(EICAR) == 68

CLAMD_BINARY = shutil.which("clamd") or "/usr/sbin/clamd"

#: How long clamd may take to answer PING after start before we give up. It takes about a second
#: with the one-line database; the bound is for slow CI machines.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


class ClamdStartError(RuntimeError):
    """clamd did not come up; the message carries its log."""


class Clamd:
    """One clamd process with its own config, database, sockets and log under ``workdir``.

    ``address`` is the TCP address (``"127.0.0.1:PORT"``) if TCP is enabled, else the unix one;
    ``tcp_address`` / ``unix_address`` give each explicitly. ``start()`` can be called again
    after ``stop()`` with the same config, port and socket (F2: stop clamd, then restart it).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        stream_max_length: str = "50M",
        tcp: bool = True,
        unix: bool = True,
        extra_config: str = "",
    ) -> None:
        if not (tcp or unix):
            raise ValueError("clamd needs at least one of tcp/unix")
        self.workdir = Path(workdir)
        self.stream_max_length = stream_max_length
        self.db_dir = self.workdir / "db"
        self.conf_path = self.workdir / "clamd.conf"
        self.log_path = self.workdir / "clamd.log"
        self.out_path = self.workdir / "clamd.out"
        self.socket_path = self.workdir / "clamd.sock" if unix else None
        self.port = free_port() if tcp else None
        self.extra_config = extra_config
        self.start_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        if self.socket_path is not None and len(str(self.socket_path).encode()) >= 100:
            raise ValueError(f"unix socket path too long for AF_UNIX: {self.socket_path}")
        self._write_files()

    # -- addresses ------------------------------------------------------------------------------

    @property
    def tcp_address(self) -> str | None:
        return None if self.port is None else f"127.0.0.1:{self.port}"

    @property
    def unix_address(self) -> str | None:
        return None if self.socket_path is None else f"unix:{self.socket_path}"

    @property
    def address(self) -> str:
        """For ``ScannerConfig(address=...)``."""
        address = self.tcp_address or self.unix_address
        assert address is not None  # guaranteed by __init__
        return address

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("clamd is not running")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- files ----------------------------------------------------------------------------------

    def config_text(self) -> str:
        """The clamd.conf we run with; reported verbatim so it can be copied to production."""
        lines = [
            "# Written by tests/clamd_harness.py",
            "Foreground yes",
            f"DatabaseDirectory {self.db_dir}",
            f"LogFile {self.log_path}",
            "LogTime yes",
            f"PidFile {self.workdir / 'clamd.pid'}",
            f"TemporaryDirectory {self.workdir / 'tmp'}",
        ]
        if self.socket_path is not None:
            lines += [f"LocalSocket {self.socket_path}", "LocalSocketMode 666"]
        if self.port is not None:
            lines += [f"TCPSocket {self.port}", "TCPAddr 127.0.0.1"]
        if os.geteuid() == 0:
            # clamd only switches user if told to; say root explicitly so no packaged default
            # (Debian's is "clamav") and no DatabaseOwner check can get in the way in a sandbox.
            lines.append("User root")
        lines += [
            # Limits: clamd's defaults fail open (a file over a limit is OK; MaxScanTime 0 is none).
            "AlertExceedsMax yes",
            "MaxScanTime 30000",
            f"StreamMaxLength {self.stream_max_length}",
            "MaxRecursion 17",
            "MaxFiles 10000",
            "ScanMail yes",
            "ScanArchive yes",
        ]
        if self.extra_config:
            lines.append(self.extra_config.strip())
        return "\n".join(lines) + "\n"

    def _write_files(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.db_dir.mkdir(exist_ok=True)
        (self.workdir / "tmp").mkdir(exist_ok=True)
        (self.db_dir / "test.hdb").write_text(EICAR_HDB_LINE + "\n")
        self.conf_path.write_text(self.config_text())

    def log_text(self) -> str:
        """clamd's log file plus whatever it printed, for failure messages."""
        parts = []
        for path in (self.log_path, self.out_path):
            with contextlib.suppress(OSError):
                parts.append(f"--- {path.name} ---\n{path.read_text(errors='replace')}")
        return "\n".join(parts) or "(no clamd output)"

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> float:
        """Start clamd and wait for PING -> PONG. Returns (and records) the seconds it took.

        Raises ClamdStartError with the log if clamd exits or does not answer in ``timeout``.
        """
        if self.running:
            raise RuntimeError("clamd already running")
        if not os.path.exists(CLAMD_BINARY):
            raise ClamdStartError(f"{CLAMD_BINARY} not found: apt-get install -y clamav-daemon")
        t0 = time.monotonic()
        with open(self.out_path, "ab") as out:
            self._proc = subprocess.Popen(
                [CLAMD_BINARY, "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the test terminal is ours to handle
            )
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise ClamdStartError(f"clamd exited with {code} during start\n{self.log_text()}")
            if self.ping(timeout=1.0):
                break
            if time.monotonic() - t0 > timeout:
                self.stop()
                raise ClamdStartError(
                    f"clamd did not answer PING within {timeout:g}s\n{self.log_text()}"
                )
            time.sleep(0.05)
        self.start_seconds = time.monotonic() - t0
        return self.start_seconds

    def ping(self, timeout: float = 1.0) -> bool:
        """Synchronous zPING on every configured socket (test-side readiness check only)."""
        targets: list[tuple[int, object]] = []
        if self.socket_path is not None:
            targets.append((socket.AF_UNIX, str(self.socket_path)))
        if self.port is not None:
            targets.append((socket.AF_INET, ("127.0.0.1", self.port)))
        for family, target in targets:
            try:
                with socket.socket(family, socket.SOCK_STREAM) as s:
                    s.settimeout(timeout)
                    s.connect(target)
                    s.sendall(b"zPING\0")
                    reply = b""
                    while b"\0" not in reply:
                        chunk = s.recv(64)
                        if not chunk:
                            break
                        reply += chunk
            except OSError:
                return False
            if reply != b"PONG\0":
                return False
        return True

    def stop(self) -> None:
        """SIGTERM by pid, wait, then SIGKILL. Idempotent. Thaws first: a stopped process
        cannot act on SIGTERM."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
                os.kill(proc.pid, signal.SIGCONT)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=STOP_TIMEOUT)
        else:
            proc.wait()

    def kill(self) -> None:
        """SIGKILL by pid at once (a crash rather than a clean stop)."""
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, signal.SIGKILL)
        self.stop()

    def freeze(self) -> None:
        """SIGSTOP: a real hang. Connections are still accepted by the kernel (listen backlog)
        but nothing is ever answered."""
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after :meth:`freeze`."""
        os.kill(self.pid, signal.SIGCONT)

    def __enter__(self) -> Clamd:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_clamd(workdir: Path | None = None, **kwargs: object) -> Iterator[Clamd]:
    """Start a clamd (in a fresh temp dir unless ``workdir`` is given), yield it, stop it."""
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="clamd-")))
        instance = Clamd(workdir, **kwargs)  # type: ignore[arg-type]
        stack.enter_context(instance)
        yield instance


def _start_or_fail(instance: Clamd) -> Clamd:
    try:
        instance.start()
    except ClamdStartError as exc:
        pytest.fail(f"could not start a real clamd: {exc}", pytrace=False)
    return instance


@pytest.fixture(scope="session")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clamd]:
    """One real clamd for the whole session (TCP and unix socket, StreamMaxLength 50M).

    Tests that freeze it must thaw it in a ``finally``; tests that stop it should use
    ``clamd_factory`` instead.
    """
    instance = Clamd(tmp_path_factory.mktemp("clamd"))
    try:
        yield _start_or_fail(instance)
    finally:
        instance.stop()


@pytest.fixture
def clamd_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Clamd]]:
    """Start private clamd instances (``clamd_factory(stream_max_length="1M")``); each is
    stopped by pid at the end of the test, whatever the test did to it."""
    started: list[Clamd] = []

    def factory(**kwargs: object) -> Clamd:
        instance = Clamd(tmp_path_factory.mktemp("clamd"), **kwargs)  # type: ignore[arg-type]
        started.append(instance)
        return _start_or_fail(instance)

    try:
        yield factory
    finally:
        for instance in started:
            instance.stop()
