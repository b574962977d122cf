"""What every command family shares: the --config option and the loaded config.

Each family module registers its commands with ``add_parsers(sub, common)`` and
points each at its function with ``set_defaults(func=...)``; ``main`` calls
``args.func(args)``. Imports that are slow (the daemon, aiohttp, alembic, the
store) stay inside the functions that need them: ``gateway ingest`` runs once
per message from an MTA pipe and must start quickly.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from gateway.cli.errors import CommandError
from routing.config import GatewayConfig, default_config_path, load_config

__all__ = [
    "add_config_option",
    "common_parser",
    "config_path",
    "load",
    "open_read",
    "require_database",
]

_CONFIG_HELP = "config file (default: $GATEWAY_CONFIG, then ./gateway.toml)"


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """--config at this level too.

    SUPPRESS, not None, as the default: argparse lets a nested parser's default
    overwrite a --config given one level up, so ``secrets --config X check``
    would lose X.
    """
    parser.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=_CONFIG_HELP)


def common_parser() -> argparse.ArgumentParser:
    """The parent parser every command takes its --config from."""
    common = argparse.ArgumentParser(add_help=False)
    add_config_option(common)
    return common


def config_path(args: argparse.Namespace) -> Path:
    """--config, else $GATEWAY_CONFIG, else ./gateway.toml."""
    return getattr(args, "config", None) or default_config_path()


def load(args: argparse.Namespace, *, level: int = logging.ERROR) -> GatewayConfig:
    """The config, with logging set up from it.

    One-shot commands speak through their exit code and one stderr line (a
    Postfix pipe returns stderr in its bounce); only the daemon logs events,
    so it alone passes ``level=logging.INFO``.
    """
    from gateway.logs import setup_logging

    config = load_config(config_path(args))
    setup_logging(config.log_format, level)
    return config


def require_database(config: GatewayConfig) -> None:
    """Refuse early when there is no SQLite file yet, rather than create an empty one."""
    db = config.database_url
    if db.startswith("sqlite") and not os.path.exists(db.split("///", 1)[-1]):
        raise CommandError(f"no database yet at {db.split('///', 1)[-1]}", os.EX_NOINPUT)


def open_read(config: GatewayConfig) -> Any:
    """An engine on an existing store, for the commands that only look."""
    from store.db import create_engine

    require_database(config)
    return create_engine(config.database_url)
