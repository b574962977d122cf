"""Errors of the routing layer.

RoutingError
└── ConfigError       gateway.toml is unreadable or invalid; names file, line and key
"""

from __future__ import annotations

__all__ = ["ConfigError", "RoutingError"]


class RoutingError(Exception):
    """Base of the routing layer's errors."""


class ConfigError(RoutingError):
    """Every problem found in one config file, each naming where it is.

    Admins fix a file in one go when they see all its errors at once, so this
    carries a list rather than stopping at the first.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))
