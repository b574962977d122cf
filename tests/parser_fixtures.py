"""Builders for the large hostile messages, generated at test time, never committed.

Each one reproduces a known hostile input: the MIME bombs (Dovecot's and
MIME-tools' limits, Email-MIME CVE-2024-4140) and the huge header
(CPython gh-136063 / gh-134873).
"""

from __future__ import annotations

HEAD = (
    b"From: Mallory <mallory@evil.test>\r\nTo: support@acme.test\r\n"
    b"Subject: bomb\r\nMessage-ID: <bomb@evil.test>\r\nMIME-Version: 1.0\r\n"
)


def deep_nest(levels: int = 10_000) -> bytes:
    """``levels`` multiparts, each the only child of the one before, each with its own boundary."""
    opens = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(levels)
    )
    closes = b"".join(b"\r\n--b%d--\r\n" % i for i in reversed(range(levels)))
    return HEAD + opens + b"Content-Type: text/plain\r\n\r\nhi" + closes


def many_parts(count: int = 100_000) -> bytes:
    """``count`` four-byte parts under one multipart (a boundary only needs to be short)."""
    body = b"--b\r\n\r\nx\r\n" * count
    return HEAD + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + body + b"--b--\r\n"


def huge_to(size: int = 5 * 1024 * 1024) -> bytes:
    """A single ``To:`` header of ``size`` bytes of addresses."""
    one = b"victim@acme.test, "
    addrs = one * (size // len(one))
    return (
        b"From: Mallory <mallory@evil.test>\r\nTo: " + addrs + b"last@acme.test\r\n"
        b"Subject: big\r\n\r\nbody\r\n"
    )


def deep_rfc822(levels: int = 10_000) -> bytes:
    """Forwarded-inside-forwarded ``levels`` times, with no multipart at all."""
    return HEAD + b"Content-Type: message/rfc822\r\n\r\n" * levels + b"Subject: x\r\n\r\nhi\r\n"
