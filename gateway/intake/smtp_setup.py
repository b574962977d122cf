"""A listener's sessions set up from its first one: aiosmtpd's ``SMTP.__init__`` once.

aiosmtpd builds three method tables in every session's ``__init__`` by
introspection (``inspect.getmembers`` of the session and the handler, ``dir``
of both, the EHLO hook's signature): ~110 µs of CPU per connection, about a
twentieth of a message's whole cost when an MTA opens a connection per message,
the common case. What it finds depends only on the session's class, the handler
and the listener's options, the same for every session of one listener. So the
listener's factory builds its first session with aiosmtpd's ``__init__`` and
keeps what it set; each later session gets the asyncio protocol's own
set-up (a new reader, a new ``closed`` future), those settings, and the method
tables bound to itself (the ``smtp_*`` commands and built-in ``auth_*``
mechanisms are methods of the session).

tests/test_smtp.py checks a session made so against one made by aiosmtpd's
``__init__``: an aiosmtpd that sets something new there fails it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from aiosmtpd.smtp import SMTP, _AuthMechAttr

__all__ = ["PER_SESSION", "session_factory"]

S = TypeVar("S", bound=SMTP)

# What each session has of its own: the asyncio protocol's state (set by its own
# __init__ here too) and the tables of methods bound to the session.
PER_SESSION = frozenset(
    {
        "_loop",
        "_paused",
        "_drain_waiters",
        "_connection_lost",
        "_stream_reader_wr",
        "_source_traceback",
        "_strong_reader",
        "_reject_connection",
        "_stream_writer",
        "_task",
        "_transport",
        "_client_connected_cb",
        "_over_ssl",
        "_closed",
        "_auth_methods",
        "_smtp_methods",
    }
)


def session_factory(cls: type[S], handler: Any, **options: Any) -> Callable[[], S]:
    """The protocol factory of one listener: sessions of ``cls`` for ``handler``, all
    with ``options`` (aiosmtpd's keyword arguments)."""
    first: dict[str, Any] | None = None
    auth: list[tuple[str, Any, bool]] = []  # (mechanism, method or its name, built in)
    commands: list[str] = []

    def make() -> S:
        nonlocal first
        if first is None:
            session = cls(handler, **options)
            first = {k: v for k, v in vars(session).items() if k not in PER_SESSION}
            auth.extend(
                (mech, impl.method.__name__ if impl.is_builtin else impl.method, impl.is_builtin)
                for mech, impl in session._auth_methods.items()
            )
            commands.extend(session._smtp_methods)
            return session
        return _from(cls, first, auth, commands)

    return make


def _from(
    cls: type[S],
    first: dict[str, Any],
    auth: list[tuple[str, Any, bool]],
    commands: list[str],
) -> S:
    session = cls.__new__(cls)
    loop = first["loop"]
    asyncio.StreamReaderProtocol.__init__(
        session,
        asyncio.StreamReader(loop=loop, limit=cls.line_length_limit),
        client_connected_cb=session._cb_client_connected,
        loop=loop,
    )
    session.__dict__.update(first)
    session._handle_hooks = dict(first["_handle_hooks"])  # the handler's, bound to it
    session._auth_methods = {
        mech: _AuthMechAttr(getattr(session, method) if builtin else method, builtin)
        for mech, method, builtin in auth
    }
    session._smtp_methods = {name: getattr(session, "smtp_" + name) for name in commands}
    session.command_size_limits.clear()  # aiosmtpd's __init__ does (a class-wide dict)
    return session
