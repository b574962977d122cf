"""The daemon's services under supervision: a service that dies is logged and
restarted, or, for one the daemon cannot run without, stops the daemon cleanly
with exit 70; leaving the supervisor waits for every service's clean-up."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway.daemon import Daemon
from gateway.daemon.ready import ready_line
from gateway.daemon.run import EX_SOFTWARE
from gateway.daemon.supervisor import Policy, Supervisor
from routing.config import load_config
from store import leases
from store.db import create_writer_engine
from tests.daemon import Daemon as DaemonHarness

NO_PAUSE = (0.0, 0.0)


def test_a_service_that_dies_or_ends_is_logged_and_run_again() -> None:
    runs: list[str] = []
    third = asyncio.Event()

    async def flaky() -> None:
        runs.append("run")
        if len(runs) == 1:
            raise RuntimeError("boom")
        if len(runs) == 2:
            return  # ended: as much a bug as an exception
        third.set()
        await asyncio.Event().wait()

    async def go() -> dict[str, dict[str, object]]:
        async with Supervisor(lambda name: pytest.fail(name), backoff=NO_PAUSE) as sup:
            sup.start("flaky", flaky)
            await third.wait()
            return sup.state()

    with capture_logs() as logs:
        state = asyncio.run(go())
    assert runs == ["run", "run", "run"]
    events = [(e["event"], e.get("service")) for e in logs if e["event"].startswith("service.")]
    assert events == [
        ("service.died", "flaky"),
        ("service.restarting", "flaky"),
        ("service.ended", "flaky"),
        ("service.restarting", "flaky"),
    ]
    died = next(e for e in logs if e["event"] == "service.died")
    assert died["exc_info"] is True and died["policy"] == "restart"
    assert state == {"flaky": {"policy": "restart", "restarts": 2, "last_error": "ended"}}


def test_a_service_the_daemon_cannot_lose_is_not_restarted_but_stops_it() -> None:
    stopped: list[str] = []
    told = asyncio.Event()
    runs = 0

    def on_stop(name: str) -> None:
        stopped.append(name)
        told.set()

    async def lifeline() -> None:
        nonlocal runs
        runs += 1
        raise RuntimeError("lease store gone")

    async def go() -> None:
        async with Supervisor(on_stop, backoff=NO_PAUSE) as sup:
            sup.start("instance", lifeline, Policy.STOP)
            await told.wait()
            for _ in range(5):  # room for a restart, had there been one
                await asyncio.sleep(0)

    with capture_logs():
        asyncio.run(go())
    assert stopped == ["instance"] and runs == 1


def test_leaving_cancels_every_service_and_waits_for_its_clean_up() -> None:
    cleaned: list[str] = []

    async def service(name: str) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)  # a clean-up that itself awaits (a lease release)
            cleaned.append(name)

    async def go() -> None:
        async with Supervisor(lambda name: None) as sup:
            sup.start("a", lambda: service("a"))
            sup.start("b", lambda: service("b"))
            await asyncio.sleep(0)
            sup.stop("b")  # stopped early (a mailbox removed by a reload): awaited too
            assert sup.names() == ["a"]
            with pytest.raises(ValueError, match="already running"):
                sup.start("a", lambda: service("again"))

    asyncio.run(go())
    assert sorted(cleaned) == ["a", "b"]


def test_a_dead_lifeline_stops_the_daemon_cleanly_with_exit_70(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In process: the daemon's own STOP path, through the same unwinding as a SIGTERM
    (the listeners close, the instance lease is released for the next start)."""
    home = tmp_path / "gw"
    harness = DaemonHarness(home, gateway_extra='instance = "solo"')
    monkeypatch.chdir(home)

    async def go() -> tuple[int, Daemon]:
        daemon = Daemon(harness.config)
        running = asyncio.create_task(daemon.run())
        await daemon.ready.wait()

        async def broken() -> None:
            raise RuntimeError("a bug")

        daemon.tasks.start("must-not-die", broken, Policy.STOP)
        return await asyncio.wait_for(running, 120), daemon

    with capture_logs() as logs:
        code, daemon = asyncio.run(go())
    assert code == EX_SOFTWARE == 70
    names = [e["event"] for e in logs]
    assert names.index("gateway.ready") < names.index("service.died")
    assert names.index("service.died") < names.index("shutdown.draining")
    assert names[-1] == "shutdown.done"
    died = next(e for e in logs if e["event"] == "shutdown.service_died")
    assert died["service"] == "must-not-die" and died["exit_code"] == 70
    url = load_config(harness.config).database_url
    engine = create_writer_engine(url)
    try:
        with engine.connect() as conn:
            assert "instance:solo" not in leases.holders(conn)  # released on the way out
    finally:
        engine.dispose()
    assert daemon.snapshot()["pid"] == os.getpid()


def test_the_ready_line_names_smtp_the_pages_and_how_to_watch_a_local_sink(
    tmp_path: Path,
) -> None:
    config = load_config(Path(__file__).resolve().parent.parent / "gateway.toml")
    line = ready_line(config, ("127.0.0.1", 2525), "http://127.0.0.1:8080")
    assert "\n" not in line
    assert line.startswith("gateway ready: SMTP 127.0.0.1:2525; web http://127.0.0.1:8080/t/acme/")
    assert "http://127.0.0.1:8080/status" in line
    # both demo tenants mail through the one sink: named once, with the command to watch it
    assert line.count("127.0.0.1:1025") == 2
    assert line.endswith("-m aiosmtpd -n -l 127.0.0.1:1025)")
    without_web = ready_line(config, ("::1", 25), None)
    assert "web" not in without_web and without_web.startswith("gateway ready: SMTP ::1:25;")
