"""The operations part of gateway.toml: ``[backup]``, ``[reports]``, ``[tenants.reports]``.

A module of its own beside the mail-routing parts so those stay readable;
the parse functions report through the same checker (routing/schema.py), so
every error still names its file, line and key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from routing.schema import Checker, keys_of

__all__ = [
    "BACKUP_KEY_ENV",
    "BackupSettings",
    "ReportSettings",
    "TenantReports",
    "parse_backup",
    "parse_reports",
    "parse_tenant_reports",
]

#: The backup key (an age identity, or a pre-age 32-byte base64 key) may come from here
#: instead of a key file.
BACKUP_KEY_ENV = "GATEWAY_BACKUP_KEY"
_AT = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_ADDR = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True, slots=True)
class BackupSettings:
    """Daily encrypted backups; the key lives outside the data and backup folders."""

    enabled: bool = False
    dir: Path | None = None  # required when enabled; never inside the data directory
    key_file: Path | None = None  # else $GATEWAY_BACKUP_KEY
    keep: int = 7
    at: time = time(3, 0)
    timezone: str = "UTC"


@dataclass(frozen=True, slots=True)
class ReportSettings:
    """Where monthly report PDFs are kept, and for how long (the privacy policy's 90 days)."""

    dir: Path | None = None  # default <data_dir>/reports
    keep_days: int = 90


@dataclass(frozen=True, slots=True)
class TenantReports:
    monthly: bool = False
    recipients: tuple[str, ...] = ()
    timezone: str = "UTC"  # the month's boundaries and the busiest-hours chart


def parse_backup(c: Checker, raw: Any, base_dir: Path, data_dir: Path) -> BackupSettings:
    if c.table(raw, "backup") is None:
        return BackupSettings()
    c.unknown(raw, keys_of(BackupSettings), "backup")
    enabled = c.take(raw, "enabled", "backup", bool, False)
    folder = c.take(raw, "dir", "backup", str, "")
    key_file = c.take(raw, "key_file", "backup", str, "")
    keep = c.take(raw, "keep", "backup", int, 7)
    if keep < 1:
        c.error("backup.keep", "must be 1 or more")
    at_text = c.take(raw, "at", "backup", str, "03:00")
    m = _AT.match(at_text)
    if m is None:
        c.error("backup.at", "expected HH:MM")
    tz = c.take(raw, "timezone", "backup", str, "UTC")
    _zone(c, tz, "backup.timezone")
    dir_path = (base_dir / folder).resolve() if folder else None
    key_path = (base_dir / key_file).resolve() if key_file else None
    data = data_dir.resolve()
    if enabled and dir_path is None:
        c.error("backup.dir", "required when backups are enabled")
    if dir_path is not None and dir_path.is_relative_to(data):
        c.error("backup.dir", "must be outside the data directory (a backup of itself grows)")
    if key_path is not None:
        for folder_path, what in ((data, "data directory"), (dir_path, "backup folder")):
            if folder_path is not None and key_path.is_relative_to(folder_path):
                c.error("backup.key_file", f"must not be inside the {what}: keep it apart")
    return BackupSettings(
        enabled=enabled,
        dir=dir_path,
        key_file=key_path,
        keep=keep,
        at=time(int(m.group(1)), int(m.group(2))) if m else time(3, 0),
        timezone=tz,
    )


def parse_reports(c: Checker, raw: Any, base_dir: Path) -> ReportSettings:
    if c.table(raw, "reports") is None:
        return ReportSettings()
    c.unknown(raw, keys_of(ReportSettings), "reports")
    folder = c.take(raw, "dir", "reports", str, "")
    keep = c.take(raw, "keep_days", "reports", int, 90)
    if keep < 1:
        c.error("reports.keep_days", "must be 1 or more")
    return ReportSettings(dir=(base_dir / folder).resolve() if folder else None, keep_days=keep)


def parse_tenant_reports(c: Checker, raw: Any, base: str) -> TenantReports:
    key = f"{base}.reports"
    if c.table(raw, key) is None:
        return TenantReports()
    c.unknown(raw, keys_of(TenantReports), key)
    monthly = c.take(raw, "monthly", key, bool, False)
    recipients = c.take(raw, "recipients", key, list, [])
    clean: list[str] = []
    for r in recipients:
        if not isinstance(r, str) or not _ADDR.match(r):
            c.error(f"{key}.recipients", f"{r!r} is not a plain address")
        else:
            clean.append(r.lower())
    if monthly and not clean:
        c.error(f"{key}.recipients", "monthly reports need at least one recipient")
    tz = c.take(raw, "timezone", key, str, "UTC")
    _zone(c, tz, f"{key}.timezone")
    return TenantReports(monthly=monthly, recipients=tuple(clean), timezone=tz)


def _zone(c: Checker, name: str, key: str) -> None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        c.error(key, f"unknown time zone {name!r}")
