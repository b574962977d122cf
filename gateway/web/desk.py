"""The agents' desk at ``/a/<tenant>/``: their lists and any ticket of their tenant, read only.

Agents act by mail, as always: the ticket page's "Reply" is a ``mailto:`` to the
ticket's reply address minted for this agent, and the commands are shown as
lines to copy into that mail. Nothing here changes a ticket.

Signing in is the clients' machinery (gateway/web/signin.py) with three
differences: a link goes only to an address configured as one of the tenant's
agents or their aliases (anyone else gets the same page and no link), the
session is the agent's (an alias signs in as its agent), and the cookies and
token hashes are the desk's own (``/a/`` path, ``gw_agent``, realm ``agent|``),
so a client's session never opens a desk page, nor the other way round. Every
request checks the session's address against the configuration again: an
agent removed from gateway.toml loses the desk at the next reload.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

from aiohttp import web
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.web.client import fold_quotes
from gateway.web.desk_view import (
    LISTS,
    PAGE_SIZE,
    ListQuery,
    due_text,
    local_time,
    page_of,
    sla_of,
)
from gateway.web.i18n import translator
from gateway.web.pages import SiteParts
from gateway.web.signin import SignIn
from outbound.sla_watch import clock_states
from routing.commands import PRIORITIES
from routing.config import Agent, GatewayConfig, Tenant
from routing.tokens import make_token
from store import desk, repos
from store.clocks import watched
from store.search import search_tickets

__all__ = ["SEARCH_LIMIT", "DeskSite"]

T = TypeVar("T")
SEARCH_LIMIT = 50  # search hits shown, best first: one page, no paging through the rest


class DeskSite(SignIn):
    PREFIX = "a"
    SESSION_COOKIE = "gw_agent"
    REALM = "agent|"
    HOME = "t/"
    MAIL_TEMPLATES = ("desk_signin_subject.txt.j2", "desk_signin.txt.j2")
    FORM_TEMPLATE = "desk_form.html"
    SENT_TEMPLATE = "desk_sent.html"

    def __init__(self, parts: SiteParts, engine: AsyncEngine) -> None:
        super().__init__(parts)
        self.engine = engine  # the search box reads here (store/search.py is async)

    def routes(self, app: web.Application) -> None:
        super().routes(app)
        app.router.add_get("/a/{slug}/t/", self.tickets)
        app.router.add_get("/a/{slug}/t/{ref}", self.ticket)
        app.router.add_get("/a/{slug}/t/{ref}/files/{sha}", self.download)

    # --- who may ------------------------------------------------------------------------

    def _may_sign_in(self, conn: Connection, tenant: Tenant, address: str) -> bool:
        return _agent_of(tenant, address) is not None

    def _account(self, tenant: Tenant, address: str) -> str | None:
        agent = _agent_of(tenant, address)
        return agent.address if agent is not None else None

    async def _agent(self, request: web.Request, tenant: Tenant) -> Agent:
        """The signed-in agent of this tenant, or a redirect to the desk's sign-in form."""
        address = await self._session(request, tenant)
        agent = tenant.agent(address) if address is not None else None
        if agent is None:
            raise web.HTTPSeeOther(f"{self._base(tenant)}/")
        return agent

    # --- pages --------------------------------------------------------------------------

    async def tickets(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        agent = await self._agent(request, tenant)
        q = ListQuery.parse(request.query, tenant)
        now = self.clock()
        where = q.store_filter(agent.address)
        if q.search:
            rows = [r for r in await self._search(tenant, q.search) if q.keeps(r)]
            for r in rows:
                r["sla"] = sla_of(tenant, r, now)
            total = len(rows)
        elif q.view == "closed":
            page = ((q.page - 1) * PAGE_SIZE, PAGE_SIZE)
            rows, total = await self._read(
                lambda conn: desk.desk_tickets(conn, tenant.slug, where, page)
            )
            for r in rows:
                r["sla"] = sla_of(tenant, r, now)
        else:
            found, _ = await self._read(lambda conn: desk.desk_tickets(conn, tenant.slug, where))
            # The SLA arithmetic of every open ticket: off the event loop, which serves mail.
            rows, total = await asyncio.to_thread(page_of, found, q, tenant, now)
        t = translator(self._lang(request))
        base = self._base(tenant)
        shown = [_list_row(r, tenant, t, now, base) for r in rows]
        pages = max(1, -(-total // PAGE_SIZE))
        return self._render(
            request,
            tenant,
            "desk_list.html",
            agent=agent.name or agent.address,
            lists=[{"key": v, "url": q.url(base, view=v, page=1), "current": v == q.view}
                   for v in LISTS],
            query=q,
            queues=[x.name for x in tenant.queues] or [tenant.default_queue],
            priorities=PRIORITIES,
            rows=shown,
            total=total,
            page=q.page,
            pages=pages,
            prev_url=q.url(base, page=q.page - 1) if q.page > 1 else "",
            next_url=q.url(base, page=q.page + 1) if q.page < pages else "",
        )  # fmt: skip

    async def _read(self, work: Callable[[Connection], T]) -> T:
        """A read of the lists on a reader connection: a long list never holds up the
        single writer, which commits the mail."""
        return await self.reader.read(work)

    async def _search(self, tenant: Tenant, text: str) -> list[dict[str, Any]]:
        """The search box: store/search.py's hits (best first, at most SEARCH_LIMIT) as
        list rows, on a reader connection so a search never queues in the writer."""
        async with self.engine.connect() as conn:
            hits = await search_tickets(conn, tenant.slug, text, limit=SEARCH_LIMIT)
            ids = [h.ticket_id for h in hits]
            return await conn.run_sync(lambda c: desk.desk_rows(c, tenant.slug, ids))

    async def ticket(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        agent = await self._agent(request, tenant)
        ref = request.match_info["ref"]
        found = await self._read(lambda conn: desk.desk_ticket(conn, tenant.slug, ref))
        if found is None:
            return self._error(request, tenant, "error.notfound", 404)
        await self.views.add(
            tenant.slug,
            "desk.ticket_viewed",
            actor=agent.address,
            ticket_id=found["ticket"]["id"],
            detail={"source": self._source(request)},
        )
        t = translator(self._lang(request))
        now = self.clock()
        ticket = found["ticket"]
        base = f"{self._base(tenant)}/t/{quote(ticket['ref'])}"
        messages = [
            fold_quotes(m)
            | {
                "author": m["from_name"] or m["from_addr"],
                "address": m["from_addr"],
                "role": m["sender_role"],
                "kind": m["kind"],
                "marks": [f for f in ("internal", "unverified", "outsider") if f in m["flags"]],
                "date": str(m["date"] or m["created_at"])[:16].replace("T", " "),
                "attachments": [
                    {"name": a["filename"], "size": a["size"],
                     "url": f"{base}/files/{a['sha256']}"}
                    for a in m["attachments"]
                ],
            }
            for m in found["messages"]
        ]  # fmt: skip
        clocks = []
        if tenant.sla is not None and watched(ticket):
            policy = tenant.sla.policy_for(ticket["queue"], ticket["priority"])
            for s in clock_states(policy, ticket, now):
                clocks.append(
                    {
                        "clock": s.clock,
                        "state": s.state,
                        "due": due_text(t, (s.due_at - now).total_seconds()) if s.due_at else "",
                        "due_at": local_time(tenant, s.due_at),
                        "over": due_text(t, s.target - s.elapsed) if s.late else "",
                    }
                )
        reply_to = _reply_address(self.config, tenant, int(ticket["number"]), agent)
        subject = quote(f"Re: [{ticket['ref']}] {ticket['subject']}")
        return self._render(
            request,
            tenant,
            "desk_ticket.html",
            ticket=_ticket_view(ticket, tenant),
            messages=messages,
            participants=found["participants"],
            audit=[
                {"action": a["action"], "actor": a["actor"],
                 "at": local_time(tenant, a["created_at"])}
                for a in found["audit"]
            ],
            clocks=clocks,
            agent=agent.name or agent.address,
            reply_href=f"mailto:{reply_to}?subject={subject}",
            reply_address=reply_to,
            commands=_commands(agent),
        )  # fmt: skip

    async def download(self, request: web.Request) -> web.StreamResponse:
        tenant = self._tenant(request)
        agent = await self._agent(request, tenant)
        ref, sha = request.match_info["ref"], request.match_info["sha"]
        source = self._source(request)

        def work(conn: Connection) -> dict[str, Any] | None:
            att = desk.desk_attachment(conn, tenant.slug, ref, sha)
            if att is not None:
                repos.add_audit(
                    conn,
                    tenant.slug,
                    "desk.attachment_downloaded",
                    actor=agent.address,
                    ticket_id=repos.ticket_by_ref(conn, tenant.slug, ref),
                    detail={"sha256": sha, "filename": att["filename"], "source": source},
                )
            return att

        att = await self.writer.submit(work)
        if att is None:
            return self._error(request, tenant, "error.notfound", 404)
        return await self._send_file(request, tenant, sha, str(att["filename"]))


def _agent_of(tenant: Tenant, address: str) -> Agent | None:
    """The agent an address belongs to: their own or one of their aliases."""
    for a in tenant.agents:
        if a.answers_from(address):
            return a
    return None


def _reply_address(config: GatewayConfig, tenant: Tenant, number: int, agent: Agent) -> str:
    """The address this agent's reply goes to: the token names the ticket and the agent,
    as in the notices they get by mail (outbound/reactions.py)."""
    token = make_token(config.secret, tenant.slug, number, agent.address)
    local, _, domain = tenant.addresses[0].partition("@")
    return f"{local}+{token}@{domain}"


def _commands(agent: Agent) -> list[str]:
    """The command lines an agent may put at the top of a reply (routing/commands.py)."""
    return [
        "#note",
        "#close",
        "#open",
        f"#assign {agent.address}",
        "#priority high",
        "#cc add someone@example.com",
        "#cc remove someone@example.com",
    ]


def _ticket_view(ticket: dict[str, Any], tenant: Tenant) -> dict[str, Any]:
    assignee = tenant.agent(ticket["assignee"] or "")
    return ticket | {
        "assignee_name": (assignee.name or assignee.address) if assignee else ticket["assignee"],
        "created": local_time(tenant, ticket["created_at"]),
        "updated": local_time(tenant, ticket["updated_at"]),
    }


def _list_row(r: dict[str, Any], tenant: Tenant, t: Any, now: Any, base: str) -> dict[str, Any]:
    s = r["sla"]
    if s["state"] == "breached":
        due, at = due_text(t, -s["over"]), ""
    elif s["due_at"] is not None:
        due, at = due_text(t, (s["due_at"] - now).total_seconds()), local_time(tenant, s["due_at"])
    else:
        due, at = (t("desk.sla.paused") if s["state"] == "paused" else ""), ""
    view = _ticket_view(r, tenant)
    return view | {
        "url": f"{base}/t/{quote(r['ref'])}",
        "sla_state": s["state"],
        "due": due,
        "due_at": at,
    }
