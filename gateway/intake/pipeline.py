"""The one path every message takes: parse, route, classify, scan, thread, commit.

Each stage is a plain call; this module only runs them in order and turns
what they say into an Outcome. The commit is the moment of acceptance: a
message is answered 250 (or left the IMAP folder) only after its rows are in
one committed transaction and its blobs are durable before that (fsynced
files) or in that same transaction (the database store). The commit itself
is staged in ``gateway/intake/commit.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Callable
from datetime import datetime

import structlog
from sqlalchemy.engine import Connection

from gateway import metrics
from gateway.clock import Clock
from gateway.intake.auth import Authenticator, trusted_id
from gateway.intake.big_mail import BigMail
from gateway.intake.commit import Job, commit_message, jobs
from gateway.intake.decide import Arrival
from gateway.intake.in_order import Turn
from gateway.intake.parse_pool import ParsePool
from gateway.intake.replies import defer, outcome_for_exception, queue_id, reject
from gateway.intake.scan import Scanner
from gateway.intake.scan_result import Clean, Infected, ScanResult, Unavailable, Unscannable
from gateway.intake.trace import TIMELINE, Trace
from outbound.compose import Templates
from parsers import Limits, parse
from parsers.types import ParsedMessage, RawMessage
from routing import language
from routing.config import GatewayConfig, Tenant
from routing.tenants import AddressIndex
from routing.verdicts import Accepted, Defer, Drop, Outcome, Reason, Reject, Stored
from store import repos
from store.blobs import BlobStore
from store.faults import AFTER_COMMIT_BEFORE_REPLY, crash_point, message_commit
from store.writer import Writer

__all__ = ["Pipeline", "needs_scan"]

log = structlog.get_logger("gateway.intake.pipeline")
_INLINE_PARSE_BYTES = 256 * 1024  # without a pool, bigger mail is parsed in a thread
# With a pool, a message this small that is the only one in flight is parsed here: its
# parse (~0.3 ms for figure 1's ~1 KB mail) costs a lone sender less than the worker's
# round trip (~1 ms: pickle, pipe, two wake-ups), and nothing else wants the loop then.
# When its tenants want its language told, once the model is loaded here too: the first
# such message starts that load in a thread and goes to a worker (it never waits on the
# load). Measured (bench/results/notes/lone21.md): a lone sender 1.3x faster, for the
# model's ~100 MiB in the daemon as well; mail that comes only in crowds or big never
# loads it here.
_LONE_PARSE_BYTES = 16 * 1024
# Refusals with an audit event of their own (message.infected).
_AUDITED_ELSEWHERE = {Reason.INFECTED, Reason.TOO_COMPLEX_TO_SCAN}


class Pipeline:
    def __init__(
        self,
        config: GatewayConfig,
        writer: Writer,
        blobs: BlobStore,
        scanner: Scanner | None,
        clock: Clock | None = None,
    ) -> None:
        self.writer = writer
        self.blobs = blobs
        self.scanner = scanner
        self.clock = clock or _store_clock
        self.after_commit: Callable[[], None] | None = None  # wakes the outbox worker
        # Called on the loop once the language model is loaded here (the daemon's gc.freeze).
        self.after_model: Callable[[], None] | None = None
        self._model: asyncio.Future[None] | None = None  # the language model's load
        # The daemon's parse workers ([gateway] parse_workers); None: parse in this process.
        self.parse_pool: ParsePool | None = None
        self.in_flight = 0  # messages in process(): one alone is parsed here if small
        self.big_mail = BigMail()
        self.configure(config)

    def configure(self, config: GatewayConfig) -> None:
        """Swap in a new config; messages already running keep their snapshot."""
        self.config = config
        self.index = AddressIndex(config)
        self.limits = Limits(
            max_header_bytes=config.limits.max_header_bytes,
            max_mime_depth=config.limits.max_mime_depth,
            max_parts=config.limits.max_parts,
        )
        self.templates = Templates.of(config)
        self.auth = Authenticator(config)

    async def process(self, raw: RawMessage, helo: str = "", turn: Turn | None = None) -> Outcome:
        """Never raises: every fault is an Outcome (a timeout is a Defer). ``helo``: the
        client's EHLO name, for SPF's HELO check (SMTP only). ``turn``: the commit is
        queued only after those ahead of it (gateway/intake/in_order.py: a mailbox's
        drain, an import's window), all else runs at once; passed however it ends."""
        started = time.perf_counter()
        now = self.clock()  # the message's one time: rules, rows, audit, mail
        config, limits = self.config, self.limits
        trace = Trace(raw.source, len(raw.data), queued_as=queue_id(), started=started)
        if TIMELINE:
            trace.stages = {}
        named = jobs(self.index, raw.envelope.rcpt_tos)
        trace.tenants = sorted(named)
        outcome: Outcome
        self.in_flight += 1
        try:
            async with asyncio.timeout(config.smtp.pipeline_timeout) as deadline:
                order = (turn, deadline) if turn is not None else None
                outcome = await self._process(raw, config, named, limits, trace, now, helo, order)
        except Exception as exc:  # every fault is an answer, never a traceback
            outcome = outcome_for_exception(exc)
            trace.error = type(exc).__name__
            if isinstance(outcome, Defer):
                log.warning("pipeline_fault", error=type(exc).__name__, detail=str(exc)[:200])
        finally:
            self.in_flight -= 1
            if turn is not None:
                turn.passed()
        if isinstance(outcome, Reject):
            trace.rule = outcome.rule
            if outcome.tenant is not None:
                # A rule's reject is audited on its own tenant's log only: the other
                # recipients' tenants must not learn another tenant's rule names.
                trace.tenants = [outcome.tenant]
            if trace.tenants and outcome.reason not in _AUDITED_ELSEWHERE:
                await self._audit_refusal(outcome, trace.tenants, raw, now)
        _log_outcome(outcome, trace, round((time.perf_counter() - started) * 1000, 2))
        return outcome

    async def _audit_refusal(
        self, outcome: Reject, tenants: list[str], raw: RawMessage, now: datetime
    ) -> None:
        """Every refusal of mail meant for a tenant is on its audit log (too big, loop,
        unreadable, a rule's reject), like an infected one (which has its own event);
        nothing of it is stored."""
        detail = {
            "rule": outcome.rule,
            "reply": f"{outcome.code} {outcome.enhanced} {outcome.text}",
            "sha256": hashlib.sha256(raw.data).hexdigest(),
            "size": len(raw.data),
            "source": raw.source,
        }
        sender = raw.envelope.mail_from.lower() or "<>"

        def work(conn: Connection) -> None:
            for slug in tenants:
                repos.add_audit(
                    conn, slug, "message.rejected", actor=sender, detail=detail, now=now
                )

        try:
            await self.writer.submit(work)
        except Exception as exc:  # the refusal stands; it must not wait on the store
            log.error("audit.write_failed", action="message.rejected", error=type(exc).__name__)

    async def _process(
        self,
        raw: RawMessage,
        config: GatewayConfig,
        named: dict[str, Job],
        limits: Limits,
        trace: Trace,
        now: datetime,
        helo: str = "",
        order: tuple[Turn, asyncio.Timeout] | None = None,
    ) -> Outcome:
        templates, auth = self.templates, self.auth
        if not named:
            return reject(Reason.NO_SUCH_RECIPIENT)
        if len(raw.data) > config.smtp.max_message_size:
            return reject(Reason.TOO_BIG)

        # From the parse to the commit a big message holds its decoded parts too:
        # big ones take turns (gateway/intake/big_mail.py).
        async with self.big_mail.turn(len(raw.data)):
            tenants = [j.recipient.tenant for j in named.values()]
            parsed = await self._parse(raw.data, limits, language.wanted(tenants))
            trace.mark("parsed")
            trace.kind = parsed.kind
            trace.attachments = len(parsed.attachments)
            if parsed.received_count > config.smtp.max_received:
                return reject(Reason.LOOP)

            model = self._language_model(parsed, tenants)  # loads while the scan and DNS run
            raw_sha = hashlib.sha256(raw.data).hexdigest()
            if needs_scan(parsed):
                result = await self._scan(raw, parsed)
                trace.scan = type(result).__name__.lower()
                trace.mark("scanned")
                if not isinstance(result, Clean):
                    return await self._refuse(result, named, raw, parsed, raw_sha, trace, now)
            # Off the loop and before the transaction: DNS must never hold the writer.
            trusted = trusted_id(config, raw, tenants)
            verdict = await auth.verdict(raw, parsed.from_addr, trusted, helo)
            trace.auth = verdict.summary
            trace.mark("auth")
            if model is not None:
                with contextlib.suppress(Exception):  # a failed load shows where the model is used
                    await asyncio.shield(model)
                trace.mark("model")
            staged = await self.blobs.stage(
                [raw.data, *(a.data for a in parsed.attachments)],
                [raw_sha, *(a.sha256 for a in parsed.attachments)],  # hashed once, each
            )
            trace.mark("staged")
            queued_as = trace.queued_as or ""
            msg = Arrival(raw, parsed, raw_sha, now, verdict, queued_as)

            def bind(conn: Connection) -> None:
                # Files: fsynced already, checked not collected since (else 451, and the
                # retry writes them again). Database: written here, in this transaction.
                self.blobs.bind(conn, staged)

            batch = [0.0]  # the BEGIN of the writer's batch this ran in

            def work(conn: Connection) -> list[Stored] | Reject:
                batch[0] = self.writer.batch_begun
                trace.mark("work_start")
                try:
                    return commit_message(conn, config, templates, named, msg, bind)
                finally:
                    trace.mark("work_end")

            if order is not None:
                turn, deadline = order
                await turn.reached(deadline)
                trace.mark("turn")
            pending = self.writer.enqueue(message_commit(work))
            if order is not None:
                order[0].passed()
            stored = await pending
            if trace.stages is not None:
                ours = [b for b in self.writer.recent_batches if b[0] == batch[0]]
                for begun, committed in ours:  # none if 32 batches have ended since
                    trace.mark("batch_begin", begun)
                    trace.mark("committed", committed)
                trace.mark("resumed")
            if isinstance(stored, Reject):
                return stored
            if self.after_commit is not None:
                self.after_commit()
            crash_point(AFTER_COMMIT_BEFORE_REPLY)
            if stored and all(s.drop is not None for s in stored):
                return Drop(tuple(stored), queued_as)
            return Accepted(tuple(stored), queued_as)

    def _language_model(
        self, parsed: ParsedMessage, tenants: list[Tenant]
    ) -> asyncio.Future[None] | None:
        """The language model's load, for a message that may need it before it is loaded
        (none when a parse worker told its language): the load ``warm_language`` started,
        else started here, so the writer never loads it inside its transaction."""
        if language.loaded() or not language.may_detect(parsed, tenants):
            return None
        return self.warm_language()

    def warm_language(self) -> asyncio.Future[None]:
        """The language model's load in a thread of this process, started once (at start
        by the daemon without parse workers, else by the first message that needs it
        here: a lone small one, ``_lone``); every message that needs it meanwhile waits
        on this one load."""
        if self._model is None:
            self._model = asyncio.ensure_future(asyncio.to_thread(language.warm))
            self._model.add_done_callback(self._model_loaded)
        return self._model

    async def language_warmed(self, within: float) -> None:
        """Until the language model is loaded where this daemon tells languages (each
        parse worker, else here), at most ``within`` s: the daemon opens its listeners
        after it, so no message waits on the load (it overlaps the rest of start-up)."""
        load = self.parse_pool.warmed() if self.parse_pool is not None else self.warm_language()
        try:
            async with asyncio.timeout(within):
                await asyncio.shield(load)
        except TimeoutError:
            log.warning("language.warm_slow", waited_s=within)  # the lazy path waits on it
        except Exception as exc:  # the first message that needs it tries again
            if self.parse_pool is not None:  # a load here says so itself (_model_loaded)
                log.error("language.warm_failed", error=repr(exc)[:200])

    def _model_loaded(self, load: asyncio.Future[None]) -> None:
        if load.cancelled():
            self._model = None
            return
        if (exc := load.exception()) is not None:
            # Said here, whoever started it: a load that ``_lone`` started has no
            # message waiting on it. The next message that needs the model tries again.
            log.error("language.load_failed", error=repr(exc)[:200])
            self._model = None
            return
        log.info("language.loaded")  # this process has the model now (~100 MiB)
        if self.after_model is not None:
            self.after_model()

    async def _parse(self, data: bytes, limits: Limits, tell: bool) -> ParsedMessage:
        """In a worker process when the daemon has them (off this process's GIL, the
        language told there too when ``tell``), but small mail alone here (see
        _LONE_PARSE_BYTES); else here, big mail in a thread so the loop keeps serving.
        Parsed here, its language is told by the writer (routing/language.py)."""
        if self.parse_pool is not None and not self._lone(data, tell):
            return await self.parse_pool.parse(data, limits, language=tell)
        if len(data) > _INLINE_PARSE_BYTES:
            return await asyncio.to_thread(parse, data, limits=limits)
        return parse(data, limits=limits)

    def _lone(self, data: bytes, tell: bool) -> bool:
        """Whether a daemon with parse workers parses ``data`` here: small and the only
        message in flight, and, when its language is to be told, the model loaded here
        (else its load is started, for the next one)."""
        if self.in_flight > 1 or len(data) > _LONE_PARSE_BYTES:
            return False
        if not tell or language.loaded():
            return True
        self.warm_language()
        return False

    async def _scan(self, raw: RawMessage, parsed: ParsedMessage) -> ScanResult:
        """The raw message (clamd decodes MIME, archives, enclosed mail) and every part as
        we decoded it, so a MIME trick that clamd reads differently from us hides nothing
        we store. One absolute deadline covers all of it."""
        if self.scanner is None:
            return Unavailable("no scanner configured")
        streams: dict[str, bytes] = {"raw": raw.data}
        for a in parsed.attachments:
            streams.setdefault(a.sha256, a.data)  # identical parts are scanned once
        return await self.scanner.scan_many(streams.values())

    async def _refuse(
        self,
        result: ScanResult,
        named: dict[str, Job],
        raw: RawMessage,
        parsed: ParsedMessage,
        raw_sha: str,
        trace: Trace,
        now: datetime,
    ) -> Outcome:
        """Nothing of the message is stored; an infected one leaves an audit event per tenant."""
        if isinstance(result, Infected):
            trace.signature = result.signature
            await self._audit_infected(result, named, raw, parsed, raw_sha, now)
            if result.limits_exceeded:
                return reject(Reason.TOO_COMPLEX_TO_SCAN)
            return reject(Reason.INFECTED, result.signature)
        if isinstance(result, Unscannable):
            trace.scan_detail = result.reason
            return reject(Reason.UNSCANNABLE)
        assert isinstance(result, Unavailable)
        trace.scan_detail = result.reason
        log.warning("scanner.unavailable", reason=result.reason, tenants=sorted(named))
        return defer(Reason.SCANNER_UNAVAILABLE)

    async def _audit_infected(
        self,
        result: Infected,
        named: dict[str, Job],
        raw: RawMessage,
        parsed: ParsedMessage,
        raw_sha: str,
        now: datetime,
    ) -> None:
        sender = parsed.from_addr or raw.envelope.mail_from.lower()
        detail = {
            "signature": result.signature,
            "sha256": raw_sha,
            "size": len(raw.data),
            "envelope_from": raw.envelope.mail_from.lower(),
            "message_id": parsed.message_id,
            "attachments": [
                {"filename": a.filename, "sha256": a.sha256, "size": a.size}
                for a in parsed.attachments
            ],
            "source": raw.source,
        }

        def work(conn: Connection) -> None:
            for slug in named:
                repos.add_audit(
                    conn, slug, "message.infected", actor=sender, detail=detail, now=now
                )

        try:
            await self.writer.submit(work)
        except Exception as exc:  # the 554 stands; the refusal must not wait on the store
            log.error("audit.write_failed", action="message.infected", error=type(exc).__name__)


def _store_clock() -> datetime:
    """The store's clock, looked up at each call (a test may replace ``repos.now``)."""
    return repos.now()


def needs_scan(parsed: ParsedMessage) -> bool:
    """Any attachment (inline included) or enclosed message means clamd must see it first.
    So does a winmail.dat, read or not, a multipart whose parts were not found, read
    as text (parsers/body.py), and text after a multipart's closing line, which no part
    holds: a reader that splits them another way (clamd does, a mail client may) could
    find a file in them."""
    return (
        bool(parsed.attachments)
        or any(t.startswith("message/") and t not in _REPORT_TYPES for t in parsed.content_types)
        or "application/ms-tnef" in parsed.content_types  # read as its files, whole or not
        or "multipart-read-as-text" in parsed.defects
        or "multipart-epilogue" in parsed.defects
    )


_REPORT_TYPES = {
    "message/delivery-status",
    "message/global-delivery-status",
    "message/disposition-notification",
    "message/feedback-report",
    "message/global-headers",
}


def _log_outcome(outcome: Outcome, trace: Trace, ms: float) -> None:
    source = trace.source
    if trace.scan is not None:
        metrics.child(metrics.SCAN_VERDICTS, trace.scan).inc()
    line = trace.fields()
    line["ms"] = ms
    if isinstance(outcome, Accepted):
        metrics.child(metrics.MESSAGES, source, "accepted", "250").inc()
        for s in outcome.stored:
            if s.thread_by == "new":
                metrics.child(metrics.TICKETS_OPENED, s.tenant).inc()
        line["result"] = "accepted"
        line["tickets"] = [s.ticket_ref for s in outcome.stored]
        line["by"] = [s.thread_by for s in outcome.stored]
        line["duplicate"] = [s.duplicate for s in outcome.stored]
    elif isinstance(outcome, Reject | Defer):
        result = "rejected" if isinstance(outcome, Reject) else "deferred"
        metrics.child(metrics.MESSAGES, source, result, str(outcome.code)).inc()
        line.update(result=result, code=f"{outcome.code} {outcome.enhanced}")
    log.info("message", **line)
