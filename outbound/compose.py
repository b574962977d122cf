"""Builds the mails the gateway sends, with their Message-ID fixed at once.

The Message-ID is made here, stored with the outbox row and recorded for
threading in the same transaction, so a reply to anything we sent threads
even if it arrives before our mail is delivered, and a retried delivery is the
same mail, never a second one.

Every mail carries our loop marker (``X-Loop``), a Message-ID in our domain,
``In-Reply-To``/``References`` that keep the client's thread, the subject tag,
and Outlook's ``Thread-Topic``/``Thread-Index``. Machine-made mail says
``Auto-Submitted`` (RFC 3834) so robots do not answer it; an agent's relayed
reply is a person speaking and does not.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.utils import format_datetime, formataddr
from pathlib import Path

import jinja2

from routing.config import Agent, GatewayConfig, Tenant

__all__ = [
    "Composed",
    "Templates",
    "acknowledgement",
    "agent_notice",
    "failure_notice",
    "magic_link_mail",
    "new_message_id",
    "relay",
    "report_mail",
    "sla_notice",
]

_BUILTIN = {
    "ack.txt.j2": """Hello{% if name %} {{ name }}{% endif %},

we have received your message and opened ticket {{ ref }}:

    {{ subject }}

Simply reply to this mail to add to it; please keep [{{ ref }}] in the subject.
{% if portal %}
You can also read and answer your tickets in the browser: {{ portal }}
(you get a sign-in link by mail; no password).
{% endif %}
--
{{ tenant_name }}
""",
    "notice.txt.j2": """{% if event == "new" %}New ticket {{ ref }}{% else %}New message on {{ ref }}{% endif %} from {{ client }}:

{{ text }}

--
Reply to this mail to answer the client; your reply is sent from {{ tenant_address }}.
Commands on the first lines of a reply: #note (internal, nothing is sent), #close, #open,
#assign <agent address>, #priority <low|normal|high|urgent>.
""",  # noqa: E501
    "sla.txt.j2": """{% if state == "breached" %}SLA BREACHED{% else %}SLA warning{% endif %}: ticket {{ ref }}, {{ clock }}.

    {{ subject }}

Target: {{ target }} ({{ calendar }}). Counted so far: {{ elapsed }}.
{% if due %}Due: {{ due }}.
{% endif %}{% if state == "breached" %}The target has been missed; the breach is in the audit log.
{% else %}Answer before it is due to keep within the target.
{% endif %}
Reply to this mail to answer the client, as with any notice.
""",  # noqa: E501
    "failure.txt.j2": """A mail for ticket {{ ref }} could not be delivered to {{ recipients }}.

Reason: {{ reason }}

