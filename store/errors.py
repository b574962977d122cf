"""Errors of the store.

StoreError
├── StoreUnavailable   the database or the data directory cannot take a write now (-> 451)
└── BlobMissing        a row names a blob that is not on disk (data loss: loud)
"""

from __future__ import annotations

__all__ = ["BlobMissing", "StoreError", "StoreUnavailable"]


class StoreError(Exception):
    """Base of the store's errors."""


class StoreUnavailable(StoreError):
    pass


class BlobMissing(StoreError):
    pass
