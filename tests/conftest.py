from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon import Daemon


@pytest.fixture(scope="session")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One running gateway shared by tests that use unique Message-IDs and senders."""
    d = Daemon(tmp_path_factory.mktemp("gw")).start()
    yield d
    d.stop()


@pytest.fixture
def fresh_daemon(tmp_path: Path) -> Iterator[Daemon]:
    """A gateway of its own, for tests that count every row."""
    d = Daemon(tmp_path / "gw")
    yield d
    d.kill()
