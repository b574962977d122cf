"""The CLI's one table from errors to exit codes (gateway/cli/errors.py)."""

from __future__ import annotations

import importlib
import os

from gateway.cli import errors
from gateway.cli.errors import CommandError, describe
from gateway.ops.errors import ArchiveDamaged, BackupError, PgError, WrongKey
from gateway.ops.sources import SourceError, SourceUnreadable


def test_every_row_names_an_exception_class() -> None:
    """The table names classes by dotted path (so ingest imports none of them): a
    renamed class must fail here, not silently fall through to 'internal error'."""
    for dotted in errors._TABLE:
        module, _, name = dotted.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        assert isinstance(cls, type) and issubclass(cls, Exception), dotted


def test_a_subclass_takes_its_own_row_before_its_base() -> None:
    assert describe(ArchiveDamaged("bad")) == (os.EX_DATAERR, "bad")
    assert describe(WrongKey("other key")) == (os.EX_NOPERM, "other key")
    assert describe(PgError("pg_dump failed")) == (os.EX_SOFTWARE, "pg_dump failed")
    assert describe(BackupError("odd")) == (os.EX_SOFTWARE, "odd")
    assert describe(SourceUnreadable("gone")) == (os.EX_NOINPUT, "gone")
    assert describe(SourceError("not a mailbox")) == (os.EX_DATAERR, "not a mailbox")


def test_command_errors_carry_their_code_and_others_are_unknown() -> None:
    assert describe(CommandError("unknown tenant 'x'")) == (os.EX_USAGE, "unknown tenant 'x'")
    assert describe(CommandError("busy", os.EX_TEMPFAIL)) == (os.EX_TEMPFAIL, "busy")
    assert describe(ValueError("bug")) is None


def test_secret_errors_say_they_are_config_errors() -> None:
    from routing.secrets import SecretError

    assert describe(SecretError("cannot decrypt")) == (
        os.EX_CONFIG,
        "config error: cannot decrypt",
    )
