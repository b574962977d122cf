"""A real DNS server for tests: Debian's dnsmasq on 127.0.0.1, a free port, our records only.

``--no-resolv --no-hosts``: it answers only the TXT and A records the test
gives it, and forwards nothing (anything else is NXDOMAIN/REFUSED locally), so
SPF, DKIM and DMARC run against real DNS packets with no network. ``--local``
makes it the authority of the test zone: a name it does not hold is NXDOMAIN. Started by
``running_dns(records)``, stopped by the pid we started; if it cannot start,
the test fails with its log, never skips.
"""

from __future__ import annotations

import base64
import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dkim
import dns.exception
import dns.message
import dns.query
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.ports import free_port

__all__ = ["DNSMASQ", "Dns", "dkim_key", "dkim_sign", "running_dns", "txt_chunks"]

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
START_TIMEOUT = 30.0


@dataclass
class Dns:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        """For ``[gateway] dns_resolver``."""
        return f"127.0.0.1:{self.port}"


def txt_chunks(value: str) -> str:
    """A TXT value as dnsmasq's ``--txt-record`` takes it on its command line: strings
    of at most 255 bytes (a DKIM key is longer), comma-separated (no commas inside)."""
    assert "," not in value, value
    parts = [value[i : i + 250] for i in range(0, len(value), 250)] or [""]
    return ",".join(parts)


@contextlib.contextmanager
def running_dns(
    txt: dict[str, str], a: dict[str, str] | None = None, zones: tuple[str, ...] = ("test",)
) -> Iterator[Dns]:
    """``txt``: name -> value (one record each); ``a``: name -> IPv4 address. Names
    under ``zones`` it does not hold are NXDOMAIN (the zone's own answer); anything
    else is REFUSED, which a resolver takes as a failure."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="dnsmasq-") as tmp:
        log = Path(tmp) / "dnsmasq.log"
        args = [
            DNSMASQ,
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            f"--port={port}",
            "--user=root" if _is_root() else "",
            f"--pid-file={Path(tmp) / 'pid'}",
            f"--log-facility={log}",
            "--log-queries",
        ]
        args = [x for x in args if x] + [f"--local=/{z}/" for z in zones]
        args += [f"--txt-record={name},{txt_chunks(value)}" for name, value in txt.items()]
        args += [f"--address=/{name}/{ip}" for name, ip in (a or {}).items()]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _wait_ready(port, process, log)
            yield Dns(port, process)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if process.stderr is not None:
                process.stderr.close()


def _is_root() -> bool:
    import os

    return os.geteuid() == 0


def _wait_ready(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    """Until dnsmasq answers a query on its port (it binds before it answers)."""
    deadline = time.monotonic() + START_TIMEOUT
    query = dns.message.make_query("ready.invalid.", "TXT")
    while time.monotonic() < deadline:
        if process.poll() is not None:
            err = process.stderr.read().decode() if process.stderr else ""
            text = log.read_text() if log.exists() else ""
            raise RuntimeError(f"dnsmasq exited {process.returncode}: {err}{text}")
        try:
            dns.query.udp(query, "127.0.0.1", port=port, timeout=0.5)
            return
        except (TimeoutError, OSError, dns.exception.Timeout):
            time.sleep(0.1)
    raise RuntimeError(f"dnsmasq did not answer on 127.0.0.1:{port}")


def dkim_key() -> tuple[bytes, str]:
    """A fresh RSA key: the PEM to sign with, and the DKIM record that publishes it."""
    k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = k.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    der = k.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


def dkim_sign(text: bytes, domain: str, key: bytes, selector: str = "sel") -> bytes:
    """``text`` with a DKIM-Signature by dkimpy for ``domain`` (From, To, Subject signed)."""
    sig = dkim.sign(
        text, selector.encode(), domain.encode(), key, include_headers=[b"from", b"to", b"subject"]
    )
    return sig + text


def closed_port() -> int:
    """A UDP port nobody listens on: DNS to it gets no answer (the 'DNS down' case)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
