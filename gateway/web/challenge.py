"""The link form's proof of work (ALTCHA, the ``altcha`` library; nothing third-party
is loaded: the solver is our own ``static/challenge.js``).

The form page carries a challenge signed with a key of this process; the
browser finds the number whose SHA-256 with the salt is the challenge (up to
``MAX_NUMBER`` tries, well under a second) and posts it with the form. A bot
pays the same for every request, and a solution is taken once: its signature
is remembered until the challenge expires. The key is random per start, so a
form opened before a restart asks again.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from datetime import UTC, datetime, timedelta

import altcha

__all__ = ["MAX_NUMBER", "TTL", "LinkChallenge"]

MAX_NUMBER = 50_000
TTL = timedelta(minutes=20)


class LinkChallenge:
    """Issues challenges for the form and takes each solution once."""

    def __init__(self) -> None:
        self.key = secrets.token_hex(32)
        self.spent: dict[str, float] = {}  # signature -> when it expires (epoch)

    def issue(self) -> dict[str, str | int]:
        c = altcha.create_challenge_v1(
            hmac_key=self.key, max_number=MAX_NUMBER, expires=datetime.now(UTC) + TTL
        )
        return {
            "algorithm": c.algorithm,
            "challenge": c.challenge,
            "maxnumber": c.max_number,
            "salt": c.salt,
            "signature": c.signature,
        }

    def take(self, payload: str) -> bool:
        """True once for each solved challenge of ours that has not expired."""
        try:
            signature = str(json.loads(base64.b64decode(payload, validate=True))["signature"])
        except (binascii.Error, ValueError, KeyError, TypeError):
            return False
        now = time.time()
        self.spent = {s: t for s, t in self.spent.items() if t > now}
        if signature in self.spent:
            return False
        ok, _ = altcha.verify_solution_v1(payload, self.key, check_expires=True)
        if ok:
            self.spent[signature] = now + TTL.total_seconds()
        return bool(ok)
