"""structlog set-up: one JSON line per event on stderr, never a message body.

aiosmtpd logs every DATA line at DEBUG and every command at INFO on
``mail.log``; that logger is pinned at WARNING, so bodies can never reach the
logs whatever the root level is, and the per-command records (which nobody
reads: the logger does not propagate) are not even made: they cost ~5% of the
server's time under load.

Two processors keep the privacy policy (docs/privacy.md) in the logs too:
``_drop_bodies`` removes any field that could hold mail content, and
``_scrub`` redacts secrets (by key: tokens, passwords, cookies, sessions; by
value: ``enc:`` ciphertexts, reply tokens in plus addresses, magic-link
verifiers) and replaces every address by its pseudonym unless each tenant
the event names allows addresses in logs (``log_addresses``). They run after
the traceback is formatted, so an exception's text is scrubbed as well.

Lines said at INFO and below on a running event loop go out together, in one write
at the end of the loop's iteration (``_Lines``); warnings and errors, and every line
said off the loop, go at once, after those waiting, so the order holds and the line
before a hang or a crash is on disk. Figure 1's 32 senders made ~900 lines a second,
a system call each; batched, the daemon spends ~10% less CPU a message
(bench/results/notes/lines21.md).
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import logging
import re
import secrets
import sys
import threading
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from store.redact import pseudonym

__all__ = ["set_log_privacy", "setup_logging"]

_REDACT = ("password", "secret", "token", "authorization", "cookie", "session", "csrf", "verifier")
_BODIES = {"body", "text", "html", "reply_text", "subject", "content", "raw", "data", "payload"}
_KEEP = {"timestamp", "level", "logger"}

_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*/=?^_`{|}~+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_ENC = re.compile(r"enc:v\d+:[A-Za-z0-9_=:.+/-]+")
_URL_SECRET = re.compile(r"([?&](?:v|s|token|verifier|session)=)[^&\s\"'#]+")
_PLUS = re.compile(r"\+[A-Za-z0-9_-]{8,}@")
_NOISY = ("flanker.", "ply.")
_PLAIN = frozenset({int, float, bool, type(None)})  # libraries that log what they parse


@dataclass(frozen=True)
class _Policy:
    key: bytes
    open_tenants: frozenset[str]  # tenants whose events may show addresses
    ours: frozenset[str]  # the tenants' own support addresses: not personal, kept


_policy = _Policy(secrets.token_bytes(32), frozenset(), frozenset())


def set_log_privacy(config: Any) -> None:
    """Take the key and each tenant's ``log_addresses`` from the (re)loaded config."""
    global _policy
    _policy = _Policy(
        key=config.secret,
        open_tenants=frozenset(t.slug for t in config.tenants if t.log_addresses),
        ours=frozenset(a for t in config.tenants for a in t.addresses),
    )


@functools.lru_cache(maxsize=4096)
def _is_body(key: str) -> bool:
    return key.lower() in _BODIES


@functools.lru_cache(maxsize=4096)
def _is_secret(key: str) -> bool:
    """Asked of every key of every event: cached, as the keys are a small fixed set."""
    return key != "event" and any(word in key.lower() for word in _REDACT)


def _drop_bodies(_logger: object, _name: str, event: MutableMapping[str, Any]) -> Any:
    for key in [k for k in event if _is_body(k)]:
        del event[key]
    return event


def _scrub(_logger: object, _name: str, event: MutableMapping[str, Any]) -> Any:
    policy = _policy
    named = event.get("tenants", event.get("tenant"))
    slugs = (
        {named}
        if isinstance(named, str)
        else set(named or ())
        if isinstance(named, list)
        else set()
    )
    show = bool(slugs) and slugs <= policy.open_tenants
    for key in list(event):
        if key in _KEEP:
            continue
        if _is_secret(key):
            event[key] = "[redacted]"
        else:
            event[key] = _clean(event[key], policy, show)
    return event


