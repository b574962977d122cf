"""The clients' pages: their tickets, one ticket with its messages and files, and
an answer typed in the browser, which enters through the pipeline like mail.

Signing in (magic links, sessions, CSRF, lockouts) is ``gateway/web/signin.py``;
what every page shares is ``gateway/web/pages.py``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy.engine import Connection

from gateway.intake.pipeline import Pipeline
from gateway.web.i18n import translate
from gateway.web.pages import SiteParts
from gateway.web.signin import SignIn
from parsers.types import Envelope, RawMessage
from routing.config import Tenant
from routing.tokens import make_token
from routing.verdicts import Accepted
from store import access, repos

__all__ = ["ClientSite", "fold_quotes"]

# What a message shows on the ticket page (with its files): the render cache's key.
_SHOWN = (
    "id", "from_addr", "from_name", "sender_role", "date", "created_at",
    "subject", "text", "reply_text",
)  # fmt: skip


class ClientSite(SignIn):
    def __init__(self, parts: SiteParts, pipeline: Pipeline) -> None:
        super().__init__(parts)
        self.pipeline = pipeline  # a reply typed on a page enters as mail does

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/static/gateway.css", self.css)
        app.router.add_get("/static/challenge.js", self.script)
        super().routes(app)
        app.router.add_get("/t/{slug}/tickets", self.tickets)
        app.router.add_get("/t/{slug}/tickets/{ref}", self.ticket)
        app.router.add_post("/t/{slug}/tickets/{ref}/reply", self.reply)
        app.router.add_get("/t/{slug}/tickets/{ref}/files/{sha}", self.download)

    async def tickets(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        address = await self._session(request, tenant)
        if address is None:
            raise web.HTTPSeeOther(f"/t/{tenant.slug}/")
        rows = await self.reader.read(
            lambda conn: access.client_tickets(conn, tenant.slug, address)
        )
        return self._render(request, tenant, "tickets.html", tickets=rows)

    async def ticket(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        ref = request.match_info["ref"]
        digest, now = self._session_digest(request), self.clock()
        # The session and the ticket in one read of two statements (the page opened most),
        # on the loop itself where the store allows (store/reader.py).
        signed_in = digest and await self.reader.read(
            lambda conn: access.session_ticket(conn, tenant.slug, digest, ref, now), inline=True
        )
        if not signed_in:
            raise web.HTTPSeeOther(f"/t/{tenant.slug}/")
        address, found = signed_in
        if found is None:
            return self._error(request, tenant, "error.notfound", 404)
        ticket, msgs = found
        await self.views.add(
            tenant.slug,
            "web.ticket_viewed",
            actor=address,
            ticket_id=ticket["id"],
            detail={"source": self._source(request)},
            now=now,
        )
        # The page is the same for every client of the ticket: keyed by what it shows.
        key = (
            tuple(ticket.values()),
            tuple(
                (
                    *(m[k] for k in _SHOWN),
                    *((a["filename"], a["size"], a["sha256"]) for a in m["attachments"]),
                )
                for m in msgs
            ),
        )
        return self._render_cached(
            request,
            tenant,
            "ticket.html",
            key,
            lambda lang: self._ticket_page(tenant, lang, ticket, msgs),
        )

    @staticmethod
    def _ticket_page(
        tenant: Tenant, lang: str, ticket: dict[str, Any], msgs: list[dict[str, Any]]
    ) -> dict[str, Any]:
        shown = [
            fold_quotes(m)
            | {
                "author": (
                    translate(lang, "ticket.support")
                    if m["sender_role"] == "agent"
                    else (m["from_name"] or m["from_addr"])
                ),
                "is_support": m["sender_role"] == "agent",
                "date": str(m["date"] or m["created_at"])[:16].replace("T", " "),
                "attachments": [
                    {
                        "name": a["filename"],
                        "size": a["size"],
                        "url": f"/t/{tenant.slug}/tickets/{ticket['ref']}/files/{a['sha256']}",
                    }
                    for a in m["attachments"]
                ],
            }
            for m in msgs
        ]
        return {"ticket": ticket, "messages": shown}

    async def reply(self, request: web.Request) -> web.Response:
        """The client's answer enters exactly as an email would: through the pipeline."""
        tenant = self._tenant(request)
        address = await self._session(request, tenant)
        if address is None:
            raise web.HTTPSeeOther(f"/t/{tenant.slug}/")
        form = await request.post()
        if not await self._csrf_ok(request, form):
            return self._error(request, tenant, "error.csrf", 403)
        ref = request.match_info["ref"]
        text = str(form.get("text", "")).strip()
        found = await self.reader.read(
            lambda conn: access.client_ticket(conn, tenant.slug, address, ref)
        )
        if found is None:
            return self._error(request, tenant, "error.notfound", 404)
        if text:
            ticket, _ = found
            token = make_token(self.config.secret, tenant.slug, int(ticket["number"]))
            local, _, domain = tenant.addresses[0].partition("@")
            raw = _web_mail(address, f"{local}+{token}@{domain}", ref, ticket["subject"], text)
            envelope = Envelope(mail_from=address, rcpt_tos=(f"{local}+{token}@{domain}",))
            outcome = await self.pipeline.process(RawMessage(envelope, raw, "web"))
            if not isinstance(outcome, Accepted):
                return self._error(request, tenant, "error.link", 503)
        raise web.HTTPSeeOther(f"/t/{tenant.slug}/tickets/{ref}")

    async def download(self, request: web.Request) -> web.StreamResponse:
        tenant = self._tenant(request)
        address = await self._session(request, tenant)
        if address is None:
            raise web.HTTPSeeOther(f"/t/{tenant.slug}/")
        ref, sha = request.match_info["ref"], request.match_info["sha"]

        def work(conn: Connection) -> dict[str, Any] | None:
            att = access.client_attachment(conn, tenant.slug, address, ref, sha)
            if att is not None:
                repos.add_audit(
                    conn,
                    tenant.slug,
                    "web.attachment_downloaded",
                    actor=address,
                    ticket_id=repos.ticket_by_ref(conn, tenant.slug, ref),
                    detail={
                        "sha256": sha,
                        "filename": att["filename"],
                        "source": self._source(request),
                    },
                )
            return att

        att = await self.writer.submit(work)
        if att is None:
            return self._error(request, tenant, "error.notfound", 404)
        # Only now, with a row of this client's tenant naming it, is the blob read.
        return await self._send_file(request, tenant, sha, str(att["filename"]))


def fold_quotes(message: dict[str, Any]) -> dict[str, str]:
    """``text`` to show and ``quoted``, the history folded behind "show quoted text".

    Computed here from the stored full text rather than read from the stored
    reply_text, so mails stored before a better quote parser fold with it too.
    """
    if message["sender_role"] == "agent":
        return {"text": _agent_text(message), "quoted": ""}
    from parsers.quotes import split_reply

    text, quoted = split_reply(message["text"] or "", message.get("subject") or "")
    return {"text": text, "quoted": quoted}


def _agent_text(message: dict[str, Any]) -> str:
    from routing.commands import split_commands

    return split_commands(message["reply_text"] or message["text"])[1]


def _web_mail(sender: str, to: str, ref: str, subject: str, text: str) -> bytes:
    from email.message import EmailMessage
    from email.policy import SMTP
    from email.utils import formatdate, make_msgid

    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = f"Re: [{ref}] {subject}"
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(domain="web.invalid")
    msg.set_content(text)
    return msg.as_bytes(policy=SMTP)
