"""gateway.toml -> a frozen, validated GatewayConfig.

The whole file is checked before anything uses it, and every error names the
file, line and key path, so an admin never meets a traceback and a bad reload
can be refused while the running config stays. Two steps: ``parse_config``
(parse.py, tenant.py) reads and checks without side effects; ``resolve``
(resolve.py) decrypts, loads the TLS certificate and makes the token secret.
``load_config`` is both. The shape is in model.py; the checking kit is
routing/schema.py.
"""

from __future__ import annotations

# The shape's names are listed once, in model.py's __all__; the package adds its readers.
from routing.config import model
from routing.config.model import *  # noqa: F403
from routing.config.parse import Parsed, parse_config
from routing.config.resolve import load_config, resolve

__all__ = [*model.__all__, "Parsed", "load_config", "parse_config", "resolve"]