def _clean(value: Any, policy: _Policy, show: bool) -> Any:
    if value.__class__ in _PLAIN:  # most values of a line: nothing to look into
        return value
    if isinstance(value, str):
        return _clean_text(value, policy, show)
    if isinstance(value, list | tuple):
        return [_clean(v, policy, show) for v in value]
    if isinstance(value, dict):
        return {k: _clean(v, policy, show) for k, v in value.items()}
    return value


def _clean_text(text: str, policy: _Policy, show: bool) -> str:
    if "@" not in text and ":" not in text and "=" not in text:
        return text
    text = _ENC.sub("enc:[redacted]", text)
    text = _URL_SECRET.sub(r"\1[redacted]", text)
    text = _PLUS.sub("+[redacted]@", text)

    def address(m: re.Match[str]) -> str:
        a = m.group(0)
        bare = a.lower()
        if show or bare in policy.ours or bare.replace("+[redacted]", "") in policy.ours:
            return a
        return pseudonym(policy.key, bare)

    return _ADDRESS.sub(address, text)


def _quiet_libraries(record: logging.LogRecord) -> bool:
    """flanker's lexer warns with the rest of the header it could not read (a
    display name, an address) as its token; its own module raises the logger to
    INFO at import, so a level set beforehand does not hold. Its warnings are
    dropped here, below the level any import can change."""
    return record.levelno >= logging.ERROR or not record.name.startswith(_NOISY)


class _ScrubbingFormatter(logging.Formatter):
    """The stdlib's records (libraries, tracebacks) under the same redaction as ours."""

    def format(self, record: logging.LogRecord) -> str:
        return _clean_text(super().format(record), _policy, show=False)


def _dumps(event: Any, default: Any = None) -> str:
    """orjson (a fifth of the stdlib's time per line), compact, one line; a value it
    cannot encode is written as its repr, as structlog's own renderer does."""
    return orjson.dumps(event, default=repr, option=orjson.OPT_NON_STR_KEYS).decode()


class _Lines:
    """The one structlog logger of the process (every name shares it): see the module's
    docstring. What is still waiting when the process exits is written by ``atexit``;
    a SIGKILL loses at most the INFO lines of the loop's current iteration."""

    def __init__(self) -> None:
        self.file: Any = sys.stderr
        self._waiting: list[str] = []
        self._due_on: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()  # the loop's thread and the others' lines
        atexit.register(self.flush)

    def factory(self, *_args: Any) -> _Lines:
        return self

    def later(self, line: str) -> None:
        loop = asyncio._get_running_loop()
        if loop is None:
            self.now(line)
            return
        with self._lock:
            self._waiting.append(line)
            # A flush is due on this loop already, unless it was asked of another loop
            # (one stopped before it ran its callbacks: a CLI's next asyncio.run).
            due, self._due_on = self._due_on is loop, loop
        if not due:
            loop.call_soon(self.flush)

    def now(self, line: str) -> None:
        with self._lock:
            waiting, self._waiting = self._waiting, []
            waiting.append(line)
            self._write(waiting)

    def flush(self) -> None:
        with self._lock:
            waiting, self._waiting, self._due_on = self._waiting, [], None
            if waiting:
                self._write(waiting)

    def _write(self, lines: list[str]) -> None:
        try:
            self.file.write("\n".join(lines) + "\n")
            self.file.flush()
        except (OSError, ValueError):  # stderr closed or gone: nowhere left to say it
            pass

    debug = info = later
    msg = log = warn = warning = err = error = critical = exception = fatal = now


_LINES = _Lines()


def setup_logging(fmt: str = "json", level: int = logging.INFO) -> None:
    """Loggers are cached on first use (the level filter is bound once, not looked up per
    call); the JSON is orjson's."""
    _LINES.flush()  # what the previous set-up's stderr was owed
    _LINES.file = sys.stderr
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer(serializer=_dumps)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _drop_bodies,
            _scrub,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # Whole lines, one write for a loop iteration's INFO lines (_Lines).
        logger_factory=_LINES.factory,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_quiet_libraries)
    handler.setFormatter(_ScrubbingFormatter("%(name)s %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    logging.getLogger("mail.log").propagate = False