The gateway has stopped trying. Subject of the undelivered mail: {{ subject }}
""",
}


class Templates:
    """jinja2 templates: the tenant's own folder (``templates`` in its table), then
    ``<folder>/<tenant slug>/<name>``, then ``<folder>/<name>``, then ours.

    Admins override wording per tenant without touching code; a missing
    variable is an error at render time (StrictUndefined), never a blank.
    """

    def __init__(
        self, folder: Path | None = None, tenant_folders: Mapping[str, Path] | None = None
    ) -> None:
        loaders: list[jinja2.BaseLoader] = []
        if tenant_folders:
            loaders.append(
                jinja2.PrefixLoader(
                    {slug: jinja2.FileSystemLoader(str(f)) for slug, f in tenant_folders.items()}
                )
            )
        if folder is not None:
            loaders.append(jinja2.FileSystemLoader(str(folder)))
        loaders.append(jinja2.DictLoader(_BUILTIN))
        self._resolved: dict[tuple[str, str], jinja2.Template] = {}
        self.env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            autoescape=False,
            keep_trailing_newline=True,
            undefined=jinja2.StrictUndefined,
        )

    @classmethod
    def of(cls, config: GatewayConfig) -> Templates:
        return cls(
            config.outbound.templates,
            {t.slug: t.templates for t in config.tenants if t.templates is not None},
        )

    def render(self, tenant: str, template_name: str, **context: object) -> str:
        # Resolved once per (tenant, name): a miss on the tenant's override raised
        # and caught TemplateNotFound for every mail. A reload builds new Templates.
        key = (tenant, template_name)
        template = self._resolved.get(key)
        if template is None:
            template = self.env.select_template([f"{tenant}/{template_name}", template_name])
            self._resolved[key] = template
        return template.render(**context)


_DEFAULT_TEMPLATES = Templates()


@dataclass(frozen=True, slots=True)
class Composed:
    message_id: str
    mail_from: str  # envelope sender; "" for the null sender (RFC 3834 section 3)
    rcpt_tos: tuple[str, ...]
    body: bytes


def new_message_id(kind: str, hostname: str) -> str:
    return f"<{kind}.{secrets.token_hex(10)}@{hostname}>"


def _clean(value: str) -> str:
    """No CR, LF or NUL ever reaches a header we write (header injection)."""
    return " ".join(value.replace("\x00", " ").split())


def thread_index(tenant: str, ref: str) -> str:
    """Outlook's Thread-Index: 22 bytes, the same for every mail of a ticket.

    Outlook groups a conversation by this header and Thread-Topic, not by
    References; a stable value per ticket keeps the whole ticket together.
    """
    return base64.b64encode(hashlib.sha256(f"{tenant}/{ref}".encode()).digest()[:22]).decode()


def _build(
    *,
    tenant: Tenant,
    hostname: str,
    kind: str,
    ref: str,
    subject: str,
    from_name: str,
    to: Sequence[tuple[str, str]],
    text: str,
    reply_to: str,
    in_reply_to: str | None,
    references: Sequence[str],
    auto_submitted: str | None,
    now: datetime,
) -> tuple[str, bytes]:
    # Written out directly: the stdlib generator (even compat32) folded every header
    # through Header objects and cost a fifth of the writer's time per message, and
    # these mails are built inside the writer's transaction. Non-ASCII still goes
    # through email.header (RFC 2047), and the body through binascii's QP encoder.
    mid = new_message_id(kind, hostname)
    topic = _clean(subject)
    refs = [r for r in references if r] or ([in_reply_to] if in_reply_to else [])
    headers: list[tuple[str, str]] = [
        ("Message-ID", mid),
        ("Date", format_datetime(now)),
        ("From", formataddr((_clean(from_name), tenant.from_address), "utf-8")),
        ("To", ", ".join(formataddr((_clean(n), a), "utf-8") for n, a in to)),
        ("Reply-To", reply_to),
        ("Subject", f"[{ref}] {topic}" if f"[{ref}]" not in topic else topic),
    ]
    if in_reply_to:
        headers.append(("In-Reply-To", in_reply_to))
    if refs:
        headers.append(("References", " ".join(dict.fromkeys(refs[-20:]))))
    headers += [("Thread-Topic", topic), ("Thread-Index", thread_index(tenant.slug, ref))]
    if auto_submitted:
        headers += [("Auto-Submitted", auto_submitted), ("X-Auto-Response-Suppress", "All")]
    headers.append(("X-Loop", hostname))
    return mid, _render(headers, text)


def _render(headers: list[tuple[str, str]], text: str) -> bytes:
    """A text/plain UTF-8 mail, CRLF throughout, quoted-printable body."""
    headers = [
        *headers,
        ("MIME-Version", "1.0"),
        ("Content-Type", 'text/plain; charset="utf-8"'),
        ("Content-Transfer-Encoding", "quoted-printable"),
    ]
    head = "".join(_header_line(name, value) for name, value in headers)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    body = binascii.b2a_qp(text.encode("utf-8"), istext=True).replace(b"\n", b"\r\n")
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return head.encode("ascii") + b"\r\n" + body


def _header_line(name: str, value: str) -> str:
    """One header, folded at spaces below 78 columns; non-ASCII as RFC 2047 words."""
    if not value.isascii():
        encoded = Header(value, "utf-8", header_name=name).encode(linesep="\r\n")
        return f"{name}: {encoded}\r\n"
    line = f"{name}: {value}"
    if len(line) <= 78:
        return line + "\r\n"
    out, current = [], f"{name}:"
    for word in value.split(" "):
        if len(current) + 1 + len(word) > 78 and current.strip() != f"{name}:":
            out.append(current)
            current = ""
        current += " " + word
    out.append(current)
    return "\r\n".join(out) + "\r\n"


def acknowledgement(
    *,
    tenant: Tenant,
    hostname: str,
    ref: str,
    subject: str,
    to_addr: str,
    to_name: str,
    reply_address: str,
    in_reply_to: str | None,
    now: datetime,
    templates: Templates = _DEFAULT_TEMPLATES,
    portal: str = "",
) -> Composed:
    """The automatic answer to a client who opened a ticket.

    ``portal`` is the tenant's page where a client asks for a sign-in link;
    the link itself is never put in an acknowledgement, because it would have
    to live longer than 15 minutes to be of use there.

    Marked ``Auto-Submitted: auto-replied`` and sent from the null sender, so
    no well-behaved robot answers it, and it carries our X-Loop.
    """
    text = templates.render(
        tenant.slug,
        "ack.txt.j2",
        name=_clean(to_name),
        ref=ref,
        subject=_clean(subject),
        tenant_name=tenant.name,
        portal=portal,
    )
    mid, body = _build(
        tenant=tenant,
        hostname=hostname,
        kind="ack",
        ref=ref,
        subject=subject,
        from_name=tenant.name,
        to=[(to_name, to_addr)],
        text=text,
        reply_to=reply_address,
        in_reply_to=in_reply_to,
        references=[],
        auto_submitted="auto-replied",
        now=now,
    )
    return Composed(message_id=mid, mail_from="", rcpt_tos=(to_addr,), body=body)


def agent_notice(
    *,
    tenant: Tenant,
    hostname: str,
    agent: Agent,
    event: str,
    ref: str,
    subject: str,
    client: str,
    text: str,
    reply_address: str,
    in_reply_to: str | None,
    references: Sequence[str],
    now: datetime,
    templates: Templates = _DEFAULT_TEMPLATES,
) -> Composed:
    """What an agent gets for a new ticket or a client's follow-up; replying answers the client.

    ``Reply-To`` carries a token bound to this ticket and this agent, so the
    agent's reply is recognised by the token, never by its ``From`` alone.
    """
    body_text = templates.render(
        tenant.slug,
        "notice.txt.j2",
        event=event,
        ref=ref,
        client=client,
        text=text,
        subject=_clean(subject),
        tenant_address=tenant.from_address,
        tenant_name=tenant.name,
    )
    mid, body = _build(
        tenant=tenant,
        hostname=hostname,
        kind="notice",
        ref=ref,
        subject=subject,
        from_name=f"{client} via {tenant.name}",
        to=[(agent.name, agent.address)],
        text=body_text,
        reply_to=reply_address,
        in_reply_to=in_reply_to,
        references=references,
        auto_submitted="auto-generated",
        now=now,
    )
    return Composed(
        message_id=mid, mail_from=tenant.from_address, rcpt_tos=(agent.address,), body=body
    )


def relay(
    *,
    tenant: Tenant,
    hostname: str,
    agent: Agent,
    ref: str,
    subject: str,
    to: Sequence[tuple[str, str]],
    text: str,
    reply_address: str,
    in_reply_to: str | None,
    references: Sequence[str],
    now: datetime,
) -> Composed:
    """An agent's answer, sent to the client from the tenant's address, in the client's thread."""
    name = f"{agent.name} ({tenant.name})" if agent.name else tenant.name
    mid, body = _build(
        tenant=tenant,
        hostname=hostname,
        kind="reply",
        ref=ref,
        subject=subject,
        from_name=name,
        to=to,
        text=text.rstrip() + "\n",
        reply_to=reply_address,
        in_reply_to=in_reply_to,
        references=references,
        auto_submitted=None,
        now=now,
    )
    return Composed(
        message_id=mid,
        mail_from=tenant.from_address,
        rcpt_tos=tuple(a for _, a in to),
        body=body,
    )


