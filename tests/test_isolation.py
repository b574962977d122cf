"""Tenant isolation, proven on the store itself (issue 8).

Hypothesis writes random multi-tenant mail through the real pipeline into a
real SQLite store: clients and one agent who exist in both tenants, and
threading hints aimed at the other tenant (valid reply tokens of its
tickets, plus addresses, its Message-IDs in In-Reply-To and as our own
Message-ID, its subject tags), mixed with honest replies. After each run:

- no row of one tenant points at a ticket of the other, and no mail was
  queued to a person because of the other tenant's ticket;
- every read a web page, the CLI or the GDPR export makes, asked with one
  tenant and the other tenant's ids, refs, Message-IDs or files, finds nothing;
- every SQL statement those paths ran filtered each tenant table it read or
  changed by ``tenant``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event

import store.access
import store.bouncing
import store.desk
import store.imap_state
import store.ingest
import store.privacy
import store.queries
import store.repos
import store.retention
from gateway.services import Services, open_services
from parsers.types import Envelope, RawMessage
from routing.config import load_config
from routing.tokens import make_token
from routing.verdicts import Accepted
from store import access, desk, privacy, repos
from store import participants as people
from tests.mail import make_mail
from tests.pg_harness import pg_reader, session_cluster, use_postgresql

TENANTS = {"acme": ("support@acme.test", "ACME"), "globex": ("help@globex.test", "GLOBEX")}
AGENT = "alice@agents.test"  # an agent of both vendors
CLIENTS = ["carol@client.test", "dave@client.test", "erin@client.test"]  # clients of both
TENANT_TABLES = {
    "tickets", "participants", "messages", "attachments", "message_ids", "audit_events",
    "outbox", "link_tokens", "web_sessions", "auth_events", "bouncing", "ticket_counters",
}  # fmt: skip

CONFIG = f"""
[gateway]
hostname = "gw.test"
data_dir = "var"
dns_resolver = "none"  # made-up senders: no sender checks against real DNS
[scanner]
address = "127.0.0.1:9"
[[tenants]]
slug = "acme"
addresses = ["{TENANTS["acme"][0]}"]
tag_prefix = "ACME"
[[tenants.agents]]
address = "{AGENT}"
[[tenants]]
slug = "globex"
addresses = ["{TENANTS["globex"][0]}"]
tag_prefix = "GLOBEX"
[[tenants.agents]]
address = "{AGENT}"
"""

# Functions that take no tenant, each for a reason that keeps isolation.
NO_TENANT = {
    "store.repos.now": "no rows",
    "store.repos.ids_asked": "no rows: the values of Message-IDs a statement asks",
    "store.repos.among_ids": "no rows: a condition of statements that filter on the tenant",
    "store.repos.insert_drawn": "no rows: a statement, the tenant one of its parameters",
    "store.repos.ticket_values": "no rows: a new ticket's parameters, the tenant among them",
    "store.queries.tenants_in_store": "admin scope: which tenants exist",
    "store.queries.store_status": "admin scope: counts for /status",
    "store.queries.outbox_status": "admin scope: the outbox's depth for /metrics",
    "store.retention.collect_blobs": "blobs are shared by content; it returns no rows",
    "store.retention.find_orphans": "blobs are shared by content; it returns no rows",
    "store.privacy.unlocked_audit": "no rows",
}


def test_every_store_function_takes_the_tenant_first() -> None:
    for module in (
        store.repos,
        store.bouncing,
        store.ingest,
        store.imap_state,
        store.access,
        store.desk,
        store.queries,
        store.privacy,
        store.retention,
    ):
        for name in module.__all__:
            fn = getattr(module, name)
            if not inspect.isfunction(fn) or f"{module.__name__}.{name}" in NO_TENANT:
                continue
            params = list(inspect.signature(fn).parameters)
            assert params[:2] == ["conn", "tenant"], f"{module.__name__}.{name}{params}"


class Store:
    """A real pipeline and writer on a real store (a SQLite file, or a database of the
    session's PostgreSQL cluster with GATEWAY_TEST_DB=postgresql), and the SQL they ran."""

    def __init__(self, home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.pg_database = session_cluster().new_database() if use_postgresql() else None
        url = session_cluster().url(self.pg_database) if self.pg_database else None
        line = f'database_url = "{url}"\n' if url else ""
        config = CONFIG.replace("[scanner]", f"{line}[scanner]")
        (home / "gateway.toml").write_text(config, encoding="utf-8")
        self.config = load_config(home / "gateway.toml")
        self.db = home / "var" / "gateway.db"
        self.loop = asyncio.new_event_loop()
        self._cm = open_services(self.config)
        self.services: Services = self.loop.run_until_complete(self._cm.__aenter__())
        self.statements: list[str] = []
        event.listen(self.services.writer.engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cur: Any, statement: str, *_rest: Any) -> None:
        self.statements.append(statement)

    def close(self) -> None:
        self.loop.run_until_complete(self._cm.__aexit__(None, None, None))
        self.loop.close()

    def send(self, sender: str, rcpt: str, data: bytes) -> Accepted:
        raw = RawMessage(Envelope(mail_from=sender, rcpt_tos=(rcpt,)), data, "smtp")
        outcome = self.loop.run_until_complete(self.services.pipeline.process(raw))
        assert isinstance(outcome, Accepted), outcome
        return outcome

    def run(self, fn: Any) -> Any:
        return self.loop.run_until_complete(self.services.writer.submit(fn))

    def rows(self, sql: str, *params: Any) -> list[Any]:
        if self.pg_database is not None:
            with pg_reader(session_cluster(), self.pg_database) as pg:
                return pg.execute(sql.replace("%", "%%").replace("?", "%s"), params).fetchall()
        with sqlite3.connect(self.db) as conn:
            conn.row_factory = sqlite3.Row
            return conn.execute(sql, params).fetchall()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    s = Store(tmp_path_factory.mktemp("iso"))
    yield s
    s.close()


action = st.tuples(
    st.sampled_from(sorted(TENANTS)),  # the tenant the mail is sent to
    st.sampled_from([*CLIENTS, AGENT]),
    st.sampled_from(["new", "token", "agent_token", "token_in_header", "reply", "tag", "same_id"]),
    st.booleans(),  # True: aim at the other tenant (the attack), False: at our own
    st.integers(min_value=0, max_value=1000),  # which ticket / Message-ID
)


def _mail(db: Store, tenant: str, sender: str, kind: str, other: bool, pick: int) -> None:
    """Send one mail to ``tenant`` whose hints aim at the other tenant's data (or its own)."""
    target = next(t for t in TENANTS if t != tenant) if other else tenant
    address, _ = TENANTS[tenant]
    local, _, domain = address.partition("@")
    tickets = db.rows("SELECT number, ref FROM tickets WHERE tenant = ? ORDER BY id", target)
    ids = db.rows("SELECT message_id FROM message_ids WHERE tenant = ? ORDER BY id", target)
    rcpt, to, headers, subject = address, address, {}, "Help"
    message_id: str | None = "auto"
    if kind in ("token", "agent_token", "token_in_header") and tickets:
        number = tickets[pick % len(tickets)]["number"]
        agent = AGENT if kind == "agent_token" else None
        plus = f"{local}+{make_token(db.config.secret, target, number, agent)}@{domain}"
        if kind == "token_in_header":  # only the To: header carries it, not the envelope
            to = plus
        else:
            rcpt = to = plus
    elif kind == "reply" and ids:
        mid = ids[pick % len(ids)]["message_id"]
        headers = {"In-Reply-To": mid, "References": mid}
    elif kind == "tag" and tickets:
        subject = f"Re: [{tickets[pick % len(tickets)]['ref']}] Help"
    elif kind == "same_id" and ids:
        message_id = ids[pick % len(ids)]["message_id"]
    data = make_mail(sender=sender, to=to, subject=subject, message_id=message_id,
                     headers=headers, body=f"From {sender} to {tenant}")  # fmt: skip
    mine = {r[0] for r in db.rows("SELECT message_id FROM messages WHERE tenant = ?", tenant)}
    outcome = db.send(sender, rcpt, data)
    if message_id not in ("auto", None) and message_id not in mine:
        # A Message-ID known only to the other tenant is new here, never "already received".
        assert not any(s.duplicate for s in outcome.stored)


def _check_rows(db: Store) -> None:
    joins = {
        "messages": "ticket_id", "participants": "ticket_id", "message_ids": "ticket_id",
        "outbox": "ticket_id", "audit_events": "ticket_id",
    }  # fmt: skip
    for table, col in joins.items():
        crossed = db.rows(
            f"SELECT x.id FROM {table} x JOIN tickets t ON t.id = x.{col} "
            "WHERE t.tenant != x.tenant"
        )
        assert crossed == [], table
    # Mail goes to the people on that ticket of that tenant (or its agents), no one else.
    for row in db.rows(
        "SELECT tenant, ticket_id, rcpt_tos FROM outbox WHERE ticket_id IS NOT NULL"
    ):
        people = {
            r[0]
            for r in db.rows(
                "SELECT address FROM participants WHERE tenant = ? AND ticket_id = ?",
                row["tenant"], row["ticket_id"],
            )
        } | {AGENT}  # fmt: skip
        assert set(json.loads(row["rcpt_tos"])) <= people, dict(row)


def _check_reads(db: Store) -> None:
    """Every read, asked with one tenant and the other tenant's keys, finds nothing.

    The newest 20 tickets of each tenant are enough: every earlier run checked its own.
    """
    for tenant in TENANTS:
        other = next(t for t in TENANTS if t != tenant)
        theirs = db.rows(
            "SELECT id, ref FROM tickets WHERE tenant = ? ORDER BY id DESC LIMIT 20", other
        )
        own_ids = {
            r[0] for r in db.rows("SELECT message_id FROM message_ids WHERE tenant = ?", tenant)
        }
        # A Message-ID both tenants received (the same mail, or a reused id) is each one's own.
        their_ids = [
            r[0]
            for r in db.rows("SELECT message_id FROM message_ids WHERE tenant = ?", other)
            if r[0] not in own_ids
        ]
        mine = {r[0] for r in db.rows("SELECT ref FROM tickets WHERE tenant = ?", tenant)}
        db.run(
            functools.partial(_reads, tenant=tenant, theirs=theirs, their_ids=their_ids, mine=mine)
        )


def _reads(
    conn: Any, tenant: str, theirs: list[sqlite3.Row], their_ids: list[str], mine: set[str]
) -> None:
    prefix = TENANTS[tenant][1]
    for t in theirs:
        tid, ref = int(t["id"]), str(t["ref"])
        assert repos.ticket_row(conn, tenant, tid) is None
        assert repos.ticket_ref(conn, tenant, tid) is None
        assert not repos.ticket_exists(conn, tenant, tid)
        assert repos.ticket_by_ref(conn, tenant, ref) is None
        assert people.of_ticket(conn, tenant, tid) == []
        assert repos.thread_ids(conn, tenant, tid) == []
        for who in [*CLIENTS, AGENT]:
            assert not people.is_participant(conn, tenant, tid, who)
            assert access.client_ticket(conn, tenant, who, ref) is None
            assert access.client_attachment(conn, tenant, who, ref, "0" * 64) is None
        # The agents' desk (gateway/web/desk.py) sees all of its tenant, none of another.
        assert desk.desk_ticket(conn, tenant, ref) is None
        assert desk.desk_rows(conn, tenant, [tid]) == []
        assert desk.desk_attachment(conn, tenant, ref, "0" * 64) is None
    for closed in (False, True):
        rows, _ = desk.desk_tickets(conn, tenant, desk.DeskFilter(closed=closed))
        assert {str(r["ref"]) for r in rows} <= mine
    assert repos.tickets_for_message_ids(conn, tenant, their_ids) == {}
    assert repos.sent_by_us(conn, tenant, their_ids) == []
    for who in [*CLIENTS, AGENT]:
        seen = {str(r["ref"]) for r in access.client_tickets(conn, tenant, who)}
        assert seen <= mine
        export = privacy.collect_subject(conn, tenant, who)
        refs = {t["ref"] for t in export["tickets"]} | {
            m["ticket"] for m in export["messages"] if m["ticket"]
        }
        assert all(r.startswith(f"{prefix}-") for r in refs), refs


_TABLE_USE = re.compile(r"\b(?:FROM|JOIN|UPDATE|DELETE FROM)\s+(\w+)", re.I)


def _check_statements(db: Store) -> None:
    for sql in db.statements:
        if sql.lstrip().upper().startswith(("INSERT", "PRAGMA", "BEGIN", "COMMIT", "ROLLBACK")):
            continue
        for table in set(_TABLE_USE.findall(sql)) & TENANT_TABLES:
            assert f"{table}.tenant" in sql, f"{table} read without its tenant: {sql}"
    db.statements.clear()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(action, min_size=1, max_size=12))
def test_nothing_crosses_tenants(db: Store, actions: list[tuple[str, str, str, bool, int]]) -> None:
    for tenant, sender, kind, other, pick in actions:
        _mail(db, tenant, sender, kind, other, pick)
    _check_rows(db)
    _check_reads(db)
    _check_statements(db)
