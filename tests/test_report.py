"""The monthly report: a month of corpus mail through the real pipeline (clock injected),
agents answering and closing by mail, then ``gateway report`` as a PDF. Its figures are
read back with pdftotext and checked against numbers this test computes itself; its
pages are drawn with pdftoppm. Monthly generation mails it once; files go after 90 days.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.policy import default
from pathlib import Path
from typing import Any

import pytest

import store.repos
from tests.clamd_harness import Clamd
from tests.corpus import generate

ROOT = Path(__file__).resolve().parent.parent
TAG = re.compile(rb"\{\{TAG:(t\d+)\}\}")
START = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
FIRST_RESPONSE, RESOLUTION = 2 * 3600, 24 * 3600

CONFIG = """
[gateway]
hostname = "gw.test"
data_dir = "var"
dns_resolver = "none"  # made-up senders: no sender checks against real DNS

[scanner]
address = "{scanner}"

[[tenants]]
slug = "acme"
name = "Acme Support"
addresses = ["support@acme.test"]
tag_prefix = "ACME"
agents = [
  {{ address = "alice@acme.test", name = "Alice" }},
  {{ address = "bob@acme.test", name = "Bob" }},
]

[[tenants.queues]]
name = "general"

[[tenants.queues]]
name = "printers"

[[tenants.rules]]
name = "printers"
when = {{ subject = "(?i)printer", new_ticket = true }}
then = {{ queue = "printers" }}

[tenants.sla]
calendar = "24x7"
first_response = "2h"
resolution = "1d"

[tenants.reports]
monthly = true
recipients = ["boss@acme.test"]

