"""The wording of the mails the gateway sends: jinja2 templates, ours or an admin's."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import jinja2

from routing.config import GatewayConfig

__all__ = ["DEFAULT_TEMPLATES", "Templates"]

_BUILTIN = {
    "ack.txt.j2": """Hello{% if name %} {{ name }}{% endif %},

we have received your message and opened ticket {{ ref }}:

    {{ subject }}

Simply reply to this mail to add to it; please keep [{{ ref }}] in the subject.
{% if portal %}
You can also read and answer your tickets in the browser
(you get a sign-in link by mail; no password):

{{ portal }}
{% endif %}
--
{{ tenant_name }}
""",
    "notice.txt.j2": """{% if event == "new" %}New ticket {{ ref }}{% elif event == "reopened" %}Ticket {{ ref }} reopened: new message{% else %}New message on {{ ref }}{% endif %} from {{ client }}:

{{ text }}

--
Reply to this mail to answer the client; your reply is sent from {{ tenant_address }}.
Commands on the first lines of a reply: #note (internal, nothing is sent), #close, #open,
#pending (waiting on the client), #assign <agent address>, #priority <low|normal|high|urgent>.
{% if ticket_url %}
The ticket:
{{ ticket_url }}
{% endif %}""",  # noqa: E501
    "autoclose.txt.j2": """Hello,

we have not heard from you for {{ waited }}, so ticket {{ ref }} is now closed:

    {{ subject }}

If you still need help, simply reply to this mail: your reply reopens the ticket.

--
{{ tenant_name }}
""",
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


DEFAULT_TEMPLATES = Templates()