def failure_notice(
    *,
    tenant: Tenant,
    hostname: str,
    agents: Sequence[Agent],
    ref: str,
    subject: str,
    recipients: Sequence[str],
    reason: str,
    now: datetime,
    templates: Templates = _DEFAULT_TEMPLATES,
) -> Composed:
    """Tells the agents a mail was given up on; never sent about another failure notice."""
    text = templates.render(
        tenant.slug,
        "failure.txt.j2",
        ref=ref,
        subject=_clean(subject),
        recipients=", ".join(recipients),
        reason=_clean(reason)[:500],
    )
    mid, body = _build(
        tenant=tenant,
        hostname=hostname,
        kind="failure",
        ref=ref,
        subject=f"Undelivered: {subject}",
        from_name=tenant.name,
        to=[(a.name, a.address) for a in agents],
        text=text,
        reply_to=tenant.from_address,
        in_reply_to=None,
        references=[],
        auto_submitted="auto-generated",
        now=now,
    )
    return Composed(
        message_id=mid,
        mail_from="",
        rcpt_tos=tuple(a.address for a in agents),
        body=body,
    )


def magic_link_mail(
    *,
    tenant: Tenant,
    hostname: str,
    to_addr: str,
    subject: str,
    text: str,
    now: datetime,
) -> Composed:
    """The sign-in link a client asked for; automatic, so robots leave it alone."""
    mid = new_message_id("link", hostname)
    body = _render(
        [
            ("Message-ID", mid),
            ("Date", format_datetime(now)),
            ("From", formataddr((_clean(tenant.name), tenant.from_address), "utf-8")),
            ("To", to_addr),
            ("Subject", _clean(subject)),
            ("Auto-Submitted", "auto-generated"),
            ("X-Auto-Response-Suppress", "All"),
            ("X-Loop", hostname),
        ],
        text,
    )
    return Composed(message_id=mid, mail_from="", rcpt_tos=(to_addr,), body=body)


