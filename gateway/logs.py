"""structlog set-up: one JSON line per event on stderr, never a message body.

aiosmtpd logs every DATA line at DEBUG on ``mail.log``; that logger is pinned
at INFO so bodies can never reach the logs, whatever the root level is.
"""

from __future__ import annotations

import logging
import sys

import structlog

__all__ = ["setup_logging"]

_REDACT = ("password", "secret", "token", "authorization")


def _redact(_logger: object, _name: str, event: dict[str, object]) -> dict[str, object]:
    for key in list(event):
        if any(word in key.lower() for word in _REDACT):
            event[key] = "[redacted]"
    return event


def setup_logging(fmt: str = "json", level: int = logging.INFO) -> None:
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s %(message)s")
    logging.getLogger("mail.log").setLevel(logging.INFO)
    logging.getLogger("mail.log").propagate = False
