"""Why a backup or a restore failed, as classes rather than exit codes.

These are domain errors: they say what went wrong, and only the CLI's table
(gateway/cli/errors.py) turns them into exit codes. They live apart from
backup.py so that backup_pg.py, which backup.py imports, can raise them too.

BackupError               a failure nobody can fix by retrying or editing the config
├── ArchiveDamaged        not one of our archives, truncated, altered or inconsistent
├── ArchiveUnwritable     the archive could not be written (encryption or I/O failed)
├── NothingToRead         a database, an archive, a key file or a schema is not there
├── StoreUnavailable      the store cannot be reached, or is of a kind we cannot copy
├── WouldOverwrite        a key, a database or a data directory is already there
├── TryAgain              cancelled, or other sessions still use the database
├── WrongKey              the archive was made with another key
├── BackupMisconfigured   no usable backup key or database_url for this
└── PgError               PostgreSQL or one of its tools failed
"""

from __future__ import annotations

__all__ = [
    "ArchiveDamaged",
    "ArchiveUnwritable",
    "BackupError",
    "BackupMisconfigured",
    "NothingToRead",
    "PgError",
    "StoreUnavailable",
    "TryAgain",
    "WouldOverwrite",
    "WrongKey",
]


class BackupError(Exception):
    """The operator's one-line reason why a backup or restore stopped."""


class ArchiveDamaged(BackupError):
    pass


class ArchiveUnwritable(BackupError):
    pass


class NothingToRead(BackupError):
    pass


class StoreUnavailable(BackupError):
    pass


class WouldOverwrite(BackupError):
    pass


class TryAgain(BackupError):
    pass


class WrongKey(BackupError):
    pass


class BackupMisconfigured(BackupError):
    pass


class PgError(BackupError):
    pass
