"""The pure stages, called directly: the answer table, decide(), speaker and reply text on
fixtures/*.eml, and the commit stages on an in-memory store (no daemon, no sockets)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine as create_sync
from sqlalchemy import func, select
from structlog.testing import capture_logs

from gateway.intake.big_mail import BigMail
from gateway.intake.commit import commit_message, jobs, lookup
from gateway.intake.decide import Arrival, Seen, decide
from gateway.intake.pipeline import Pipeline
from gateway.intake.replies import (
    ANSWERS,
    ImapAction,
    defer,
    enhance,
    exit_code,
    imap_action,
    outcome_for_exception,
    quarantine,
    queue_id,
    reject,
    smtp_reply,
    verdict,
)
from outbound.compose import Templates
from parsers import parse
from parsers.errors import HeaderTooLarge, ParseError, StructureTooDeep
from parsers.types import Envelope, ParsedMessage, RawMessage
from routing import language
from routing.auth import NONE, AuthVerdict
from routing.classify import speaker
from routing.config import GatewayConfig, load_config
from routing.tenants import AddressIndex
from routing.threader import ThreadMatch
from routing.tokens import make_token, read_token
from routing.verdicts import Accepted, Defer, Drop, Reason, Reject, Stored
from store import repos
from store.blobs import BlobStore, FileBlobStore
from store.blobs_db import DatabaseBlobStore
from store.db import create_writer_engine
from store.errors import StoreUnavailable
from store.faults import POINTS
from store.models import audit_events, messages, metadata, tickets
from store.writer import Writer

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
SHA = "0" * 64

CONFIG = """
[gateway]
data_dir = "var"
hostname = "gw.acme.test"

[[tenants]]
slug = "acme"
addresses = ["support@acme.test", "billing@acme.test"]
tag_prefix = "ACME"

[[tenants.agents]]
address = "alice@acme.test"

[[tenants.rules]]
name = "spam"
when = { subject = "viagra" }
then = { reject = "550 5.7.1 We do not accept this mail" }

[[tenants.rules]]
name = "newsletters"
when = { header = { "List-Id" = "" } }
then = { drop = true }

[[tenants.rules]]
name = "invoices"
when = { subject = "invoice" }
then = { priority = "high", tags = ["billing"], acknowledge = false }

