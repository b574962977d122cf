"""Which event loop the daemon runs on: ``[gateway] loop``.

uvloop (libuv under asyncio's API) is an optional extra, ``pip install
'helpdesk-gateway[fast]'``: it makes the sockets' and the loop's own work
cheaper (BENCHMARKS.md measures it beside the default loop). "auto" takes it
when it is installed and the standard loop otherwise; "uvloop" without it
installed is a clear error, never a silent fallback.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["LoopUnavailable", "loop_name", "run_on"]

T = TypeVar("T")


class LoopUnavailable(Exception):
    """``[gateway] loop = "uvloop"`` without uvloop installed."""


def loop_name(choice: str) -> str:
    """ "asyncio" or "uvloop": what ``choice`` ("auto", "asyncio", "uvloop") comes to here."""
    installed = importlib.util.find_spec("uvloop") is not None
    if choice == "uvloop" and not installed:
        raise LoopUnavailable(
            '[gateway] loop = "uvloop" but uvloop is not installed '
            "(pip install 'helpdesk-gateway[fast]', or loop = \"auto\")"
        )
    if choice == "asyncio" or not installed:
        return "asyncio"
    return "uvloop"


def run_on(choice: str, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``asyncio.run(main())`` on the loop ``choice`` names."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if loop_name(choice) == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())
