"""The built-in wording of the mails the gateway sends, one folder per language.

Keys are ``<language>/<template name>``, the same layout an admin's override folder
has (docs/config.md, "Templates"). Mail to a client (acknowledgement, the footer under
an agent's relayed reply, the sign-in link) is written in every language we ship
complete (English, German, Turkish); mail to agents is English only and any other
language falls back to it. A new kind of client mail is one template per language
here, rendered with ``Templates.render(..., lang=...)``.
"""

from __future__ import annotations

__all__ = ["BUILTIN", "CLIENT_TEMPLATES"]

# Every language in routing.config.LANGUAGES has each of these (tests/test_languages.py).
CLIENT_TEMPLATES = (
    "ack.txt.j2",
    "autoclose.txt.j2",
    "desk_signin.txt.j2",  # an agent's, but asked for from a page in their language
    "desk_signin_subject.txt.j2",
    "relay_footer.txt.j2",
    "signin.txt.j2",
    "signin_subject.txt.j2",
)

_EN = {
    "desk_signin_subject.txt.j2": "Your sign-in link for the {{ tenant_name }} desk\n",
    "desk_signin.txt.j2": """Hello,

use this link to sign in to the agents' desk:

{{ link }}

The link is valid for 15 minutes and works only once.
If you did not ask for it, you can ignore this email.
""",
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
    "relay_footer.txt.j2": """
--
{{ tenant_name }}, ticket {{ ref }}: simply reply to this mail to answer.
""",
    "autoclose.txt.j2": """Hello,

we have not heard from you for {{ (days ~ " days") if days else waited }}, so ticket {{ ref }}
is now closed:

    {{ subject }}

If you still need help, simply reply to this mail: your reply reopens the ticket.

--
{{ tenant_name }}
""",
    "signin_subject.txt.j2": "Your sign-in link for {{ tenant_name }}\n",
    "signin.txt.j2": """Hello,

use this link to sign in and read your support tickets:

{{ link }}

The link is valid for 15 minutes and works only once.
If you did not ask for it, you can ignore this email.
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
    "sla.txt.j2": """{% if state == "breached" %}SLA BREACHED{% else %}SLA warning{% endif %}: ticket {{ ref }}, {{ clock }}.

    {{ subject }}

Target: {{ target }} ({{ calendar }}). Counted so far: {{ elapsed }}.
{% if due %}Due: {{ due }}.
{% endif %}{% if state == "breached" %}The target has been missed; the breach is in the audit log.
{% else %}Answer before it is due to keep within the target.
{% endif %}
Reply to this mail to answer the client, as with any notice.
""",  # noqa: E501
    "sla_digest.txt.j2": """SLA digest: {{ items | length }} tickets need you{% if breached %}, {{ breached }} past their target{% endif %}.
{% for i in items %}
{{ "BREACHED" if i.state == "breached" else "warning " }}  {{ i.ref }}  {{ i.clock }}: target {{ i.target }}, counted {{ i.elapsed }}{% if i.due %}, due {{ i.due }}{% endif %}
          {{ i.subject }}
{% endfor %}
One mail per {{ every }} at most: what falls due meanwhile comes in the next digest.
Each breach is in the audit log. Answer a ticket from its own notice or its page.
""",  # noqa: E501
    "failure.txt.j2": """A mail for ticket {{ ref }} could not be delivered to {{ recipients }}.

Reason: {{ reason }}

The gateway has stopped trying. Subject of the undelivered mail: {{ subject }}
""",
}

_DE = {
    "desk_signin_subject.txt.j2": "Ihr Anmeldelink für den Desk von {{ tenant_name }}\n",
    "desk_signin.txt.j2": """Guten Tag,

mit diesem Link melden Sie sich am Agenten-Desk an:

{{ link }}

Der Link ist 15 Minuten lang gültig und funktioniert nur einmal.
Falls Sie ihn nicht angefordert haben, können Sie diese E-Mail ignorieren.
""",
    "ack.txt.j2": """Guten Tag{% if name %} {{ name }}{% endif %},

wir haben Ihre Nachricht erhalten und das Ticket {{ ref }} eröffnet:

    {{ subject }}

Antworten Sie einfach auf diese E-Mail, um etwas zu ergänzen; bitte lassen Sie
[{{ ref }}] im Betreff stehen.
{% if portal %}
Sie können Ihre Tickets auch im Browser lesen und beantworten
(Sie erhalten einen Anmeldelink per E-Mail; ein Passwort brauchen Sie nicht):

{{ portal }}
{% endif %}
--
{{ tenant_name }}
""",
    "relay_footer.txt.j2": """
--
{{ tenant_name }}, Ticket {{ ref }}: Antworten Sie einfach auf diese E-Mail.
""",
    "autoclose.txt.j2": """Guten Tag,

wir haben seit {{ (days ~ " Tagen") if days else waited }} nichts von Ihnen gehört
und das Ticket {{ ref }} daher geschlossen:

    {{ subject }}

Falls Sie weiter Hilfe brauchen, antworten Sie einfach auf diese E-Mail: Ihre
Antwort öffnet das Ticket wieder.

--
{{ tenant_name }}
""",
    "signin_subject.txt.j2": "Ihr Anmeldelink für {{ tenant_name }}\n",
    "signin.txt.j2": """Guten Tag,

mit diesem Link melden Sie sich an und können Ihre Support-Tickets lesen:

{{ link }}

Der Link ist 15 Minuten lang gültig und funktioniert nur einmal.
Falls Sie ihn nicht angefordert haben, können Sie diese E-Mail ignorieren.
""",
}

_TR = {
    "desk_signin_subject.txt.j2": "{{ tenant_name }} masası için giriş bağlantınız\n",
    "desk_signin.txt.j2": """Merhaba,

temsilci masasına giriş yapmak için bu bağlantıyı kullanın:

{{ link }}

Bağlantı 15 dakika geçerlidir ve yalnızca bir kez kullanılabilir.
Bu bağlantıyı siz istemediyseniz bu e-postayı dikkate almayabilirsiniz.
""",
    "ack.txt.j2": """Merhaba{% if name %} {{ name }}{% endif %},

mesajınızı aldık ve {{ ref }} numaralı talebi açtık:

    {{ subject }}

Eklemek istediğiniz bir şey varsa bu e-postayı yanıtlamanız yeterli; lütfen
konu satırındaki [{{ ref }}] ifadesini silmeyin.
{% if portal %}
Taleplerinizi tarayıcıda da okuyup yanıtlayabilirsiniz
(giriş bağlantısı e-postayla gelir; şifre gerekmez):

{{ portal }}
{% endif %}
--
{{ tenant_name }}
""",
    "relay_footer.txt.j2": """
--
{{ tenant_name }}, talep {{ ref }}: yanıt vermek için bu e-postayı yanıtlamanız yeterli.
""",
    "autoclose.txt.j2": """Merhaba,

{{ (days ~ " gündür") if days else (waited ~ " süredir") }} sizden haber alamadığımız
için {{ ref }} numaralı talep kapatıldı:

    {{ subject }}

Hâlâ yardıma ihtiyacınız varsa bu e-postayı yanıtlamanız yeterli: yanıtınız
talebi yeniden açar.

--
{{ tenant_name }}
""",
    "signin_subject.txt.j2": "{{ tenant_name }} için giriş bağlantınız\n",
    "signin.txt.j2": """Merhaba,

giriş yapıp destek taleplerinizi okumak için bu bağlantıyı kullanın:

{{ link }}

Bağlantı 15 dakika geçerlidir ve yalnızca bir kez kullanılabilir.
Bu bağlantıyı siz istemediyseniz bu e-postayı dikkate almayabilirsiniz.
""",
}

BUILTIN: dict[str, str] = {
    f"{lang}/{name}": text
    for lang, texts in (("en", _EN), ("de", _DE), ("tr", _TR))
    for name, text in texts.items()
}
