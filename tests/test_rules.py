"""Routing rules: every condition and action, their validation, and their effect on real mail."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from parsers import parse
from routing.config import GatewayConfig, Tenant, load_config
from routing.errors import ConfigError
from routing.language import wanted
from routing.rules import CONDITIONS, Facts, evaluate
from tests.daemon import Daemon

HEAD = """
[gateway]
data_dir = "var"

[[tenants]]
slug = "acme"
addresses = ["support@acme.test", "billing@acme.test"]

[[tenants.agents]]
address = "alice@acme.test"

[[tenants.agents]]
address = "bob@acme.test"

[[tenants.queues]]
name = "general"

[[tenants.queues]]
name = "billing"
agents = ["bob@acme.test"]
"""


def _config(tmp_path: Path, rules: str) -> GatewayConfig:
    p = tmp_path / "gateway.toml"
    p.write_text(HEAD + rules, encoding="utf-8")
    return load_config(p)


def _mail(
    subject: str = "Hello",
    body: str = "Please help me with my printer, it does not print anything.",
    sender: str = "client@example.com",
    headers: str = "",
    attachment: bool = False,
) -> bytes:
    head = (
        f"From: Client <{sender}>\r\nTo: support@acme.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <m{abs(hash((subject, body, sender, headers)))}@example.com>\r\n{headers}"
    )
    if not attachment:
        return (head + f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n").encode()
    return (
        head + 'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        f"--b\r\nContent-Type: text/plain\r\n\r\n{body}\r\n"
        "--b\r\nContent-Type: application/pdf\r\n"
        'Content-Disposition: attachment; filename="x.pdf"\r\n\r\n%PDF-1.4\r\n--b--\r\n'
    ).encode()


def _facts(
    data: bytes,
    to: str = "support@acme.test",
    now: datetime | None = None,
    new_ticket: bool | None = True,
) -> Facts:
    return Facts(
        parsed=parse(data),
        recipient=to,
        size=len(data),
        now=now or datetime(2026, 11, 23, 12, 0, tzinfo=UTC),  # a Monday
        new_ticket=new_ticket,
    )


def _matched(cfg: GatewayConfig, facts: Facts) -> list[str]:
    return evaluate(cfg.tenants[0].rules, facts).matched


# one rule per condition: (when-table, a message that matches, one that does not)
CASES = {
    "from": ('from = "vip@example.com"', dict(sender="vip@example.com"), {}),
    "from_domain": (
        'from_domain = ["bigcorp.com"]',
        dict(sender="ceo@eu.bigcorp.com"),
        dict(sender="x@notbigcorp.com"),
    ),
    "to": ('to = "billing@acme.test"', "billing@acme.test", "support@acme.test"),
    "subject": ('subject = "invoice|rechnung"', dict(subject="Your INVOICE 7"), {}),
    "body": ('body = "^order no\\\\. \\\\d+"', dict(body="Hi\nOrder no. 123\n"), {}),
    "header": (
        'header = { "X-Priority" = "^1" }',
        dict(headers="X-Priority: 1 (Highest)\r\n"),
        dict(headers="X-Priority: 3\r\n"),
    ),
    "has_attachment": ("has_attachment = true", dict(attachment=True), {}),
    "larger_than": ("larger_than = 400", dict(body="x" * 500), {}),
    "smaller_than": ("smaller_than = 400", {}, dict(body="x" * 500)),
    "language": (
        'language = "de"',
        dict(body="Guten Tag, mein Drucker druckt nicht mehr. Können Sie mir bitte helfen?"),
        dict(body="Good morning, my printer does not print any more. Could you help me?"),
    ),
    "auto_submitted": (
        "auto_submitted = true",
        dict(headers="Auto-Submitted: auto-replied\r\n"),
        {},
    ),
    "new_ticket": ("new_ticket = false", "reply", "new"),
    "days": ('days = ["sat", "sun"]', datetime(2026, 11, 22, 12, tzinfo=UTC), None),
    "hours": (
        'hours = "22:00-06:00"\ntimezone = "Europe/Berlin"',
        datetime(2026, 11, 23, 22, 30, tzinfo=UTC),  # 23:30 in Berlin
        datetime(2026, 11, 23, 21, 30, tzinfo=UTC),  # 22:30 in Berlin? no: 22:30 matches
    ),
}


def test_every_condition_has_a_case() -> None:
    assert set(CASES) == set(CONDITIONS)


@pytest.mark.parametrize("key", sorted(CASES))
def test_condition_matches_and_misses(tmp_path: Path, key: str) -> None:
    when, yes, no = CASES[key]
    cfg = _config(
        tmp_path,
        f'\n[[tenants.rules]]\nname = "r"\nthen = {{ tags = ["t"] }}\n'
        f"[tenants.rules.when]\n{when}\n",
    )

    def facts(arg: object) -> Facts:
        if isinstance(arg, dict):
            return _facts(_mail(**arg))
        if isinstance(arg, datetime):
            return _facts(_mail(), now=arg)
        if arg is None:
            return _facts(_mail(), now=datetime(2026, 11, 23, 12, tzinfo=UTC))
        if arg in ("reply", "new"):
            return _facts(_mail(), new_ticket=arg == "new")
        return _facts(_mail(), to=str(arg))

    if key == "hours":  # 21:30 UTC is 22:30 in Berlin: inside; noon is outside
        no = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert _matched(cfg, facts(yes)) == ["r"], key
    d = evaluate(cfg.tenants[0].rules, facts(no))
    assert d.matched == [] and d.missed[0][1].startswith(key), (key, d.missed)


def test_actions_accumulate_override_and_stop(tmp_path: Path) -> None:
    cfg = _config(
        tmp_path,
        """
