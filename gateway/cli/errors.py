"""The CLI's one error type, and the one table from errors to exit codes.

An admin or an MTA reads what a command says, not a developer: every failure
is one line on stderr and a sysexits code (``os.EX_*``), never a traceback.
A command raises ``CommandError`` for its own refusals; the errors of the
rooms below (backup, import, reports, explain) stay domain errors that know
nothing of exit codes, and ``describe`` finds theirs here by walking the
exception's MRO, as Starlette finds an exception handler, so a subclass
takes its own row before its base's. ``gateway.cli.main`` is the only place
that prints either.

The table names classes by dotted path so that this module imports none of
them: ``gateway ingest`` runs once per message and must not load the backup
code to report a refused message.
"""

from __future__ import annotations

import os

__all__ = ["CommandError", "describe"]


class CommandError(Exception):
    """A command's one-line refusal and the exit code that goes with it."""

    def __init__(self, message: str, code: int = os.EX_USAGE) -> None:
        super().__init__(message)
        self.code = code


# class -> (exit code, what the line says before the error's own text)
_TABLE: dict[str, tuple[int, str]] = {
    "gateway.ops.errors.BackupError": (os.EX_SOFTWARE, ""),
    "gateway.ops.errors.ArchiveDamaged": (os.EX_DATAERR, ""),
    "gateway.ops.errors.ArchiveUnwritable": (os.EX_IOERR, ""),
    "gateway.ops.errors.NothingToRead": (os.EX_NOINPUT, ""),
    "gateway.ops.errors.StoreUnavailable": (os.EX_UNAVAILABLE, ""),
    "gateway.ops.errors.WouldOverwrite": (os.EX_CANTCREAT, ""),
    "gateway.ops.errors.TryAgain": (os.EX_TEMPFAIL, ""),
    "gateway.ops.errors.WrongKey": (os.EX_NOPERM, ""),
    "gateway.ops.errors.BackupMisconfigured": (os.EX_CONFIG, ""),
    "gateway.ops.sources.SourceError": (os.EX_DATAERR, ""),
    "gateway.ops.sources.SourceUnreadable": (os.EX_NOINPUT, ""),
    "gateway.ops.report_figures.ReportError": (os.EX_USAGE, ""),
    "gateway.ops.instance.InstanceInUse": (os.EX_CONFIG, ""),
    "gateway.loop.LoopUnavailable": (os.EX_CONFIG, "config error: "),
    "gateway.intake.explain.ExplainError": (os.EX_DATAERR, ""),
    "routing.secrets.SecretError": (os.EX_CONFIG, "config error: "),
}


def describe(exc: BaseException) -> tuple[int, str] | None:
    """The exit code and stderr text for ``exc``; None for an error no command expects."""
    if isinstance(exc, CommandError):
        return exc.code, str(exc)
    for cls in type(exc).__mro__:
        row = _TABLE.get(f"{cls.__module__}.{cls.__qualname__}")
        if row is not None:
            return row[0], f"{row[1]}{exc}"
    return None