[[tenants]]
slug = "globex"
addresses = ["help@globex.test"]
tag_prefix = "GLOBEX"
"""


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> GatewayConfig:
    path = tmp_path_factory.mktemp("stages") / "gateway.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return load_config(path)


def _fixture(name: str) -> bytes:
    return re.sub(rb"(?<!\r)\n", b"\r\n", (FIXTURES / name).read_bytes())


def _raw(data: bytes, *rcpts: str, source: str = "smtp") -> RawMessage:
    sender = parse(data).from_addr
    return RawMessage(
        Envelope(mail_from=sender, rcpt_tos=rcpts or ("support@acme.test",)), data, source
    )


def _mail(subject: str, sender: str = "kim@client.test", headers: str = "", to: str = "") -> bytes:
    to = to or "support@acme.test"
    mid = f"<{abs(hash((subject, sender, headers)))}@client.test>"
    return (
        f"From: Kim <{sender}>\r\nTo: {to}\r\nCc: lee@client.test, alice@acme.test\r\n"
        f"Subject: {subject}\r\nMessage-ID: {mid}\r\n"
        f"{headers}Content-Type: text/plain\r\n\r\nPlease help, the printer is broken.\r\n"
    ).encode()


# -- the answer table ---------------------------------------------------------------------


def test_every_reason_has_one_answer_with_a_stdlib_exit_code() -> None:
    assert set(ANSWERS) == set(Reason)
    sysexits = {v for k, v in vars(os).items() if k.startswith("EX_")}
    for reason, answer in ANSWERS.items():
        assert answer.exit in sysexits, reason
        if answer.code:
            assert str(answer.code)[0] == answer.enhanced[0], reason  # 5xx with 5.x.x
        refused = answer.code // 100 == 5 or reason is Reason.RULE
        assert (answer.imap is ImapAction.QUARANTINE) == (
            refused or reason is Reason.DEFERRED_TOO_OFTEN
        ), reason
        if answer.code // 100 == 4:
            assert (answer.imap, answer.exit) == (ImapAction.LEAVE, os.EX_TEMPFAIL), reason


@pytest.mark.parametrize(
    ("reason", "detail", "reply", "exit"),
    [
        (Reason.NO_SUCH_RECIPIENT, "", "550 5.1.1 No such recipient here", os.EX_NOUSER),
        (Reason.TOO_BIG, "", "552 5.3.4 Message too big for system", os.EX_DATAERR),
        (Reason.LOOP, "", "554 5.4.0 Too many hops, mail loop suspected", os.EX_DATAERR),
        (
            Reason.INFECTED,
            "Eicar-Signature",
            "554 5.7.1 Message content rejected: virus found (Eicar-Signature)",
            os.EX_UNAVAILABLE,
        ),
        (Reason.UNSCANNABLE, "", "552 5.3.4 Message too big to be scanned", os.EX_UNAVAILABLE),
        (
            Reason.SCANNER_UNAVAILABLE,
            "",
            "451 4.7.1 Virus scanner unavailable, try again later",
            os.EX_TEMPFAIL,
        ),
        (Reason.SHUTTING_DOWN, "", "421 4.3.2 Service shutting down, try again later", 75),
        (Reason.TOO_MANY_RECIPIENTS, "", "452 4.5.3 Too many recipients", os.EX_TEMPFAIL),
    ],
)
def test_a_reason_gives_its_reply_and_exit_code(
    reason: Reason, detail: str, reply: str, exit: int
) -> None:
    out = verdict(reason, detail)
    assert smtp_reply(out) == reply
    assert exit_code(out) == exit
    assert isinstance(out, Reject if reply[0] == "5" else Defer)


def test_accepts_and_drops_are_not_refusals() -> None:
    with pytest.raises(ValueError):
        verdict(Reason.DUPLICATE)
    with pytest.raises(ValueError):
        verdict(Reason.RULE)  # a rule's reply is the rule's own
    with pytest.raises(AssertionError):
        reject(Reason.TIMEOUT)
    with pytest.raises(AssertionError):
        defer(Reason.LOOP)


@pytest.mark.parametrize(
    ("exc", "reply"),
    [
        (HeaderTooLarge("big"), "552 5.3.4 Message header too large"),
        (StructureTooDeep("deep"), "554 5.6.0 Message structure over limits"),
        (type("Odd", (ParseError,), {})("odd"), "554 5.6.0 Message cannot be read"),
        (TimeoutError(), "451 4.3.0 Timed out, try again later"),
        (
            type("Locked", (StoreUnavailable,), {})("x"),
            "451 4.3.0 Storage unavailable, try again later",
        ),
        (RuntimeError("bug"), "451 4.3.0 Temporary failure, try again later"),
    ],
)
def test_a_fault_is_answered_by_its_class(exc: BaseException, reply: str) -> None:
    assert smtp_reply(outcome_for_exception(exc)) == reply


def test_accepted_replies_exit_codes_and_imap_actions() -> None:
    new = Stored("acme", "ACME-1", "new")
    dup = Stored("acme", None, "none", drop=Reason.DUPLICATE)
    dropped = Stored("globex", None, "none", drop=Reason.RULE_DROP)
    # Every 250 names the arrival's opaque id and nothing else: no ref to probe, and a
    # duplicate or a rule's drop reads like any other accepted mail (issue 16).
    qid = queue_id()
    assert re.fullmatch(r"[0-9a-f]{16}", qid) and qid != queue_id()
    assert smtp_reply(Accepted((new, dup), qid)) == f"250 2.0.0 OK queued as {qid}"
    assert smtp_reply(Drop((dup,), qid)) == f"250 2.0.0 OK queued as {qid}"
    assert smtp_reply(Drop((dup, dropped), qid)) == f"250 2.0.0 OK queued as {qid}"
    assert smtp_reply(Accepted((Stored("acme", None, "none"),), qid)).endswith(qid)
    assert "ACME" not in smtp_reply(Accepted((new,), qid))
    for outcome in (Accepted((new,)), Drop((dup,))):
        assert (exit_code(outcome), imap_action(outcome)) == (os.EX_OK, ImapAction.DONE)
    assert imap_action(defer(Reason.SCANNER_UNAVAILABLE)) is ImapAction.LEAVE
    assert imap_action(reject(Reason.INFECTED, "x")) is ImapAction.QUARANTINE
    rule = Reject(Reason.RULE, 550, "5.7.1", "No", rule="spam", tenant="acme")
    assert (imap_action(rule), exit_code(rule)) == (ImapAction.QUARANTINE, os.EX_UNAVAILABLE)


def test_quarantine_says_why() -> None:
    q = quarantine(defer(Reason.SCANNER_UNAVAILABLE), 3)
    assert q.reason is Reason.DEFERRED_TOO_OFTEN
    assert q.text == "deferred 3 times: 451 4.7.1 Virus scanner unavailable, try again later"
    q = quarantine(reject(Reason.TOO_BIG_TO_FETCH, 9000))
    assert (q.reason, q.text) == (
        Reason.TOO_BIG_TO_FETCH,
        "552 5.3.4 message of 9000 bytes is over the limit",
    )
    assert imap_action(q) is ImapAction.QUARANTINE


@pytest.mark.parametrize(
    ("line", "enhanced"),
    [
        ("250 OK", "250 2.0.0 OK"),
        ("503 Error: need MAIL command", "503 5.5.1 need MAIL command"),
        ("552 Error: Too much mail data", "552 5.3.4 Message too big for system"),
        ("550 5.1.1 No such recipient here", "550 5.1.1 No such recipient here"),
        ("220 gw.acme.test ESMTP", "220 gw.acme.test ESMTP"),
        ("250 gw.acme.test", "250 gw.acme.test"),
        ("354 End data with <CR><LF>.<CR><LF>", "354 End data with <CR><LF>.<CR><LF>"),
    ],
)
def test_enhance_adds_an_enhanced_code_only_where_one_belongs(line: str, enhanced: str) -> None:
    assert enhance(line, "gw.acme.test") == enhanced


def test_the_documented_smtp_answers_are_the_table() -> None:
    """docs/daemon.md's table (code | enhanced | when | reply text | ingest exit) says
    what ANSWERS says; beside it only the protocol's own lines: the 250 of a commit,
    aiosmtpd's rewritten SIZE refusal and the STARTTLS demand."""
    text = (ROOT / "docs" / "daemon.md").read_text(encoding="utf-8")
    section = text.split("## SMTP answers", 1)[1].split("\n## ", 1)[0]
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in section.splitlines()
        if re.match(r"\| \d{3} \| \d\.\d{1,3}\.\d{1,3} \|", line)
    ]
    assert len(rows) >= 15, rows
    documented = {f"{code} {enhanced}" for code, enhanced, *_ in rows}
    protocol = {"250 2.0.0", "530 5.7.0"}
    ours = {f"{a.code} {a.enhanced}" for a in ANSWERS.values() if a.code}
    assert documented == ours | protocol
    texts = {a.smtp.replace("{detail}", "<>") for a in ANSWERS.values() if a.code}
    protocol_texts = {
        "250 2.0.0 OK queued as <>",
        "530 5.7.0 Must issue a STARTTLS command first",
        "552 5.3.4 Message size exceeds fixed maximum message size",
    }
    for code, enhanced, _when, reply, exit_ in rows:
        quoted = re.sub(r"<[^>]*>", "<>", reply.split("`")[1])
        line = f"{code} {enhanced} {quoted}"
        assert line in texts | protocol_texts, line
        matching = [a for a in ANSWERS.values() if a.smtp.replace("{detail}", "<>") == line]
        if matching and exit_ != "-":
            assert int(exit_) == matching[0].exit, line