[[tenants.rules]]
name = "everything"
then = { queue = "general", priority = "low", tags = ["all"] }

[[tenants.rules]]
name = "invoices"
when = { subject = "invoice" }
[tenants.rules.then]
queue = "billing"
priority = "high"
category = "money"
tags = ["invoice", "all"]
assign = "bob@acme.test"
acknowledge = false
stop = true

[[tenants.rules]]
name = "never reached"
then = { priority = "urgent" }
""",
    )
    d = evaluate(cfg.tenants[0].rules, _facts(_mail(subject="invoice 9")))
    assert d.matched == ["everything", "invoices"]
    assert (d.queue, d.priority, d.category, d.assign) == (
        "billing",
        "high",
        "money",
        "bob@acme.test",
    )
    assert d.tags == ["all", "invoice"] and d.acknowledge is False
    assert d.stopped_by == "invoices"
    assert d.missed == [("never reached", "not reached: 'invoices' has stop")]
    d = evaluate(cfg.tenants[0].rules, _facts(_mail(subject="hello")))
    assert d.matched == ["everything", "never reached"] and d.priority == "urgent"


def test_drop_and_reject_end_the_walk_and_unless_vetoes(tmp_path: Path) -> None:
    cfg = _config(
        tmp_path,
        """
[[tenants.rules]]
name = "spam"
when = { subject = "viagra" }
unless = { from_domain = "pharma.example" }
then = { reject = "550 5.7.1 We do not accept this mail" }

[[tenants.rules]]
name = "newsletters"
when = { header = { "List-Id" = "" } }
then = { drop = true }

