"""The ``gateway`` command: run the daemon, feed it mail, look at tickets.

The commands live in one module per family (mail.py, tickets.py, admin.py,
backups.py, gdpr.py, secrets.py); each points its parsers at a function with
``set_defaults(func=...)``. This module only builds the parser and is the one
place that turns an error into its stderr line and exit code
(gateway/cli/errors.py): an admin or an MTA reads these, not a developer.
"""

from __future__ import annotations

import argparse
import os
import sys

from gateway.cli import admin, backups, gdpr, mail, secrets, tickets
from gateway.cli.common import common_parser
from gateway.cli.errors import describe
from routing.errors import ConfigError

__all__ = ["main"]

# In the order `gateway --help` lists them.
_FAMILIES = (admin, mail, tickets, secrets, gdpr, backups)


def _parser() -> argparse.ArgumentParser:
    common = common_parser()
    p = argparse.ArgumentParser(prog="gateway", description="Email-first helpdesk gateway")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for family in _FAMILIES:
        family.add_parsers(sub, common)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"gateway: config error: {problem}", file=sys.stderr)
        return os.EX_CONFIG
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # one line, never a traceback
        known = describe(exc)
        if known is None:
            print(f"gateway: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return os.EX_SOFTWARE
        code, line = known
        print(f"gateway: {line}", file=sys.stderr)
        return code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