def test_the_security_probe_table_names_tests_that_exist() -> None:
    """docs/security.md's table of issue 16's probes points at a test for each: a test
    renamed or dropped must not leave the table promising a proof that is gone."""
    text = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(tests/\w+\.py)::(\w+)`", text))
    assert len(named) >= 20, named
    for path, name in sorted(named):
        source = (ROOT / path).read_text(encoding="utf-8")
        assert re.search(rf"^def {name}\(", source, re.M), f"{path}::{name}"


def test_crash_points_are_named_once() -> None:
    used = set()
    for path in (ROOT / "tests").glob("test_*.py"):
        used |= set(re.findall(r'GATEWAY_TEST_CRASH_AT": "(\w+)"', path.read_text()))
        used |= set(re.findall(r'parametrize\("point", \[([^\]]+)\]', path.read_text()))
    names = {n.strip(' "') for u in used for n in u.split(",")}
    assert names and names <= POINTS, names - POINTS


# -- decide: facts in, a plan out ------------------------------------------------------------


def _decide(
    config: GatewayConfig,
    data: bytes,
    match: ThreadMatch,
    *,
    source: str = "smtp",
    reused: bool = False,
    rcpt: str = "support@acme.test",
    auth: AuthVerdict = NONE,
    participant: bool = True,  # the sender takes part in the matched ticket
    status: str | None = None,  # the matched ticket's status
) -> tuple[ParsedMessage, object]:
    parsed = parse(data)
    raw = _raw(data, rcpt, source=source)
    tenant = config.tenants[0]
    seen = Seen(
        parsed.message_id or "k",
        duplicate=False,
        key_reused=reused,
        match=match,
        participant=participant and match.ticket_id is not None,
        status=status,
    )
    return parsed, decide(seen, config, tenant, rcpt, Arrival(raw, parsed, SHA, NOW, auth))


def test_decide_a_duplicate_keeps_nothing(config: GatewayConfig) -> None:
    data = _fixture("new-ticket.eml")
    parsed = parse(data)
    plan = decide(
        Seen("<printer-1@client.example>", duplicate=True),
        config,
        config.tenants[0],
        "support@acme.test",
        Arrival(_raw(data), parsed, SHA, NOW),
    )
    assert plan.stored == Stored("acme", None, "none", drop=Reason.DUPLICATE)
    assert plan.stored.duplicate
    assert (plan.ingest, plan.audit, plan.reaction, plan.reject) == (None, None, None, None)


def test_decide_a_new_ticket(config: GatewayConfig) -> None:
    _, plan = _decide(config, _fixture("new-ticket.eml"), ThreadMatch(None, "none"))
    assert plan.role == "client" and plan.stored.thread_by == "new"
    w = plan.ingest
    assert w.open is not None and w.ticket_id is None
    assert (w.open.prefix, w.open.subject, w.open.queue) == (
        "ACME",
        "Printer on floor 3 prints blank pages",
        "default",
    )
    assert [(p.address, p.role) for p in w.participants] == [("dana@client.example", "client")]
    assert w.message["message_key"] == "<printer-1@client.example>"
    assert w.message["thread_by"] == "new" and w.message["sender_role"] == "client"
    assert w.detail == {"kind": "normal", "by": "new"}
    assert plan.reaction.role == "client" and plan.reaction.acknowledge is None


def test_decide_a_follow_up_and_the_people_copied(config: GatewayConfig) -> None:
    _, plan = _decide(config, _fixture("reply-by-references.eml"), ThreadMatch(7, "references"))
    w = plan.ingest
    assert (w.open, w.ticket_id, plan.stored.thread_by) == (None, 7, "references")
    assert [(p.address, p.role) for p in w.participants] == [("dana@client.example", "cc")]
    # On a new ticket the people copied join, but never one of our own addresses.
    _, plan = _decide(config, _mail("Printer"), ThreadMatch(None, "none"))
    assert [(p.address, p.role) for p in plan.ingest.participants] == [
        ("kim@client.test", "client"),
        ("lee@client.test", "cc"),
    ]


def test_decide_machine_mail_is_recorded_and_never_answered(config: GatewayConfig) -> None:
    _, alone = _decide(config, _fixture("auto-reply.eml"), ThreadMatch(None, "none"))
    assert alone.role == "machine"
    assert (alone.ingest.open, alone.ingest.ticket_id, alone.ingest.participants) == (
        None,
        None,
        (),
    )
    assert alone.stored.thread_by == "none"
    _, threaded = _decide(config, _fixture("auto-reply.eml"), ThreadMatch(3, "references"))
    assert threaded.ingest.ticket_id == 3 and threaded.reaction.role == "machine"
    assert not threaded.reaction.bounce


def test_decide_an_agent_is_known_by_token_and_from(config: GatewayConfig) -> None:
    token = make_token(config.secret, "acme", 7, "alice@acme.test")
    claim = read_token(config.secret, "acme", token)
    match = ThreadMatch(7, "token", claim)
    _, plan = _decide(config, _mail("Re: Printer", sender="alice@acme.test"), match)
    assert (plan.role, plan.agent.address, plan.ingest.participants) == (
        "agent",
        "alice@acme.test",
        (),
    )
    assert plan.reaction.agent is plan.agent
    # The same token with someone else's From: a client, flagged, never relayed.
    _, forged = _decide(config, _mail("Re: Printer", sender="mallory@evil.test"), match)
    assert (forged.role, forged.agent) == ("client", None)
    assert forged.stored.flagged == ("agent-token-from-mismatch",)
    assert forged.ingest.message["flags"] == ["agent-token-from-mismatch"]
    # Refused: nobody joins, nothing changes, and the token's agent is the one told.
    assert (forged.ingest.participants, forged.ingest.changes, forged.ingest.anchor) == (
        (),
        {},
        False,
    )
    assert (forged.reaction.caution, forged.reaction.agent.address) == (
        "refused",
        "alice@acme.test",
    )
    assert forged.reaction.acknowledge is False
    # A forger whose From also fails authentication is refused all the same: the agent
    # is told (a refusal, not just the agents' warning), and the message is unverified.
    _, both = _decide(
        config, _mail("Re: Printer", sender="ceo@bank.test"), match, auth=AuthVerdict("fail")
    )
    assert both.stored.flagged == ("agent-token-from-mismatch", "unverified")
    assert (both.reaction.caution, both.reaction.agent.address) == ("refused", "alice@acme.test")
    assert (both.ingest.participants, both.ingest.changes, both.ingest.anchor) == ((), {}, False)


def test_decide_rules_reject_drop_and_act(config: GatewayConfig) -> None:
    _, plan = _decide(config, _mail("cheap viagra"), ThreadMatch(None, "none"))
    assert plan.reject == Reject(
        Reason.RULE, 550, "5.7.1", "We do not accept this mail", rule="spam", tenant="acme"
    )
    assert (plan.ingest, plan.audit) == (None, None)

    _, plan = _decide(
        config, _mail("News", headers="List-Id: <n.client.test>\r\n"), ThreadMatch(4, "references")
    )
    assert plan.stored == Stored("acme", None, "none", drop=Reason.RULE_DROP)
    assert plan.ingest is None and plan.reject is None
    assert (plan.audit.action, plan.audit.ticket_id, plan.audit.detail["rule"]) == (
        "message.dropped",
        4,
        "newsletters",
    )

    _, plan = _decide(config, _mail("Invoice 12"), ThreadMatch(5, "references"))
    assert plan.ingest.changes == {"priority": "high"}
    assert plan.ingest.tags == ("billing",)
    assert plan.ingest.detail == {"kind": "normal", "by": "references", "rules": ["invoices"]}
    assert plan.reaction.acknowledge is False


def test_decide_history_and_reused_ids(config: GatewayConfig) -> None:
    _, plan = _decide(config, _mail("Printer"), ThreadMatch(None, "none"), source="import")
    assert plan.ingest is not None and plan.reaction is None  # history emails nobody
    _, plan = _decide(config, _mail("Printer"), ThreadMatch(None, "none"), reused=True)
    assert plan.stored.flagged == ("message-id-reused",)


def test_decide_is_pure(config: GatewayConfig) -> None:
    first = _decide(config, _fixture("new-ticket.eml"), ThreadMatch(None, "none"))[1]
    again = _decide(config, _fixture("new-ticket.eml"), ThreadMatch(None, "none"))[1]
    assert first == again


# -- parsers and routing on the fixtures ----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "role"),
    [
        ("new-ticket.eml", "client"),
        ("reply-by-references.eml", "client"),
        ("invoice-with-pdf.eml", "client"),
        ("auto-reply.eml", "machine"),
    ],
)
def test_speaker_on_fixtures(config: GatewayConfig, name: str, role: str) -> None:
    data = _fixture(name)
    parsed = parse(data)
    raw = _raw(data)
    got, agent = speaker(parsed, raw.envelope.mail_from, config.tenants[0], None, config.hostname)
    assert (got, agent) == (role, None)


def test_speaker_with_no_envelope_sender_is_a_machine(config: GatewayConfig) -> None:
    parsed = parse(_fixture("new-ticket.eml"))
    assert speaker(parsed, "", config.tenants[0], None, config.hostname) == ("machine", None)


@pytest.mark.parametrize(
    ("name", "reply"),
    [
        (
            "reply-by-references.eml",
            "It is also printing blank pages from the second tray now.\n\nDana",
        ),
        ("auto-reply.eml", "I am out of the office until Monday."),
        ("invoice-with-pdf.eml", "The attached invoice charges us twice for November."),
    ],
)
def test_reply_text_drops_the_quoted_history(name: str, reply: str) -> None:
    parsed = parse(_fixture(name))
    assert parsed.reply_text == reply
    assert ">" not in parsed.reply_text


# -- the commit stages on a real (in-memory) store ------------------------------------------


@pytest.fixture
def conn():  # type: ignore[no-untyped-def]
    engine = create_sync("sqlite://")
    metadata.create_all(engine)
    with engine.connect() as c:
        with c.begin():
            yield c
    engine.dispose()


def _commit(config: GatewayConfig, conn, data: bytes, *rcpts: str):  # type: ignore[no-untyped-def]
    raw = _raw(data, *rcpts)
    named = jobs(AddressIndex(config), raw.envelope.rcpt_tos)
    msg = Arrival(raw, parse(data), hashlib.sha256(data).hexdigest(), NOW)
    return commit_message(conn, config, Templates.of(config), named, msg, lambda c: None)


def test_threader_and_dedupe_on_the_fixture_thread(config: GatewayConfig, conn) -> None:  # type: ignore[no-untyped-def]
    first = _commit(config, conn, _fixture("new-ticket.eml"))
    assert [(s.ticket_ref, s.thread_by) for s in first] == [("ACME-1", "new")]
    again = _commit(config, conn, _fixture("new-ticket.eml"))
    assert [s.drop for s in again] == [Reason.DUPLICATE]
    reply = _fixture("reply-by-references.eml")
    raw, parsed = _raw(reply), parse(reply)
    job = jobs(AddressIndex(config), raw.envelope.rcpt_tos)["acme"]
    seen = lookup(conn, config, job, Arrival(raw, parsed, SHA, NOW))
    assert not seen.duplicate and seen.match.by == "references"
    follow = _commit(config, conn, reply)
    assert [(s.ticket_ref, s.thread_by) for s in follow] == [("ACME-1", "references")]
    ooo = _commit(config, conn, _fixture("auto-reply.eml"))
    assert [(s.ticket_ref, s.thread_by) for s in ooo] == [("ACME-1", "references")]
    rows = conn.execute(select(messages.c.sender_role).order_by(messages.c.id)).scalars().all()
    assert rows == ["client", "client", "machine"]
    created = conn.execute(select(tickets.c.created_at)).scalar_one()
    assert created.replace(tzinfo=UTC) == NOW  # one clock per message


def test_a_rule_reject_rolls_back_every_tenant(config: GatewayConfig, conn) -> None:  # type: ignore[no-untyped-def]
    out = _commit(
        config,
        conn,
        _mail("viagra", to="help@globex.test, support@acme.test"),
        "help@globex.test",
        "support@acme.test",
    )
    assert isinstance(out, Reject) and (out.rule, out.tenant) == ("spam", "acme")
    for table in (tickets, messages, audit_events):
        assert conn.execute(select(func.count()).select_from(table)).scalar_one() == 0
    assert repos.outbox_last_id(conn) == 0


def test_a_rule_reject_does_not_fail_the_writers_batch(
    config: GatewayConfig, tmp_path: Path
) -> None:
    engine = create_writer_engine(f"sqlite:///{tmp_path / 'gw.db'}")
    metadata.create_all(engine)
    writer = Writer(engine)

    def unit(data: bytes):  # type: ignore[no-untyped-def]
        return lambda conn: _commit(config, conn, data)

    async def both() -> list[object]:
        try:
            return await asyncio.gather(
                writer.submit(unit(_mail("viagra"))), writer.submit(unit(_mail("Printer")))
            )
        finally:
            await writer.close()

    refused, stored = asyncio.run(both())
    assert isinstance(refused, Reject) and stored[0].ticket_ref == "ACME-1"
    # One transaction held both: the refusal was a value, not a batch failure and two retries.
    assert (writer.batches, writer.units) == (1, 2)


# -- decide with the sender's authentication as a fact ------------------------------------

FAIL, PASS, TEMP = AuthVerdict("fail"), AuthVerdict("pass"), AuthVerdict("temperror")


def test_decide_a_from_that_fails_authentication_is_kept_but_changes_nothing(
    config: GatewayConfig,
) -> None:
    """A forged client on their ticket: stored there, marked, no participant, no rule
    change, no acknowledgement, and the ticket's clocks and the address stay as they are."""
    mail = _mail("Re: invoice [ACME-3]")
    _, honest = _decide(config, mail, ThreadMatch(3, "tag"), auth=PASS)
    assert honest.ingest.changes == {"priority": "high"} and honest.ingest.tags == ("billing",)
    assert honest.ingest.participants and honest.reaction.verified
    assert "unverified" not in honest.stored.flagged
    _, forged = _decide(config, mail, ThreadMatch(3, "tag"), auth=FAIL)
    assert forged.ingest.ticket_id == 3 and forged.role == "client"
    assert forged.stored.flagged == ("unverified",)
    assert forged.ingest.message["flags"] == ["unverified"]
    assert forged.ingest.message["auth"] == "fail"
    assert (forged.ingest.changes, forged.ingest.tags, forged.ingest.participants) == ({}, (), ())
    assert forged.reaction.acknowledge is False and not forged.reaction.verified
    # A new ticket from a failing From: opened (the agents see it), never acknowledged.
    _, new = _decide(config, _mail("Printer"), ThreadMatch(None, "none"), auth=FAIL)
    assert new.ingest.open is not None and new.reaction.acknowledge is False
    # No DNS answer is not proof of forgery: a client's temperror behaves as today.
    _, temp = _decide(config, mail, ThreadMatch(3, "tag"), auth=TEMP)
    assert temp.stored.flagged == () and temp.ingest.participants and temp.reaction.verified


def test_decide_relays_an_agent_only_when_the_from_authenticates(config: GatewayConfig) -> None:
    token = make_token(config.secret, "acme", 7, "alice@acme.test")
    match = ThreadMatch(7, "token", read_token(config.secret, "acme", token))
    reply = _mail("Re: Printer", sender="alice@acme.test")
    for auth in (PASS, NONE):  # authenticated, or a tenant without authentication
        _, plan = _decide(config, reply, match, auth=auth)
        assert (plan.role, plan.reaction.agent.address) == ("agent", "alice@acme.test"), auth
    for auth in (FAIL, TEMP):
        _, plan = _decide(config, reply, match, auth=auth)
        assert (plan.role, plan.agent, plan.reaction.agent) == ("client", None, None), auth
        assert plan.stored.flagged == ("agent-unauthenticated", "unverified"), auth
        assert plan.ingest.participants == () and plan.reaction.acknowledge is False


def test_decide_a_follow_up_from_an_outsider_does_not_make_them_a_participant(
    config: GatewayConfig,
) -> None:
    """The two-mail takeover's second mail: threaded by References into a ticket whose
    participant the sender is not. Kept for the agents, marked; the sender joins nothing."""
    mail = _mail("Re: invoice", sender="outsider@evil.test")
    _, plan = _decide(config, mail, ThreadMatch(7, "references"), participant=False)
    assert plan.ingest.ticket_id == 7 and plan.role == "client"
    assert plan.stored.flagged == ("outsider",)
    assert (plan.ingest.participants, plan.ingest.changes, plan.ingest.tags) == ((), {}, ())
    assert plan.reaction.caution == "outsider" and plan.reaction.acknowledge is False
    assert not plan.ingest.anchor  # its Message-ID: no anchor for others to thread onto
    # A participant's follow-up, by the same way, joins as before.
    _, ok = _decide(config, mail, ThreadMatch(7, "references"), participant=True)
    assert ok.stored.flagged == () and ok.ingest.participants and not ok.reaction.caution


# -- ticket life: reopen, pending, the same mail delivered twice ---------------------------


def test_decide_a_clients_reply_reopens_a_closed_ticket(config: GatewayConfig) -> None:
    data = _mail("Re: [ACME-5] Printer")
    _, plan = _decide(config, data, ThreadMatch(5, "tag"), status="closed")
    assert plan.ingest.changes["status"] == "open" and plan.ingest.status_was == "closed"
    assert plan.reaction.reopened  # the agents' notice says "reopened"
    # Pending (waiting on the client): the reply sets it open again, no "reopened".
    _, plan = _decide(config, data, ThreadMatch(5, "tag"), status="pending")
    assert plan.ingest.changes["status"] == "open" and plan.ingest.status_was == "pending"
    assert not plan.reaction.reopened
    _, plan = _decide(config, data, ThreadMatch(5, "tag"), status="open")
    assert "status" not in plan.ingest.changes and plan.ingest.status_was is None


def test_decide_nobody_but_the_client_reopens(config: GatewayConfig) -> None:
    data = _mail("Re: [ACME-5] Printer", sender="stranger@evil.test")
    _, plan = _decide(config, data, ThreadMatch(5, "tag"), status="closed", participant=False)
    assert plan.reaction.caution == "outsider"
    assert "status" not in plan.ingest.changes and not plan.reaction.reopened
    fail = AuthVerdict("fail", "fail", "none", "fail", "example")
    _, plan = _decide(
        config, _mail("Re: [ACME-5] Printer"), ThreadMatch(5, "tag"), status="closed", auth=fail
    )
    assert plan.reaction.caution == "unverified" and "status" not in plan.ingest.changes
    robot = _mail("Re: [ACME-5] Printer", headers="Auto-Submitted: auto-replied\r\n")
    _, plan = _decide(config, robot, ThreadMatch(5, "tag"), status="closed")
    assert plan.role == "machine" and "status" not in plan.ingest.changes


def test_decide_a_second_delivery_is_audited_not_stored(config: GatewayConfig) -> None:
    data = _mail("Printer")
    parsed = parse(data)
    seen = Seen(parsed.message_id, duplicate=True, copy_of=41, copy_ticket=7)
    plan = decide(
        seen, config, config.tenants[0], "billing@acme.test", Arrival(_raw(data), parsed, SHA, NOW)
    )
    assert plan.stored.duplicate and plan.ingest is None and plan.reaction is None
    assert plan.audit is not None and plan.audit.action == "message.redelivered"
    assert plan.audit.ticket_id == 7
    assert plan.audit.detail == {"message": 41, "sha256": SHA, "recipient": "billing@acme.test"}


# -- the pipeline on a real store, without a scanner (text mail needs none) ----------------


@pytest.mark.parametrize("blob_store", ["database", "files"])
def test_the_raw_message_is_hashed_once_on_its_way_to_the_store(
    config: GatewayConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, blob_store: str
) -> None:
    """The pipeline hashes the raw bytes for the dedupe key; the blob store is handed that
    hash (and the parser's for each attachment) rather than hashing them again."""
    engine = create_writer_engine(f"sqlite:///{tmp_path / 'gw.db'}")
    metadata.create_all(engine)
    writer = Writer(engine)
    blobs: BlobStore = (
        DatabaseBlobStore(engine) if blob_store == "database" else FileBlobStore(tmp_path / "b")
    )
    pipeline = Pipeline(config, writer, blobs, scanner=None, clock=lambda: NOW)
    data = _mail("Hashed once")
    raw = _raw(data)
    real, hashed = hashlib.sha256, []

    def counting(d: bytes = b"", **kw: bool) -> hashlib._Hash:
        hashed.append(bytes(d))
        return real(d, **kw)

    async def go() -> object:
        try:
            return await pipeline.process(raw)
        finally:
            await writer.close()

    monkeypatch.setattr(hashlib, "sha256", counting)
    out = asyncio.run(go())
    monkeypatch.undo()
    assert isinstance(out, Accepted), out
    assert hashed.count(data) == 1
    with engine.connect() as conn:
        stored = conn.execute(select(messages.c.raw_sha256)).scalar_one()
    assert stored == real(data).hexdigest() and blobs.get(stored) == data
    engine.dispose()


def test_a_failed_language_model_load_is_logged_and_the_next_need_tries_again(
    config: GatewayConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A load that fails says so wherever it was started: the lone parse starts one that
    no message waits on, so nobody else would. The next message that needs the model
    starts a new load rather than inherit the failed one."""
    engine = create_writer_engine(f"sqlite:///{tmp_path / 'gw.db'}")
    writer = Writer(engine)
    pipeline = Pipeline(config, writer, FileBlobStore(tmp_path / "b"), scanner=None)

    def unreadable() -> None:
        raise OSError("model file unreadable")

    async def go() -> bool:
        try:
            first = pipeline.warm_language()
            with pytest.raises(OSError):
                await first
            await asyncio.sleep(0)  # the load's done callbacks have run
            second = pipeline.warm_language()
            with pytest.raises(OSError):
                await second
            return second is not first
        finally:
            await writer.close()

    monkeypatch.setattr(language, "warm", unreadable)
    with capture_logs() as logs:
        tried_again = asyncio.run(go())
    failed = [e for e in logs if e["event"] == "language.load_failed"]
    assert tried_again and len(failed) == 2
    assert all("model file unreadable" in str(e["error"]) for e in failed)
    assert not any(e["event"] == "language.loaded" for e in logs)
    engine.dispose()


def test_big_mail_takes_turns_from_its_parse_to_its_commit_and_small_mail_does_not_wait(
    config: GatewayConfig, tmp_path: Path
) -> None:
    """Six 1.5 MB messages at once, with room for two: never more than two between parse
    and commit (each parse held a while so they would all overlap without the turns),
    all six stored; a small message sent meanwhile goes by them while they wait."""
    engine = create_writer_engine(f"sqlite:///{tmp_path / 'gw.db'}")
    metadata.create_all(engine)
    writer = Writer(engine)
    pipeline = Pipeline(config, writer, FileBlobStore(tmp_path / "b"), scanner=None)
    pipeline.big_mail = BigMail(budget=3 << 20, floor=1 << 20)
    line = b"The printer still prints every page twice, with a grey stripe.\r\n"
    big = [
        _mail(f"Log {i}").replace(b"Please help", line * 24_000 + b"Please help")
        for i in range(6)
    ]
    assert all(1.4 * 2**20 < len(b) < 1.5 * 2**20 for b in big)  # two fit in 3 MiB
    parsing: list[int] = []
    most = 0
    small_saw_waiting: list[int] = []
    original = pipeline._parse

    async def held_a_while(data: bytes, *args: object) -> ParsedMessage:
        nonlocal most
        if len(data) < 1 << 20:
            small_saw_waiting.append(pipeline.big_mail.waiting)
            return await original(data, *args)  # type: ignore[arg-type]
        parsing.append(1)
        most = max(most, len(parsing))
        try:
            await asyncio.sleep(0.05)
            return await original(data, *args)  # type: ignore[arg-type]
        finally:
            parsing.pop()

    pipeline._parse = held_a_while  # type: ignore[method-assign]

    async def go() -> list[object]:
        try:
            bigs = [asyncio.ensure_future(pipeline.process(_raw(b))) for b in big]
            await asyncio.sleep(0.01)  # the first two have their turn, four wait
            small = await pipeline.process(_raw(_mail("Small one")))
            return [small, *await asyncio.gather(*bigs)]
        finally:
            await writer.close()

    outcomes = asyncio.run(go())
    assert all(isinstance(o, Accepted) for o in outcomes), outcomes
    assert most == 2 and pipeline.big_mail.peak <= 3 << 20
    assert pipeline.big_mail.held == 0 and pipeline.big_mail.waiting == 0
    assert small_saw_waiting == [4]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(messages)).scalar_one() == 7
    engine.dispose()
