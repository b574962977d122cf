"""The language of every mail to a client: the client's, remembered on the ticket.

A client's mail shows its language (routing/language.py: ``Content-Language`` or the
text itself); it is kept on the ticket when it is one the tenant offers, so mail that a
client's message did not cause (an agent's relayed reply, an auto-close) speaks it too.
Where nothing was ever shown, the tenant's first language (``[[tenants]] languages``),
which is also what the client's web pages fall back to.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection

from parsers.types import ParsedMessage
from routing.config import Tenant
from routing.language import detect
from store.languages import set_ticket_language, ticket_language

__all__ = ["client_language", "remember_language"]


def remember_language(
    conn: Connection, tenant: Tenant, ticket_id: int, parsed: ParsedMessage, *, created: bool
) -> str:
    """The language to answer this client's message in, stored on the ticket when it
    says more than the default does. A follow-up whose language cannot be told (too
    short) or is not offered leaves the ticket's as it was."""
    lang = detect(parsed)
    if lang in tenant.languages:
        if not (created and lang == tenant.languages[0]):  # null already means the first
            set_ticket_language(conn, tenant.slug, ticket_id, lang)
        return lang
    return tenant.languages[0] if created else client_language(conn, tenant, ticket_id)


def client_language(conn: Connection, tenant: Tenant, ticket_id: int) -> str:
    """The ticket's client language, if still offered by the tenant; else its first."""
    lang = ticket_language(conn, tenant.slug, ticket_id)
    return lang if lang in tenant.languages else tenant.languages[0]
