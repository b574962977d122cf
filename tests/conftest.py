from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from store.db import create_writer_engine
from tests.clamd_harness import Clamd, clamd, clamd_factory  # noqa: F401  (fixtures)
from tests.daemon import Daemon
from tests.dovecot_harness import dovecot, dovecot_factory  # noqa: F401  (fixtures)
from tests.pg_harness import session_cluster, stop_session_cluster, use_postgresql
from tests.test_migrations import _migrate

# With GATEWAY_TEST_DB=postgresql (the second pass of `make test`) only the tests that
# exercise the store run again, on PostgreSQL; these files stay SQLite-only, each for
# its reason. A new test file runs on both unless it is named here.
SQLITE_ONLY = {
    "test_backup.py": "SQLite's archive (online backup API); test_backup_pg.py has pg_dump's",
    "test_faults.py": "kills and corrupts the SQLite file and its WAL",
    "test_sla.py": "time budget: the SLA clock writes also run through test_sla_watch",
    "test_rules.py": "time budget: routing rules do not depend on the engine",
    "test_reload.py": "config reloads do not touch the engine",
    "test_scan.py": "no store",
    "test_scan_smtp.py": "time budget: a scan verdict is stored as in test_smtp",
    "test_browser.py": "time budget: the web store calls run in test_web_client",
    "test_desk_browser.py": "time budget: the desk's store calls run in test_desk",
    "test_starttls.py": "no store beyond test_smtp's",
    "test_postfix_lmtp.py": "an MTA's handover: the store's part runs in test_lmtp",
    "test_web.py": "status endpoints; the counts run in test_outbound's store",
    "test_cli.py": "command-line parsing",
    "test_compose.py": "no store",
    "test_config.py": "no store",
    "test_deploy.py": "no store",
    "test_dovecot_harness.py": "the harness itself",
    "test_imap_tls.py": "TLS does not touch the engine",
    "test_i18n.py": "no store",
    "test_logs.py": "no store",
    "test_ops_status.py": "reads the status file",
    "test_secrets.py": "no store",
    "test_parsers.py": "no store",
    "test_parse_golden.py": "no store",
    "test_bench_smoke.py": "the benchmark harness starts its own SQLite gateways",
}


# And these run only in the PostgreSQL pass: several instances need a shared server.
POSTGRESQL_ONLY = {
    "test_multi_instance.py": "three gateway processes on one database",
    "test_backup_pg.py": "pg_dump and pg_restore against the session's PostgreSQL cluster",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = SQLITE_ONLY if use_postgresql() else POSTGRESQL_ONLY
    keep, drop = [], []
    for item in items:
        (drop if item.path.name in skip else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Collect now, then keep the collector off while pytest writes its summary.

    Clients and event loops that a test left open are finalised by the garbage
    collector; on CPython 3.11.7 a finaliser that runs while pytest builds an AST
    for the summary corrupts the AST constructor's depth count, and the run ends
    in ``SystemError: AST constructor recursion depth mismatch`` (CPython
    gh-106905) after every test passed. Collecting here makes those finalisers
    run at a known moment, and nothing is collected behind the summary's back.
    """
    gc.collect()
    gc.disable()


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


def migrated_engine(tmp_path: Path, *, postgresql: bool, prefix: str = "gw") -> Engine:
    """A migrated store's engine for a ``Writer``: SQLite under ``tmp_path``, or a fresh
    database of the session's PostgreSQL cluster."""
    if postgresql:
        cluster = session_cluster()
        url = cluster.url(cluster.new_database(prefix))
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'g.db'}"
    _migrate(url)
    return create_writer_engine(url)


@pytest.fixture
def store_engine(tmp_path: Path) -> Iterator[Engine]:
    """The run's store (SQLite, or PostgreSQL with GATEWAY_TEST_DB=postgresql)."""
    e = migrated_engine(tmp_path, postgresql=use_postgresql())
    yield e
    e.dispose()


@pytest.fixture
def pg_engine(tmp_path: Path) -> Iterator[Engine]:
    """A PostgreSQL store whatever the run's: for what only PostgreSQL has."""
    e = migrated_engine(tmp_path, postgresql=True)
    yield e
    e.dispose()


@pytest.fixture(scope="session", autouse=True)
def _pg_session() -> Iterator[None]:
    """With GATEWAY_TEST_DB=postgresql, the session's private cluster (tests/pg_harness.py)
    is started by the first gateway that needs it and stopped here, after every other
    session fixture (an autouse session fixture is set up first, torn down last)."""
    yield
    stop_session_cluster()
