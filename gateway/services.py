"""What every way in (the daemon, ``gateway ingest``, ``import``, the one-shot
commands) needs: the engine, the writer, the blob store, the scanner and the
pipeline. Apart from the daemon so that a one-shot command, such as an MTA's
pipe running ``gateway ingest`` once per message, does not import the web
side, IMAP and the periodic jobs it never runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from gateway.intake.pipeline import Pipeline
from gateway.intake.scan import Scanner, ScannerConfig
from outbound.delivery import Delivery
from routing.config import GatewayConfig
from store.blob_moves import files_to_rows, rows_to_files
from store.blobs import BlobStore, FileBlobStore
from store.blobs_db import DatabaseBlobStore
from store.db import create_engine, create_writer_engine, upgrade
from store.reader import Reader
from store.writer import Writer

__all__ = ["Services", "make_blob_store", "make_scanner", "open_services"]


class Services:
    """Engine, writer, blob store, scanner and pipeline: what every intake needs."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.engine = create_engine(config.database_url)
        # No pre-ping: the writer runs again a unit whose connection was found dead.
        self.writer = Writer(create_writer_engine(config.database_url, pre_ping=False))
        # Pages' reads (sessions, tickets, the desk's lists): never queued behind the writer.
        self.reader = Reader.for_url(config.database_url)
        self.blobs = make_blob_store(config, self.writer)
        self.scanner = make_scanner(config)
        self.pipeline = Pipeline(config, self.writer, self.blobs, self.scanner)
        self.delivery = Delivery(config, self.writer)
        self.pipeline.after_commit = self.delivery.wake

    async def close(self) -> None:
        await self.writer.close()
        self.reader.close()
        await self.engine.dispose()


def make_blob_store(config: GatewayConfig, writer: Writer) -> BlobStore:
    """``[gateway] blobs``: database rows read through the writer's synchronous pool
    (from threads: downloads, exports), or the files under the data directory."""
    if config.blobs == "database":
        return DatabaseBlobStore(writer.engine)
    return FileBlobStore(config.data_dir / "blobs")


def make_scanner(config: GatewayConfig) -> Scanner:
    sc = config.scanner
    return Scanner(
        ScannerConfig(
            address=sc.address,
            deadline=sc.deadline,
            max_stream=sc.max_stream or None,
            ping_timeout=min(5.0, sc.deadline),
        )
    )


@contextlib.asynccontextmanager
async def open_services(config: GatewayConfig) -> AsyncIterator[Services]:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    services = Services(config)
    try:
        await upgrade(services.engine)
        await _move_blobs(services)
        yield services
    finally:
        await services.close()


async def _move_blobs(services: Services) -> None:
    """After ``[gateway] blobs`` changed, what the other store holds comes over first
    (store/blob_moves.py), so no attachment is unreadable and none escapes a purge."""
    blobs = services.blobs
    if isinstance(blobs, DatabaseBlobStore):
        await files_to_rows(services.config.data_dir / "blobs", services.writer, blobs)
    elif isinstance(blobs, FileBlobStore):
        await rows_to_files(services.writer, blobs)