[[tenants.rules]]
name = "tag"
then = { tags = ["x"] }
""",
    )
    rules = cfg.tenants[0].rules
    d = evaluate(rules, _facts(_mail(subject="cheap viagra")))
    assert d.reject is not None and d.reject[0] == "spam"
    assert (d.reject[1].code, d.reject[1].enhanced) == (550, "5.7.1")
    assert [m for m, _ in d.missed] == ["newsletters", "tag"]
    d = evaluate(rules, _facts(_mail(subject="viagra", sender="rep@pharma.example")))
    assert d.reject is None and d.missed[0] == ("spam", "unless: from_domain all hold")
    d = evaluate(rules, _facts(_mail(headers="List-Id: <news.example.com>\r\n")))
    assert d.drop == "newsletters" and "tag" not in d.matched


@pytest.mark.parametrize(
    ("rule", "line", "key", "says"),
    [
        (
            'when = { colour = "red" }\nthen = { stop = true }',
            3,
            "when.colour",
            "unknown condition",
        ),
        ('then = { queue = "nowhere" }', 3, "then.queue", "unknown queue 'nowhere'"),
        ('then = { assign = "eve@acme.test" }', 3, "then.assign", "not an agent"),
        ('then = { priority = "asap" }', 3, "then.priority", "must be one of"),
        ('then = { reject = "250 2.0.0 fine" }', 3, "then.reject", 'expected "5xx'),
        ('when = { subject = "([" }\nthen = { stop = true }', 3, "when.subject", "bad regular"),
        ('when = { to = "x@acme.test" }\nthen = { stop = true }', 3, "when.to", "not one of"),
        ('when = { hours = "9-5" }\nthen = { stop = true }', 3, "when.hours", "HH:MM-HH:MM"),
        (
            'when = { timezone = "Mars/Base" }\nthen = { stop = true }',
            3,
            "when.timezone",
            "unknown time zone",
        ),
        (
            'when = { has_attachment = "yes" }\nthen = { stop = true }',
            3,
            "when.has_attachment",
            "true or false",
        ),
        ("then = { tags = [] }", 3, "then.tags", "non-empty list"),
        ('when = { subject = "x" }', 2, "then", "required"),
        ('colour = "red"\nthen = { stop = true }', 2, "colour", "unknown key"),
        ('then = { drop = true, reject = "550 5.7.1 no" }', 3, "then.drop", "either drops"),
    ],
)
def test_rule_errors_name_line_and_key(
    tmp_path: Path, rule: str, line: int, key: str, says: str
) -> None:
    text = f'\n[[tenants.rules]]\nname = "bad"\n{rule}\n'
    with pytest.raises(ConfigError) as info:
        _config(tmp_path, text)
    rules_line = HEAD.count("\n") + 2  # the [[tenants.rules]] header
    want = f"{tmp_path / 'gateway.toml'}:"
    hits = [p for p in info.value.problems if f"tenants[0].rules[0].{key}:" in p]
    assert hits and says in hits[0], info.value.problems
    # the error points into the rule's own lines, not at the top of the file
    n = int(hits[0].removeprefix(want).split(":", 1)[0])
    assert rules_line <= n <= rules_line + line, (hits[0], rules_line)


def test_queue_and_setting_errors(tmp_path: Path) -> None:
    text = (
        HEAD.replace(
            'addresses = ["support@acme.test", "billing@acme.test"]\n',
            'addresses = ["support@acme.test", "billing@acme.test"]\n'
            'languages = ["en", "xx"]\ndefault_queue = "nope"\nack_limit = -1\n',
        )
        + '\n[[tenants.queues]]\nname = "general"\nagents = ["eve@acme.test"]\n'
    )
    p = tmp_path / "gateway.toml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(p)
    joined = "\n".join(info.value.problems)
    for key in ("languages", "default_queue", "ack_limit", "queues[2].name", "queues[2].agents"):
        assert f"tenants[0].{key}:" in joined, joined


# -- real mail through a running daemon ---------------------------------------

RULES = """
[[tenants.agents]]
address = "bob@acme.test"
name = "Bob Billing"

[[tenants.agents]]
address = "carol@acme.test"
name = "Carol General"

[[tenants.queues]]
name = "general"

[[tenants.queues]]
name = "billing"
agents = ["bob@acme.test"]

[[tenants.rules]]
name = "spam"
when = { subject = "lottery" }
then = { reject = "550 5.7.1 No lotteries here" }

[[tenants.rules]]
name = "newsletters"
when = { header = { "List-Unsubscribe" = "" } }
then = { drop = true }

