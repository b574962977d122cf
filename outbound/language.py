"""The language of every mail to a client: the client's, remembered on the ticket.

A client's mail shows its language (routing/language.py: ``Content-Language`` or the
text itself); it is kept on the ticket when it is one the tenant offers, so mail that a
client's message did not cause (an agent's relayed reply, an auto-close) speaks it too.
Where nothing was ever shown, the tenant's first language (``[[tenants]] languages``),
which is also what the client's web pages fall back to. A tenant that offers one
language has nothing to choose: its mail is never classified (the model is never
loaded for it, routing/language.py ``wanted``) and no language is kept.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection

from parsers.types import ParsedMessage
from routing.config import Tenant
from routing.language import detect
from store.languages import set_ticket_language, ticket_language

__all__ = ["client_language", "planned_language", "remember_language"]


def planned_language(
    tenant: Tenant, parsed: ParsedMessage, *, created: bool, stored: str | None
) -> tuple[str | None, str | None]:
    """(the language to answer in, the one a new ticket is opened with), where the plan
    can tell without the store: (None, None) leaves it to ``remember_language``.

    A new ticket's language goes into its INSERT (one statement, not an UPDATE after
    it); a follow-up whose ticket holds one (read with its status before deciding)
    costs no read. Same rules as ``remember_language``.
    """
    if created:
        kept = _kept(tenant, parsed)
        return _offered(tenant, kept), kept
    if stored is not None:
        return _offered(tenant, stored), None
    return None, None


def remember_language(
    conn: Connection, tenant: Tenant, ticket_id: int, parsed: ParsedMessage, *, created: bool
) -> str:
    """The language to answer this client's message in, kept on the ticket.

    Told once: a new ticket's first message sets it; a follow-up is looked at only
    while the ticket has none (its first message was too short to tell, or in a
    language the tenant does not offer), so the common follow-up costs one read and
    no detection. A language the tenant does not offer is never stored.
    """
    if not created:
        stored = ticket_language(conn, tenant.slug, ticket_id)
        if stored is not None:
            return _offered(tenant, stored)
    kept = _kept(tenant, parsed)
    if kept is not None:
        set_ticket_language(conn, tenant.slug, ticket_id, kept)
    return _offered(tenant, kept)


def client_language(conn: Connection, tenant: Tenant, ticket_id: int) -> str:
    """The ticket's client language, if still offered by the tenant; else its first."""
    return _offered(tenant, ticket_language(conn, tenant.slug, ticket_id))


def _kept(tenant: Tenant, parsed: ParsedMessage) -> str | None:
    """The language ``parsed`` shows, to keep on its ticket: only when the tenant has a
    choice to make (``Tenant.chooses_language``, as routing/language.py ``wanted``
    reads it) and offers that language."""
    if not tenant.chooses_language:
        return None
    lang = detect(parsed)
    return lang if lang in tenant.languages else None


def _offered(tenant: Tenant, lang: str | None) -> str:
    """``lang`` while the tenant offers it, else the tenant's first."""
    return lang if lang in tenant.languages else tenant.languages[0]
