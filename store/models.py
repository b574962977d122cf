"""The schema, as SQLAlchemy Core tables.

Core rather than the ORM: measured, the ORM took ~1.2 ms per transaction
against ~0.9 ms for Core, and the ingest path is one core's worth of Python.
Every table carries ``tenant`` so that every query can be, and is, scoped by it.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

__all__ = [
    "attachments",
    "audit_events",
    "audit_unlock",
    "auth_events",
    "blobs",
    "bouncing",
    "imap_state",
    "leases",
    "link_tokens",
    "message_ids",
    "messages",
    "metadata",
    "outbox",
    "participants",
    "reports",
    "sla_tenant_state",
    "ticket_counters",
    "tickets",
    "web_sessions",
]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ticket_counters = Table(
    "ticket_counters",
    metadata,
    Column("tenant", String(40), primary_key=True),
    Column("last_number", Integer, nullable=False),
)

tickets = Table(
    "tickets",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant", String(40), nullable=False),
    Column("number", Integer, nullable=False),
    Column("ref", String(64), nullable=False),
    Column("subject", Text, nullable=False),
    Column("status", String(16), nullable=False, default="open"),
    Column("queue", String(64), nullable=False, default="default"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("priority", String(16), nullable=False, server_default="normal"),
    Column("assignee", String(320), nullable=True),
    Column("category", String(64), nullable=True),
    Column("tags", JSON, nullable=False, server_default="[]"),
    # SLA clocks (store/clocks.py): the first agent reply the client received, the
    # moment it was closed, the periods spent waiting on the client, and which
    # warnings/breaches the agents were already told about.
    Column("first_response_at", DateTime(timezone=True), nullable=True),
    Column("first_response_by", String(320), nullable=True),
    Column("resolved_at", DateTime(timezone=True), nullable=True),
    Column("sla_pauses", JSON, nullable=False, server_default="[]"),
    Column("sla_notified", JSON, nullable=False, server_default="[]"),
    # The language the client writes in (routing/language.py), one of the tenant's:
    # every mail to the client on this ticket is written in it. Null: the tenant's first.
    Column("client_language", String(8), nullable=True),
    UniqueConstraint("tenant", "number"),
    UniqueConstraint("tenant", "ref"),
    # Retention's closed tickets past their days (store/retention.py): without it the
    # daily purge read every ticket of the tenant under the write lock.
    Index(None, "tenant", "status", "updated_at"),
)

participants = Table(
    "participants",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant", String(40), nullable=False),
    Column("ticket_id", ForeignKey("tickets.id"), nullable=False),
    Column("address", String(320), nullable=False),
    Column("name", Text, nullable=False, default=""),
    Column("role", String(16), nullable=False),  # client | cc | agent
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("ticket_id", "address"),
    Index(None, "tenant", "address"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant", String(40), nullable=False),
    Column("ticket_id", ForeignKey("tickets.id"), nullable=True),
    # The dedupe key: Message-ID, "<id>#<sha256>" for a reused id with other
    # bytes, or "sha256:<hex>" when there is no Message-ID.
    Column("message_key", String(1024), nullable=False),
    Column("message_id", String(998), nullable=True),
    Column("direction", String(4), nullable=False),  # in | out
    Column("kind", String(16), nullable=False),  # normal | auto_reply | bounce | list
    Column("sender_role", String(16), nullable=False),  # client | agent | machine
    Column("from_addr", String(320), nullable=False),
    Column("from_name", Text, nullable=False),
    Column("to_addrs", JSON, nullable=False),
    Column("cc_addrs", JSON, nullable=False),
    Column("subject", Text, nullable=False),
    Column("date", String(40), nullable=True),
    Column("text", Text, nullable=False),
    Column("reply_text", Text, nullable=False),
    Column("html", Text, nullable=True),
    Column("raw_sha256", String(64), nullable=False),
    Column("raw_size", Integer, nullable=False),
    Column("defects", JSON, nullable=False),
    Column("flags", JSON, nullable=False),  # e.g. ["message-id-reused"]
    Column("rules", JSON, nullable=False, server_default="[]"),  # names of the rules that matched
    Column("thread_by", String(16), nullable=False),  # token|references|tag|new|none
    Column("envelope_from", String(320), nullable=False),
    Column("source", String(8), nullable=False),
    # Sender authentication (gateway/intake/auth.py): pass | fail | temperror | none,
    # and the RFC 8601 Authentication-Results text it was read from (None: no check).
    Column("auth", String(16), nullable=False, server_default="none"),
    Column("auth_results", Text, nullable=True),
    # The opaque id the 250 named ("OK queued as ..."), random per arrival: what a
    # sender can quote to find their mail; never the ticket ref. None before 0012.
    Column("queued_as", String(32), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Set when retention or an erasure deleted the raw blob; raw_sha256 stays
    # as the dedupe fingerprint, but it no longer keeps the blob alive.
    Column("raw_purged_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("tenant", "message_key"),
    Index(None, "ticket_id"),
    Index(None, "queued_as"),
    # Only the messages whose raw mail is still kept, so retention's daily look for the
    # old ones and the blob collector's "does a row still name this blob" are index
    # probes, not reads of the whole table under the write lock (issue 21, figure 5:
    # 5.6 s of the writer at 1,000,000 messages). Partial: a purged row leaves both.
    Index(
        "ix_messages_raw_kept",
        "tenant",
        "created_at",
        sqlite_where=text("raw_purged_at IS NULL"),
        postgresql_where=text("raw_purged_at IS NULL"),
    ),
    Index(
        "ix_messages_raw_sha256_kept",
        "raw_sha256",
        sqlite_where=text("raw_purged_at IS NULL"),
        postgresql_where=text("raw_purged_at IS NULL"),
    ),
)

attachments = Table(
    "attachments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant", String(40), nullable=False),
    Column("message_id", ForeignKey("messages.id"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("filename", Text, nullable=False),
    Column("content_type", String(255), nullable=False),
    Column("size", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("inline", Boolean, nullable=False),
    Column("content_id", String(998), nullable=True),
    Index(None, "message_id"),
    Index(None, "sha256"),
)

# Every Message-ID we stored or sent for a tenant, pointing at its ticket:
# the In-Reply-To/References lookup reads only this table.
message_ids = Table(
    "message_ids",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant", String(40), nullable=False),
    Column("message_id", String(998), nullable=False),
    Column("ticket_id", ForeignKey("tickets.id"), nullable=False),
    Column("origin", String(8), nullable=False),  # in | out
    UniqueConstraint("tenant", "message_id"),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant", String(40), nullable=False),
    Column("ticket_id", Integer, nullable=True),
    Column("actor", String(320), nullable=False),
    Column("action", String(64), nullable=False),
    Column("detail", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index(None, "tenant", "created_at"),
)

# The audit log is append-only: on SQLite a trigger (migration 0006) refuses
# UPDATE and DELETE on audit_events unless this table has a row. Only an
# erasure or a retention purge inserts one, inside its own transaction, and
# deletes it before committing, so no other transaction ever sees it.
audit_unlock = Table(
    "audit_unlock",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("reason", String(64), nullable=False),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant", String(40), nullable=False),
    Column("ticket_id", ForeignKey("tickets.id"), nullable=True),
    Column("kind", String(16), nullable=False),  # ack | notice | relay | link
    Column("message_id", String(998), nullable=False),
    Column("mail_from", String(320), nullable=False),
    Column("rcpt_tos", JSON, nullable=False),
    Column("body", LargeBinary, nullable=False),  # the whole RFC 5322 message
    Column("status", String(16), nullable=False),  # pending | sending | sent | failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("last_error", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("to_addr", String(320), nullable=False, server_default=""),
    Column("sent_at", DateTime(timezone=True), nullable=True),
    # Which gateway instance is sending the row, and until when: another
    # instance takes a ``sending`` row over only after the lease has run out.
    Column("claimed_by", String(128), nullable=True),
    Column("claimed_until", DateTime(timezone=True), nullable=True),
    UniqueConstraint("message_id"),
    Index(None, "status", "next_attempt_at"),
    # text_pattern_ops: the acknowledgement limit's LIKE uses it on PostgreSQL (0015)
    Index(
        None,
        "tenant",
        "kind",
        "to_addr",
        "created_at",
        postgresql_ops={"to_addr": "text_pattern_ops"},
    ),
)

# Where each IMAP mailbox stands: a changed UIDVALIDITY means a full resync,
# which the dedupe keys make harmless.
imap_state = Table(
    "imap_state",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant", String(40), nullable=False),
    Column("mailbox", String(512), nullable=False),
    Column("uidvalidity", Integer, nullable=False),
    Column("last_uid", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("tenant", "mailbox"),
)

# Leases between gateway instances on one database: an IMAP mailbox is polled,
# and the periodic jobs are run, only by the instance holding its row; a holder
# renews it well before ``expires_at``, and a dead holder's row is taken over
# once that moment has passed. Not tenant data: the names are config keys.
leases = Table(
    "leases",
    metadata,
    Column("name", String(600), primary_key=True),
    Column("holder", String(128), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("acquired_at", DateTime(timezone=True), nullable=False),
)

# Magic links: the selector finds the row, only the SHA-256 of the verifier
# is stored, and a single UPDATE ... WHERE used_at IS NULL spends it.
link_tokens = Table(
    "link_tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant", String(40), nullable=False),
    Column("address", String(320), nullable=False),
    Column("selector", String(32), nullable=False),
    Column("verifier_hash", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("selector"),
)

web_sessions = Table(
    "web_sessions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant", String(40), nullable=False),
    Column("address", String(320), nullable=False),
    Column("token_hash", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("token_hash"),
)

# Failed sign-ins and link requests, counted on the server (lockout, rate limits).
auth_events = Table(
    "auth_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant", String(40), nullable=False),
    Column("address", String(320), nullable=False),
    Column("source", String(64), nullable=False),
    Column("kind", String(16), nullable=False),  # failure | request | link (one sent)
    Column("at", DateTime(timezone=True), nullable=False),
    Index(None, "tenant", "kind", "address", "at"),
    Index(None, "tenant", "kind", "source", "at"),
)

# Addresses whose mail from us bounced permanently (5.x.x): not mailed again
# until they write to us themselves.
bouncing = Table(
    "bouncing",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant", String(40), nullable=False),
    Column("address", String(320), nullable=False),
    Column("status", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("since", DateTime(timezone=True), nullable=False),
    UniqueConstraint("tenant", "address"),
)

# Monthly report files: one per tenant and month, deleted (file and path) a
# fixed time after they were made, as the privacy policy promises.
reports = Table(
    "reports",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant", String(40), nullable=False),
    Column("month", String(7), nullable=False),  # YYYY-MM
    Column("path", Text, nullable=False),
    Column("size", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("deleted_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("tenant", "month"),
)

# Raw mail and attachments when ``[gateway] blobs = "database"`` (store/blobs_db.py):
# content-addressed like the files, so one row serves every tenant and message
# that names the hash. Not tenant data by itself: a blob is read only through a
# row of the tenant that names it (attachments, messages).
blobs = Table(
    "blobs",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Per tenant with ``[tenants.sla]``: when the gateway first saw SLA configured for it
# (clocks run only for tickets opened since: turning SLA on never makes the open
# backlog breach at once), and when the last digest of SLA alerts went out.
sla_tenant_state = Table(
    "sla_tenant_state",
    metadata,
    Column("tenant", String(40), primary_key=True),
    Column("since", DateTime(timezone=True), nullable=False),
    Column("last_digest_at", DateTime(timezone=True), nullable=True),
)