[[tenants]]
slug = "globex"
addresses = ["help@globex.test"]
"""


def nearest_rank(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def hm(seconds: float) -> str:
    minutes = round(seconds / 60)
    h, m = divmod(minutes, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m"


def _rgb(hexa: str) -> tuple[int, int, int]:
    return int(hexa[1:3], 16), int(hexa[3:5], 16), int(hexa[5:7], 16)


def agent_mail(agent: str, to: str, body: str) -> bytes:
    return (
        f"From: {agent}\r\nTo: {to}\r\nSubject: Re: your ticket\r\n"
        f"Message-ID: <{abs(hash((agent, to, body)))}.{id(body)}@acme.test>\r\n"
        f"Date: Mon, 02 Mar 2026 10:00:00 +0000\r\n\r\n{body}\r\n"
    ).encode()


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory, clamd: Clamd) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("report")
    corpus = home / "corpus"
    exp = generate(corpus, count=300, seed=11)
    cfg_path = home / "gateway.toml"
    cfg_path.write_text(CONFIG.format(scanner=clamd.address), encoding="utf-8")

    from gateway.services import open_services
    from parsers.types import Envelope, RawMessage
    from routing.config import load_config
    from routing.tokens import make_token
    from routing.verdicts import Accepted

    config = load_config(cfg_path)
    clock = [START]
    expected: dict[str, Any] = {
        "first": [],
        "resolution": [],
        "by_agent": Counter(),
        "closed_by": Counter(),
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(store.repos, "now", lambda: clock[0])  # the injected clock of every row

        async def feed() -> None:
            async with open_services(config) as s:
                messages = sorted(exp["messages"], key=lambda m: m["file"])
                step = timedelta(days=27) / len(messages)
                root_thread = {t["root_file"]: tid for tid, t in exp["threads"].items()}
                refs: dict[str, str] = {}
                created: list[tuple[str, datetime]] = []
                for i, m in enumerate(messages):
                    clock[0] = START + i * step
                    raw = (corpus / m["file"]).read_bytes()
                    raw = TAG.sub(lambda g: refs.get(g.group(1).decode(), "unknown").encode(), raw)
                    env = Envelope(mail_from=m["from"], rcpt_tos=(m["to"],))
                    out = await s.pipeline.process(RawMessage(env, raw, "smtp"))
                    assert isinstance(out, Accepted), (m["file"], out)
                    st = out.stored[0]
                    if st.thread_by == "new" and st.ticket_ref:
                        if m["file"] in root_thread:
                            refs[root_thread[m["file"]]] = st.ticket_ref
                        if st.tenant == "acme":
                            created.append((st.ticket_ref, clock[0]))
                # The agents: answer most tickets after a varying delay, close some.
                for k, (ref, opened) in enumerate(created):
                    agent = "alice@acme.test" if k % 2 == 0 else "bob@acme.test"
                    number = int(ref.split("-")[1])
                    to = f"support+{make_token(config.secret, 'acme', number, agent)}@acme.test"

                    async def say(at: datetime, body: str, agent: str = agent, to: str = to) -> str:
                        clock[0] = at
                        env = Envelope(mail_from=agent, rcpt_tos=(to,))
                        out = await s.pipeline.process(
                            RawMessage(env, agent_mail(agent, to, body), "smtp")
                        )
                        assert isinstance(out, Accepted)
                        return str(out.stored[0].ticket_ref)

                    if k % 4 == 3:  # closed without a word to the client
                        delay = timedelta(hours=4 + 7 * (k % 5))
                        assert await say(opened + delay, "#close") == ref
                        expected["resolution"].append(delay.total_seconds())
                        expected["closed_by"][agent] += 1
                        continue
                    delay = timedelta(minutes=20 + 13 * (k % 11))
                    assert await say(opened + delay, "Thanks, we are on it.") == ref
                    expected["first"].append(delay.total_seconds())
                    expected["by_agent"][agent] += 1
                    if k % 2 == 0:  # then closed: the wait on the client is not counted
                        assert (
                            await say(opened + delay + timedelta(hours=3), "#close\nDone.") == ref
                        )
                        expected["resolution"].append(delay.total_seconds())
                        expected["closed_by"][agent] += 1
                expected["opened"] = len(created)

        asyncio.run(feed())
    yield {"home": home, "config": cfg_path, "expected": expected}


def _cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args, "--config", str(cfg)],
        cwd=cfg.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _figure(text: str, label: str) -> str:
    m = re.search(rf"^\s*{re.escape(label)}\s{{2,}}(\S.*?)\s*$", text, re.M)
    assert m is not None, (label, text[:3000])
    return m.group(1)


def test_report_pdf_figures_and_pages(month: dict[str, Any], tmp_path: Path) -> None:
    exp = month["expected"]
    out_pdf = tmp_path / "acme-2026-03.pdf"
    run = _cli(
        month["config"], "report", "--tenant", "acme", "--month", "2026-03", "--out", str(out_pdf)
    )
    assert run.returncode == 0, run.stderr
    assert out_pdf.read_bytes().startswith(b"%PDF")
    text = subprocess.run(
        ["pdftotext", "-layout", str(out_pdf), "-"], check=True, capture_output=True, text=True
    ).stdout

    first, resolution = exp["first"], exp["resolution"]
    assert exp["opened"] > 40 and len(first) > 20
    assert _figure(text, "Tickets opened") == str(exp["opened"])
    assert _figure(text, "Tickets closed") == str(len(resolution))
    assert _figure(text, "Answered (first response given)") == str(len(first))
    assert _figure(text, "First response, median") == hm(nearest_rank(first, 50))
    assert _figure(text, "First response, 90th percentile") == hm(nearest_rank(first, 90))
    assert _figure(text, "Resolution, median") == hm(nearest_rank(resolution, 50))
    assert _figure(text, "Resolution, 90th percentile") == hm(nearest_rank(resolution, 90))
    # Attainment: answered in time out of (answered + closed unanswered after the target).
    met = sum(1 for d in first if d <= FIRST_RESPONSE)
    late = len(first) - met + (exp["opened"] - len(first))  # every unanswered one closed late
    assert _figure(text, "SLA attainment, first response") == f"{100 * met / (met + late):.0f}%"
    res_met = sum(1 for d in resolution if d <= RESOLUTION)
    assert _figure(text, "SLA attainment, resolution") == f"{100 * res_met / len(resolution):.0f}%"

    db = sqlite3.connect(month["home"] / "var" / "gateway.db")
    hours = Counter(
        datetime.fromisoformat(r[0]).hour
        for r in db.execute(
            "SELECT created_at FROM messages WHERE tenant = 'acme' AND sender_role = 'client'"
        )
    )
    queues = dict(
        db.execute("SELECT queue, count(*) FROM tickets WHERE tenant = 'acme' GROUP BY queue")
    )
    db.close()
    top = max(range(24), key=lambda h: (hours[h], -h))
    assert _figure(text, "Busiest hour") == f"{top:02d}:00-{top + 1:02d}:00"
    # Per queue and per agent sections, with the queues' ticket counts.
    assert set(queues) == {"general", "printers"}
    for q, n in queues.items():
        assert re.search(rf"^\s*{q}\s+{n}\s", text, re.M), (q, n)
    for agent, n in exp["by_agent"].items():
        closed = exp["closed_by"][agent]
        row = rf"^\s*{re.escape(agent)}\s+\d+\s+{n}\s+\S+ ?\S*\s+{closed}\s*$"
        assert re.search(row, text, re.M), (agent, n, closed)
    for title in ("Tickets opened and closed per day", "Busiest hours", "First-response times"):
        assert re.search(rf"^\s*{title}\s*$", text, re.M), title  # each chart's heading
    # The pages as pictures: what a manager sees.
    subprocess.run(
        ["pdftoppm", "-png", "-r", "70", str(out_pdf), str(tmp_path / "page")], check=True
    )
    pages = sorted(tmp_path.glob("page-*.png"))
    assert len(pages) >= 2 and all(p.stat().st_size > 10_000 for p in pages)
    # The bars are on the pages: enough pixels of each chart's own colour.
    from PIL import Image

    from gateway.ops.report_pdf import CHART_COLOURS

    seen: Counter[str] = Counter()
    wanted = {name: _rgb(hexa) for name, hexa in CHART_COLOURS.items()}
    for page in pages:
        with Image.open(page) as img:
            for count, rgb in img.convert("RGB").getcolors(1 << 20) or []:
                for name, want in wanted.items():
                    if all(abs(a - b) <= 6 for a, b in zip(rgb, want, strict=True)):
                        seen[name] += count
    assert all(seen[name] > 200 for name in wanted), seen
    keep = ROOT / "test-artifacts"
    if keep.is_dir():
        for p in pages:
            shutil.copy(p, keep / f"report-{p.name}")


def test_report_command_errors_are_one_line(month: dict[str, Any]) -> None:
    bad = _cli(month["config"], "report", "--tenant", "nope", "--month", "2026-03")
    assert bad.returncode == 64 and bad.stderr == "gateway: unknown tenant 'nope'\n"
    bad = _cli(month["config"], "report", "--tenant", "acme", "--month", "2026-13")
    assert bad.returncode == 64 and "expected YYYY-MM" in bad.stderr


def test_monthly_report_is_mailed_once_and_deleted_after_90_days(month: dict[str, Any]) -> None:
    from gateway.ops.jobs import delete_expired_reports, monthly_reports
    from gateway.services import open_services
    from routing.config import load_config

    config = load_config(month["config"])
    made_at = datetime(2026, 4, 1, 0, 5, tzinfo=UTC)
    report_file = month["home"] / "var" / "reports" / "acme" / "acme-report-2026-03.pdf"

    async def run() -> None:
        async with open_services(config) as s:
            made = await monthly_reports(config, s.engine, s.writer, made_at)
            assert made == [("acme", "2026-03")]  # globex does not ask for reports
            assert report_file.read_bytes().startswith(b"%PDF")
            later = made_at + timedelta(hours=1)
            assert await monthly_reports(config, s.engine, s.writer, later) == []
            day89 = made_at + timedelta(days=89, hours=23)
            assert await delete_expired_reports(config, s.writer, day89) == 0
            assert report_file.exists()
            day90 = made_at + timedelta(days=90, seconds=1)
            assert await delete_expired_reports(config, s.writer, day90) == 1
            assert not report_file.exists()
            assert await delete_expired_reports(config, s.writer, day90) == 0  # once

    asyncio.run(run())
    db = sqlite3.connect(month["home"] / "var" / "gateway.db")
    try:
        path, deleted_at = db.execute(
            "SELECT path, deleted_at FROM reports WHERE tenant = 'acme' AND month = '2026-03'"
        ).fetchone()
        (body, rcpts), *more = db.execute(
            "SELECT body, rcpt_tos FROM outbox WHERE kind = 'report'"
        ).fetchall()
        actions = [
            r[0]
            for r in db.execute(
                "SELECT action FROM audit_events WHERE action LIKE 'report.%' ORDER BY id"
            )
        ]
    finally:
        db.close()
    assert path == "" and deleted_at is not None and more == []
    assert json.loads(rcpts) == ["boss@acme.test"]
    mail = message_from_bytes(body, policy=default)
    assert mail["Subject"] == "Acme Support: support report for 2026-03"
    (att,) = list(mail.iter_attachments())
    assert att.get_filename() == "acme-report-2026-03.pdf"
    assert att.get_content().startswith(b"%PDF")
    assert actions == ["report.created", "report.deleted"]