[[tenants.rules]]
name = "billing"
when = { to = "billing@acme.test", new_ticket = true }
[tenants.rules.then]
queue = "billing"
priority = "high"
category = "invoices"
tags = ["money"]
assign = "alice@acme.test"
acknowledge = false
"""


def test_rules_act_on_real_mail(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "gw", acme_extra=RULES).start()
    try:
        code, text = d.send(_mail(subject="You won the lottery"))
        assert (code, text) == (550, "5.7.1 No lotteries here")
        code, _ = d.send(_mail(subject="News", headers="List-Unsubscribe: <mailto:u@x>\r\n"))
        assert code == 250
        code, _ = d.send(_mail(subject="Invoice 42 is wrong"), to="billing@acme.test")
        assert code == 250
        code, _ = d.send(_mail(subject="Printer"), to="support@acme.test")
        assert code == 250
    finally:
        d.stop()
    tickets = d.query("SELECT subject, queue, priority, category, tags, assignee FROM tickets")
    by_subject = {r["subject"]: dict(r) for r in tickets}
    assert set(by_subject) == {"Invoice 42 is wrong", "Printer"}
    assert by_subject["Invoice 42 is wrong"] == {
        "subject": "Invoice 42 is wrong",
        "queue": "billing",
        "priority": "high",
        "category": "invoices",
        "tags": '["money"]',
        "assignee": "alice@acme.test",
    }
    assert by_subject["Printer"]["queue"] == "general" and by_subject["Printer"]["tags"] == "[]"
    rules = {r["subject"]: r["rules"] for r in d.query("SELECT subject, rules FROM messages")}
    assert rules == {"Invoice 42 is wrong": '["billing"]', "Printer": "[]"}
    audit = {r["action"]: r["detail"] for r in d.query("SELECT action, detail FROM audit_events")}
    assert json.loads(audit["message.rejected"])["rule"] == "spam"
    assert json.loads(audit["message.dropped"])["rule"] == "newsletters"
    # acknowledge = false: the billing client got no acknowledgement, the other did
    acks = [r["to_addr"] for r in d.query("SELECT to_addr FROM outbox WHERE kind = 'ack'")]
    assert acks == ["client@example.com"]
    assert len(d.query("SELECT 1 FROM outbox WHERE kind = 'ack'")) == 1
    # the billing queue names Bob: he and the assignee hear of its ticket, and the
    # general queue's ticket reaches every agent (Carol only hears of that one)
    notices = d.query(
        "SELECT t.subject, o.to_addr FROM outbox o JOIN tickets t ON t.id = o.ticket_id "
        "WHERE o.kind = 'notice' ORDER BY o.to_addr"
    )
    by = {}
    for r in notices:
        by.setdefault(r["subject"], []).append(r["to_addr"])
    assert by == {
        "Invoice 42 is wrong": ["alice@acme.test", "bob@acme.test"],
        "Printer": ["alice@acme.test", "bob@acme.test", "carol@acme.test"],
    }


def _tenant(tmp_path: Path, settings: str, rules: str = "") -> Tenant:
    addresses = 'addresses = ["support@acme.test", "billing@acme.test"]\n'
    p = tmp_path / "gateway.toml"
    p.write_text(HEAD.replace(addresses, addresses + settings) + rules, encoding="utf-8")
    return load_config(p).tenants[0]


def test_whether_mail_needs_its_language_is_worked_out_with_the_config(tmp_path: Path) -> None:
    """``routing.language.wanted`` asks it of every message's tenants: it reads what the
    config's load worked out (the tenant offers several languages, or a rule tests
    ``language``), and a file cannot set it."""
    one = 'languages = ["en"]\n'
    rule = '\n[[tenants.rules]]\nname = "r"\nthen = { tags = ["t"] }\n'
    plain = _tenant(tmp_path, one)
    tested = _tenant(tmp_path, one, rule + '[tenants.rules.when]\nlanguage = "de"\n')
    untested = _tenant(tmp_path, one, rule + '[tenants.rules.unless]\nsubject = "x"\n')
    several = _tenant(tmp_path, 'languages = ["en", "de"]\n')
    assert [(t.chooses_language, t.tells_language) for t in (plain, tested, untested, several)] == [
        (False, False),
        (False, True),
        (False, False),
        (True, True),
    ]
    assert not wanted([plain, untested]) and wanted([plain, tested]) and wanted([several])
    assert not dataclasses.replace(several, languages=("de",)).tells_language
    with pytest.raises(ConfigError, match="tells_language: unknown key"):
        _tenant(tmp_path, one + "tells_language = false\n")
