from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clamd_harness import Clamd, clamd, clamd_factory  # noqa: F401  (fixtures)
from tests.daemon import Daemon
from tests.dovecot_harness import dovecot, dovecot_factory  # noqa: F401  (fixtures)


@pytest.fixture(scope="session")
def daemon(tmp_path_factory: pytest.TempPathFactory, clamd: Clamd) -> Iterator[Daemon]:  # noqa: F811
    """One running gateway, scanning with the session's real clamd, shared by tests that
    use unique Message-IDs and senders."""
    d = Daemon(tmp_path_factory.mktemp("gw"), scanner=clamd.address).start()
    yield d
    d.stop()


@pytest.fixture
def fresh_daemon(tmp_path: Path) -> Iterator[Daemon]:
    """A gateway of its own, for tests that count every row."""
    d = Daemon(tmp_path / "gw")
    yield d
    d.kill()
