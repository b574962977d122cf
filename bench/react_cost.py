"""CPU of composing what a message calls for (issue 21): the acknowledgement and the
agents' notices, on figure 1's mix.

    python -m bench.react_cost [--corpus 1000] [--runs 5] [--profile out.prof]

Runs the commit stages over the text-only corpus (as ``bench.statements`` does, on
a SQLite store in memory, in this process) and records every ``react`` call's CPU and
every ``acknowledgement``/``agent_notice`` call's arguments (``--runs`` passes, each on
a fresh store); then replays those compose calls ``--runs`` times; it reports the best
pass and the best replay in µs per message (and per mail). The
replay is pure CPU, no store: what is left is the composing itself. Run it on another
checkout with ``PYTHONPATH=<checkout>`` to compare.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine

from bench.common import corpus, workdir
from gateway.intake import commit
from gateway.intake.commit import commit_message, jobs
from gateway.intake.decide import Arrival
from outbound import reactions
from outbound.compose import Templates
from parsers import parse
from parsers.types import Envelope, RawMessage
from routing.config import load_config
from routing.language import warm
from routing.tenants import AddressIndex
from store.models import metadata
from tests.test_stages import CONFIG

Call = tuple[Callable[..., Any], dict[str, Any]]


def record(count: int, passes: int = 1) -> tuple[int, float, list[Call]]:
    """(messages, the least CPU seconds spent in ``react`` over ``passes`` passes, each on
    a fresh store, the compose calls the first made)."""
    with workdir("react_cost") as tmp:
        (tmp / "gateway.toml").write_text(CONFIG, encoding="utf-8")
        config = load_config(tmp / "gateway.toml")
        mails = [m for m in corpus(count, tmp) if not m.scan]
    parsed = [parse(m.data) for m in mails]
    calls: list[Call] = []
    spent = [_pass(config, mails, parsed, calls if i == 0 else []) for i in range(passes)]
    return len(mails), min(spent), calls


def _pass(config: Any, mails: list[Any], parsed: list[Any], calls: list[Call]) -> float:
    engine = create_engine("sqlite://")
    metadata.create_all(engine)
    spent = [0.0]

    def recording(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(**kwargs: Any) -> Any:
            calls.append((fn, kwargs))
            return fn(**kwargs)

        return wrapper

    def timed(*args: Any) -> Any:
        t0 = time.process_time()
        try:
            return real_react(*args)
        finally:
            spent[0] += time.process_time() - t0

    real_react = commit.react
    saved = reactions.acknowledgement, reactions.agent_notice
    reactions.acknowledgement = recording(saved[0])  # type: ignore[assignment]
    reactions.agent_notice = recording(saved[1])  # type: ignore[assignment]
    commit.react = timed  # type: ignore[assignment]
    templates, index = Templates.of(config), AddressIndex(config)
    now = datetime(2026, 11, 23, tzinfo=UTC)
    warm()
    try:
        with engine.connect() as conn:
            for i, (m, p) in enumerate(zip(mails, parsed, strict=True)):
                raw = RawMessage(
                    Envelope(mail_from=p.from_addr or "", rcpt_tos=(m.rcpt,)), m.data, "smtp"
                )
                sha = hashlib.sha256(m.data).hexdigest()
                msg = Arrival(raw, p, sha, now + timedelta(seconds=i, microseconds=i))
                with conn.begin():
                    commit_message(
                        conn, config, templates, jobs(index, raw.envelope.rcpt_tos), msg,
                        lambda c: None,
                    )  # fmt: skip
    finally:
        reactions.acknowledgement, reactions.agent_notice = saved
        commit.react = real_react  # type: ignore[assignment]
    engine.dispose()
    return spent[0]


def replay(calls: list[Call]) -> float:
    t0 = time.process_time()
    for fn, kwargs in calls:
        fn(**kwargs)
    return time.process_time() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.react_cost")
    ap.add_argument("--corpus", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--profile", type=Path, help="write a cProfile of one replay here")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    n, react_cpu, calls = record(min(args.corpus, 5000), args.runs)
    runs = [replay(calls) for _ in range(args.runs)]
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        replay(calls)
        prof.disable()
        prof.dump_stats(str(args.profile))
    result = {
        "messages": n,
        "mails": len(calls),
        "react_us_per_msg": round(react_cpu / n * 1e6, 1),
        "compose_us_per_msg": round(min(runs) / n * 1e6, 1),
        "compose_us_per_mail": round(min(runs) / len(calls) * 1e6, 1),
        "runs_us_per_msg": [round(r / n * 1e6, 1) for r in runs],
    }
    print(json.dumps(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
