"""Async clamd client: INSTREAM on the event loop, failing closed.

Why this module exists and what it promises (clamd's own limits fail open unless configured as
docs/daemon.md, "ClamAV (clamd)", says; tests/test_scan.py holds it to this):

* Only an exact ``stream: OK`` reply is :class:`Clean`. Every other outcome is a result that the
  pipeline must *not* treat as clean: :class:`Infected` (a FOUND reply, including
  ``Heuristics.Limits.Exceeded.*`` from ``AlertExceedsMax yes``), :class:`Unscannable` (the message
  can never be scanned by this scanner: ``INSTREAM size limit exceeded. ERROR`` or bigger than
  ``max_stream``; reply ``552 5.3.4``) and :class:`Unavailable` (try again later; ``451 4.7.1``).
  haraka-plugin-clamd accepts mail on the size-limit reply, i.e. fails open; we do not.
* The deadline is *absolute* (``asyncio.timeout``) over connect + send + reply. A socket idle
  timer cannot bound the total scan time: a scanner that drips one byte a second never trips it.
* Scanner faults never raise: refused, reset, hung (SIGSTOP), garbage, truncated replies all
  become :class:`Unavailable`. Only ``CancelledError`` (the caller's own cancellation) and
  programming errors propagate.
* Everything runs on the event loop (non-blocking sockets driven by ``loop.sock_*``); there is
  no thread and no blocking call. Only a non-numeric TCP host is resolved with
  ``loop.getaddrinfo``, which, as in ``asyncio.open_connection``, uses the default executor.
* Why ``loop.sock_*`` and not ``asyncio.open_connection`` streams: clamd answers the size-limit
  reply and closes *while we are still uploading*. A stream transport that then fails a write
  (EPIPE/ECONNRESET) closes itself at once and never reads the reply already waiting in the
  kernel buffer, so about one scan in a hundred turned "Unscannable" into "Unavailable"
  (measured on a unix socket). A plain socket survives the failed send and the reply is read.

Wire format (clamd(8)): ``zINSTREAM\\0``, then chunks of ``<uint32 big-endian length><data>``,
then a zero-length chunk; clamd answers one NUL-terminated line and closes the connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass

import structlog

from gateway.intake.scan_result import (
    Clean,
    ScanResult,
    Unavailable,
    Unscannable,
    parse_reply,
)

__all__ = ["Scanner", "ScannerConfig"]

log = structlog.get_logger("gateway.intake.scan")

#: A clamd reply is one short line; anything longer than this is not clamd talking.
_MAX_REPLY = 4096
_CHUNK_HEADER = struct.Struct(">I")
_END_OF_STREAM = _CHUNK_HEADER.pack(0)
_MAX_CHUNK = 2**32 - 1


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScannerConfig:
    """Where clamd is and how long we are willing to wait for it.

    ``address`` is ``"host:port"`` (``"[::1]:3310"`` for IPv6), ``"unix:/path/clamd.sock"`` or an
    absolute socket path. ``deadline`` bounds a whole :meth:`Scanner.scan` (or a whole
    :meth:`Scanner.scan_many`), connect included. ``max_stream``, if set, should equal clamd's
    ``StreamMaxLength``: bigger data is :class:`Unscannable` at once, without a round trip.
    ``ping_timeout`` bounds a health probe, which should be short so ``/status`` stays fresh.

    Invalid values raise ``ValueError`` here, at config load time, not during a scan.
    """

    address: str
    deadline: float = 30.0
    chunk_size: int = 64 * 1024
    max_stream: int | None = None
    ping_timeout: float = 5.0

    def __post_init__(self) -> None:
        _parse_address(self.address)  # raises ValueError early
        if not self.deadline > 0:
            raise ValueError(f"scanner deadline must be > 0, got {self.deadline!r}")
        if not self.ping_timeout > 0:
            raise ValueError(f"scanner ping_timeout must be > 0, got {self.ping_timeout!r}")
        if not 0 < self.chunk_size <= _MAX_CHUNK:
            raise ValueError(
                f"scanner chunk_size must be in 1..{_MAX_CHUNK}, got {self.chunk_size}"
            )
        if self.max_stream is not None and self.max_stream < 0:
            raise ValueError(f"scanner max_stream must be >= 0, got {self.max_stream}")


def _parse_address(address: str) -> tuple[str, str | int]:
    """Return ``("unix", path)`` or ``(host, port)``; ``ValueError`` if it is neither."""
    if address.startswith("unix:"):
        path = address[len("unix:") :]
        if not path:
            raise ValueError(f"empty unix socket path in scanner address {address!r}")
        return ("unix", path)
    if address.startswith("/"):
        return ("unix", address)
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(
            f"scanner address {address!r} is not host:port, unix:/path or an absolute path"
        )
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"scanner port out of range in {address!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return (host, port)


# --------------------------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------------------------


class _ProtocolError(Exception):
    """A reply we cannot use (too long, empty). Internal: turned into Unavailable."""


class Scanner:
    """A clamd client. Cheap to create; opens one connection per scan (clamd closes the
    connection after each INSTREAM anyway).

    ``reachable`` and ``last_checked`` (``time.time()``) describe the last contact attempt, by a
    scan or by :meth:`ping`; ``None`` until the first one. They feed ``/status``.
    """

    def __init__(self, config: ScannerConfig) -> None:
        self.config = config
        self._address = _parse_address(config.address)
        self.reachable: bool | None = None
        self.last_checked: float | None = None

    # -- public API ---------------------------------------------------------------------------

    async def scan(self, data: bytes) -> ScanResult:
        """Scan ``data`` with one INSTREAM, under the absolute deadline. Never raises for
        scanner faults."""
        return await self.scan_many([data])

    async def scan_many(self, parts: Iterable[bytes]) -> ScanResult:
        """Scan each part with its own INSTREAM, all under ONE absolute deadline.

        The first non-Clean result is returned and the remaining parts are not scanned (an
        infected first part is reported as Infected even if the scanner dies afterwards).
        No parts at all is Clean: there was nothing to scan.
        """
        deadline = self.config.deadline
        try:
            async with asyncio.timeout(deadline):
                for data in parts:
                    result = await self._scan_one(data)
                    if not isinstance(result, Clean):
                        return result
                return Clean()
        except TimeoutError:
            self._mark(False)
            return Unavailable(f"clamd scan deadline of {deadline:g}s exceeded")

    async def ping(self) -> bool:
        """``zPING`` -> ``PONG`` under ``ping_timeout``; updates ``reachable``. Never raises
        (except for cancellation)."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.config.ping_timeout):
                sock = await self._connect()
                try:
                    await loop.sock_sendall(sock, b"zPING\0")
                    raw = await self._read_reply(sock)
                finally:
                    sock.close()
            ok = raw == b"PONG\0" or raw == b"PONG\n"
        except (OSError, TimeoutError, _ProtocolError) as exc:
            log.debug("scanner.ping_failed", error=repr(exc))
            ok = False
        self._mark(ok)
        return ok

    async def probe_forever(self, interval: float) -> None:
        """Ping every ``interval`` seconds until cancelled, so ``reachable`` recovers (or drops)
        without waiting for mail. Only ``CancelledError`` leaves this coroutine."""
        if not interval > 0:
            raise ValueError(f"probe interval must be > 0, got {interval!r}")
        while True:
            try:
                await self.ping()
            except Exception:  # ping() should not raise; a probe loop must not die if it does
                log.exception("scanner.probe_failed")
                self._mark(False)
            await asyncio.sleep(interval)

    # -- internals ----------------------------------------------------------------------------

    def _mark(self, reachable: bool) -> None:
        """Record the outcome of a contact attempt; log only transitions, not every scan."""
        if reachable != self.reachable:
            event = "scanner.reachable" if reachable else "scanner.unreachable"
            (log.info if reachable else log.warning)(event, address=self.config.address)
        self.reachable = reachable
        self.last_checked = time.time()

    async def _scan_one(self, data: bytes) -> ScanResult:
        """One INSTREAM, mapping scanner faults to Unavailable. The caller holds the deadline."""
        max_stream = self.config.max_stream
        if max_stream is not None and len(data) > max_stream:
            # Known without asking clamd; says nothing about reachability.
            return Unscannable(
                f"{len(data)} bytes exceed the scanner's stream limit of {max_stream} bytes"
            )
        try:
            result = await self._instream(data)
        except (OSError, EOFError, _ProtocolError) as exc:
            self._mark(False)
            return Unavailable(f"clamd at {self.config.address}: {_describe(exc)}")
        self._mark(not isinstance(result, Unavailable))
        return result

    async def _connect(self) -> socket.socket:
        """A connected non-blocking socket; every candidate address is tried in turn."""
        loop = asyncio.get_running_loop()
        host, port = self._address
        candidates: list[tuple[int, str | tuple[object, ...]]]
        if host == "unix":
            candidates = [(socket.AF_UNIX, str(port))]
        else:
            try:
                ip = ipaddress.ip_address(host)
            except ValueError:  # a name: resolve (executor, as asyncio.open_connection does)
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                candidates = [(info[0], info[4]) for info in infos]
            else:
                family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
                candidates = [(family, (host, port))]
        last_error: OSError = OSError(f"no address for {self.config.address}")
        for family, sockaddr in candidates:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setblocking(False)
                await loop.sock_connect(sock, sockaddr)
            except OSError as exc:
                sock.close()
                last_error = exc
                continue
            except BaseException:  # cancelled (deadline): do not leak the socket
                sock.close()
                raise
            return sock
        raise last_error

    async def _instream(self, data: bytes) -> ScanResult:
        """Upload ``data`` while listening for the reply.

        clamd may answer *before* we finish (``INSTREAM size limit exceeded. ERROR``) and close
        the socket, which resets our upload. If we only read after sending, the reset would hide
        the reply; and if clamd kept the socket open without reading, we would block until the
        deadline. So the reply is read by a concurrent task from the start.
        """
        sock = await self._connect()
        send = asyncio.ensure_future(self._send_stream(sock, data))
        reply = asyncio.ensure_future(self._read_reply(sock))
        try:
            await asyncio.wait({send, reply}, return_when=asyncio.FIRST_COMPLETED)
            sent_all = send.done() and not send.cancelled() and send.exception() is None
            send_error = send.exception() if send.done() and not send.cancelled() else None
            if not reply.done() and (sent_all or send_error is not None):
                # Upload finished or failed: the reply (or the reason it will not come) is next.
                await asyncio.wait({reply})
            if not reply.done():  # pragma: no cover - wait() above guarantees done
                raise _ProtocolError("no reply")
            if reply.exception() is not None:
                read_error = reply.exception()
                raise read_error if send_error is None else send_error
            return parse_reply(reply.result(), complete=sent_all)
        finally:
            await _reap(send, reply)  # no loop reader/writer may remain on the fd ...
            sock.close()  # ... before it is closed; close() never blocks (no SO_LINGER)

    async def _send_stream(self, sock: socket.socket, data: bytes) -> None:
        """``zINSTREAM\\0``, length-prefixed chunks, zero-length terminator. One chunk in
        flight at a time, so a large message is never copied whole."""
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(sock, b"zINSTREAM\0")
        view = memoryview(data)
        size = self.config.chunk_size
        for start in range(0, len(view), size):
            chunk = view[start : start + size]
            await loop.sock_sendall(sock, _CHUNK_HEADER.pack(len(chunk)))
            await loop.sock_sendall(sock, chunk)
        await loop.sock_sendall(sock, _END_OF_STREAM)

    async def _read_reply(self, sock: socket.socket) -> bytes:
        """Read one reply: up to and including the first NUL, or to EOF (the newline form, or a
        truncated reply, which :func:`parse_reply` refuses).

        If the connection breaks after part of the reply arrived, that part is returned, because
        clamd closes right after the size-limit reply and the reset may overtake our read.
        """
        loop = asyncio.get_running_loop()
        buf = bytearray()
        while True:
            try:
                chunk = await loop.sock_recv(sock, _MAX_REPLY)
            except OSError:
                if buf:
                    return bytes(buf)
                raise
            if not chunk:
                if not buf:
                    raise _ProtocolError("connection closed without a reply")
                return bytes(buf)
            buf += chunk
            nul = buf.find(b"\0")
            if nul != -1:
                return bytes(buf[: nul + 1])
            if len(buf) > _MAX_REPLY:
                raise _ProtocolError(f"reply longer than {_MAX_REPLY} bytes without NUL")


async def _reap(*tasks: asyncio.Future[object]) -> None:
    """Cancel unfinished helper tasks and collect every outcome, so nothing leaks and no
    'exception was never retrieved' noise appears. Safe to call while being cancelled."""
    for task in tasks:
        if not task.done():
            task.cancel()
    pending = [t for t in tasks if not t.done()]
    if pending:
        # shield-free: the tasks were just cancelled, so this finishes in one or two loop turns.
        await asyncio.wait(pending)
    for task in tasks:
        if not task.cancelled():
            task.exception()


def _describe(exc: BaseException) -> str:
    """A short, log-friendly reason: the class name plus the message if there is one."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