def sla_notice(
    *,
    tenant: Tenant,
    hostname: str,
    agents: Sequence[Agent],
    ref: str,
    subject: str,
    reply_to: Mapping[str, str],
    values: Mapping[str, str],
    now: datetime,
    templates: Templates = _DEFAULT_TEMPLATES,
) -> list[Composed]:
    """A warning before, or the news of, a missed SLA target: one mail per agent, each
    with that agent's reply address so answering it reaches the client."""
    text = templates.render(tenant.slug, "sla.txt.j2", ref=ref, subject=_clean(subject), **values)
    label = "SLA breached" if values.get("state") == "breached" else "SLA warning"
    out: list[Composed] = []
    for agent in agents:
        mid, body = _build(
            tenant=tenant,
            hostname=hostname,
            kind="sla",
            ref=ref,
            subject=f"{label}: {subject}",
            from_name=tenant.name,
            to=[(agent.name, agent.address)],
            text=text,
            reply_to=reply_to.get(agent.address, tenant.from_address),
            in_reply_to=None,
            references=[],
            auto_submitted="auto-generated",
            now=now,
        )
        out.append(Composed(message_id=mid, mail_from="", rcpt_tos=(agent.address,), body=body))
    return out


def report_mail(
    *,
    tenant: Tenant,
    hostname: str,
    to: Sequence[str],
    month: str,
    filename: str,
    pdf: bytes,
    now: datetime,
) -> Composed:
    """The monthly report as a PDF attachment, to the tenant's report recipients.

    Built with the stdlib's EmailMessage: it is made once a month, outside the
    message path, so the generator's cost does not matter here.
    """
    from email.message import EmailMessage
    from email.policy import SMTP

    msg = EmailMessage(policy=SMTP)
    mid = new_message_id("report", hostname)
    msg["Message-ID"] = mid
    msg["Date"] = format_datetime(now)
    msg["From"] = formataddr((_clean(tenant.name), tenant.from_address))
    msg["To"] = ", ".join(to)
    msg["Subject"] = f"{_clean(tenant.name)}: support report for {month}"
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Auto-Response-Suppress"] = "All"
    msg["X-Loop"] = hostname
    msg.set_content(
        f"Attached: the support report of {tenant.name} for {month} (PDF).\n\n"
        "Tickets opened and closed, response and resolution times, SLA attainment,\n"
        "busiest hours, per queue and per agent.\n"
    )
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename=filename)
    body = msg.as_bytes()
    return Composed(message_id=mid, mail_from="", rcpt_tos=tuple(to), body=body)
