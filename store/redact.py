"""Pseudonyms and redaction: how an address disappears from stored text and mail.

An erased address is replaced everywhere by its pseudonym, ``addr:`` and an
HMAC of the address keyed with the gateway secret. Keyed, because a plain
SHA-256 of an address can be reversed by hashing a list of likely addresses;
with the key, only the gateway (``gateway gdpr hash EMAIL``) can say whether
a tombstone or a log line is about a given person.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from email import encoders, message_from_bytes
from email.policy import compat32
from typing import Any

__all__ = ["Redactor", "pseudonym"]

_ENCODED = re.compile(rb"content-transfer-encoding:\s*(base64|quoted-printable)", re.I)
_CRLF = compat32.clone(linesep="\r\n")


def pseudonym(key: bytes, address: str) -> str:
    digest = hmac.new(key, address.strip().lower().encode(), hashlib.sha256).hexdigest()
    return f"addr:{digest[:32]}"


class Redactor:
    """Replaces one address (any case) and the display names it used."""

    def __init__(self, key: bytes, address: str, names: Iterable[str] = ()) -> None:
        self.address = address.strip().lower()
        self.token = pseudonym(key, self.address)
        # Short names ("Al") would blank unrelated words; four letters is the floor.
        kept = sorted({n.strip() for n in names if len(n.strip()) >= 4}, key=len, reverse=True)
        self._addr = re.compile(re.escape(self.address), re.I)
        self._names = re.compile("|".join(re.escape(n) for n in kept), re.I) if kept else None
        self._addr_b = re.compile(re.escape(self.address.encode()), re.I)
        self._names_b = (
            re.compile(b"|".join(re.escape(n.encode()) for n in kept), re.I) if kept else None
        )

    def mentions(self, value: Any) -> bool:
        return self.value(value) != value

    def text(self, value: str) -> str:
        out = self._addr.sub(self.token, value)
        return self._names.sub("[erased]", out) if self._names is not None else out

    def data(self, value: bytes) -> bytes:
        out = self._addr_b.sub(self.token.encode(), value)
        return self._names_b.sub(b"[erased]", out) if self._names_b is not None else out

    def value(self, value: Any) -> Any:
        """Strings, lists and dicts (JSON columns) with every mention replaced."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        return value

    def mail(self, raw: bytes) -> bytes | None:
        """A redacted copy of an RFC 5322 message, or None when it does not mention them.

        Headers and 7/8-bit bodies are replaced as bytes; base64 and
        quoted-printable parts are decoded, replaced and encoded again, since
        the address may hide there (or be split by a soft line break).
        """
        out = self.data(raw)
        if _ENCODED.search(out):
            msg = message_from_bytes(out, policy=compat32)
            changed = False
            for part in msg.walk():
                cte = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
                if part.is_multipart() or cte not in ("base64", "quoted-printable"):
                    continue
                payload = part.get_payload(decode=True)
                if not isinstance(payload, bytes):
                    continue
                new = self.data(payload)
                if new == payload:
                    continue
                del part["Content-Transfer-Encoding"]
                part.set_payload(new)
                (encoders.encode_base64 if cte == "base64" else encoders.encode_quopri)(part)
                changed = True
            if changed:
                out = msg.as_bytes(policy=_CRLF)
        return out if out != raw else None
