"""The agents' desk's texts (gateway/web/desk.py), merged into gateway/web/i18n.py's
``MESSAGES``: apart so that each file stays readable, one table per site.

``desk.form.intro`` and ``desk.sent.body`` must not say whether an address is
an agent's: the page after the form is the same for every address.
"""

from __future__ import annotations

__all__ = ["DESK_MESSAGES"]

DESK_MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "desk.title.form": "Agent desk of {tenant}",
        "desk.form.intro": (
            "Agents: enter your address and we will send you a link to sign in. "
            "The link is valid for 15 minutes. You answer tickets by email, as always."
        ),
        "desk.mail.subject": "Your sign-in link for the {tenant} desk",
        "desk.mail.body": (
            "Hello,\n"
            "\n"
            "use this link to sign in to the agents' desk:\n"
            "\n"
            "{link}\n"
            "\n"
            "The link is valid for 15 minutes and works only once.\n"
            "If you did not ask for it, you can ignore this email.\n"
        ),
        "desk.sent.body": (
            "If {address} is an agent's address here, we have sent a link to it. "
            "It is valid for 15 minutes and works once."
        ),
        "desk.title": "Desk",
        "desk.signed_in": "Signed in as {agent}",
        "desk.lists": "Lists",
        "desk.list.mine": "Mine",
        "desk.list.unassigned": "Unassigned",
        "desk.list.waiting": "Waiting on the client",
        "desk.list.late": "Breached or at risk",
        "desk.list.open": "All open",
        "desk.list.closed": "Closed",
        "desk.filter": "Filter",
        "desk.filter.queue": "Queue",
        "desk.search": "Search subject, text, sender or reference",
        "desk.search.submit": "Search",
        "desk.search.title": "Search: {query}",
        "desk.filter.tag": "Tag",
        "desk.filter.priority": "Priority",
        "desk.filter.any": "Any",
        "desk.filter.apply": "Apply",
        "desk.col.ref": "Reference",
        "desk.col.subject": "Subject",
        "desk.col.client": "Client",
        "desk.col.queue": "Queue",
        "desk.col.priority": "Priority",
        "desk.col.assignee": "Assignee",
        "desk.col.due": "SLA due",
        "desk.col.activity": "Last activity",
        "desk.none": "No tickets in this list.",
        "desk.count": "{total} tickets",
        "desk.page": "Page {page} of {pages}",
        "desk.pagination": "Pages",
        "desk.prev": "Previous page",
        "desk.next": "Next page",
        "desk.unit.min": "{n} min",
        "desk.unit.h": "{n} h",
        "desk.unit.d": "{n} d",
        "desk.due.in": "in {amount}",
        "desk.due.over": "{amount} overdue",
        "desk.sla.paused": "paused",
        "desk.state.running": "running",
        "desk.state.warning": "at risk",
        "desk.state.breached": "breached",
        "desk.state.paused": "paused, waiting on the client",
        "desk.state.met": "met",
        "desk.state.missed": "missed",
        "desk.clock.first_response": "First response",
        "desk.clock.resolution": "Resolution",
        "desk.nobody": "nobody",
        "priority.low": "low",
        "priority.normal": "normal",
        "priority.high": "high",
        "priority.urgent": "urgent",
        "status.pending": "Waiting",
        "desk.ticket.back": "Back to the lists",
        "desk.ticket.reply": "Reply by email",
        "desk.ticket.reply_hint": (
            "Replies go to the client from the ticket's address. Commands on the first "
            "lines of your reply act on the ticket; they are not sent to the client."
        ),
        "desk.ticket.commands": "Commands",
        "desk.ticket.messages": "Messages",
        "desk.ticket.participants": "Participants",
        "desk.ticket.audit": "Audit trail",
        "desk.ticket.clocks": "SLA clocks",
        "desk.ticket.noclocks": "No SLA is set for this tenant.",
        "desk.ticket.tags": "Tags",
        "desk.ticket.created": "Opened",
        "desk.ticket.due_at": "due {at}",
        "desk.mark.internal": "Internal note",
        "desk.mark.unverified": "Unverified sender",
        "desk.mark.outsider": "Not a participant",
        "desk.role.client": "client",
        "desk.role.cc": "in copy",
        "desk.role.agent": "agent",
        "desk.role.machine": "automatic mail",
    },
    "de": {
        "desk.title.form": "Agenten-Desk von {tenant}",
        "desk.form.intro": (
            "Für Agenten: Geben Sie Ihre Adresse ein, dann senden wir Ihnen einen Link zum "
            "Anmelden. Er ist 15 Minuten lang gültig. Antworten schreiben Sie wie immer per E-Mail."
        ),
        "desk.mail.subject": "Ihr Anmeldelink für den Desk von {tenant}",
        "desk.mail.body": (
            "Guten Tag,\n"
            "\n"
            "mit diesem Link melden Sie sich am Agenten-Desk an:\n"
            "\n"
            "{link}\n"
            "\n"
            "Der Link ist 15 Minuten lang gültig und funktioniert nur einmal.\n"
            "Falls Sie ihn nicht angefordert haben, können Sie diese E-Mail ignorieren.\n"
        ),
        "desk.sent.body": (
            "Falls {address} hier die Adresse eines Agenten ist, haben wir einen Link an diese "
            "Adresse gesendet. Er ist 15 Minuten lang gültig und funktioniert nur einmal."
        ),
        "desk.title": "Desk",
        "desk.signed_in": "Angemeldet als {agent}",
        "desk.lists": "Listen",
        "desk.list.mine": "Meine",
        "desk.list.unassigned": "Nicht zugewiesen",
        "desk.list.waiting": "Wartet auf Kunden",
        "desk.list.late": "Verletzt oder gefährdet",
        "desk.list.open": "Alle offenen",
        "desk.list.closed": "Geschlossen",
        "desk.filter": "Filter",
        "desk.filter.queue": "Queue",
        "desk.search": "Betreff, Text, Absender oder Nummer durchsuchen",
        "desk.search.submit": "Suchen",
        "desk.search.title": "Suche: {query}",
        "desk.filter.tag": "Schlagwort",
        "desk.filter.priority": "Priorität",
        "desk.filter.any": "Alle",
        "desk.filter.apply": "Anwenden",
        "desk.col.ref": "Nummer",
        "desk.col.subject": "Betreff",
        "desk.col.client": "Kunde",
        "desk.col.queue": "Queue",
        "desk.col.priority": "Priorität",
        "desk.col.assignee": "Zuständig",
        "desk.col.due": "SLA fällig",
        "desk.col.activity": "Letzte Aktivität",
        "desk.none": "Keine Tickets in dieser Liste.",
        "desk.count": "{total} Tickets",
        "desk.page": "Seite {page} von {pages}",
        "desk.pagination": "Seiten",
        "desk.prev": "Vorige Seite",
        "desk.next": "Nächste Seite",
        "desk.unit.min": "{n} Min.",
        "desk.unit.h": "{n} Std.",
        "desk.unit.d": "{n} Tg.",
        "desk.due.in": "in {amount}",
        "desk.due.over": "{amount} überfällig",
        "desk.sla.paused": "pausiert",
        "desk.state.running": "läuft",
        "desk.state.warning": "gefährdet",
        "desk.state.breached": "verletzt",
        "desk.state.paused": "pausiert, wartet auf Kunden",
        "desk.state.met": "eingehalten",
        "desk.state.missed": "verfehlt",
        "desk.clock.first_response": "Erste Antwort",
        "desk.clock.resolution": "Lösung",
        "desk.nobody": "niemand",
        "priority.low": "niedrig",
        "priority.normal": "normal",
        "priority.high": "hoch",
        "priority.urgent": "dringend",
        "status.pending": "Wartend",
        "desk.ticket.back": "Zurück zu den Listen",
        "desk.ticket.reply": "Per E-Mail antworten",
        "desk.ticket.reply_hint": (
            "Antworten gehen von der Adresse des Tickets an den Kunden. Befehle in den ersten "
            "Zeilen Ihrer Antwort wirken auf das Ticket und werden nicht mitgesendet."
        ),
        "desk.ticket.commands": "Befehle",
        "desk.ticket.messages": "Nachrichten",
        "desk.ticket.participants": "Beteiligte",
        "desk.ticket.audit": "Protokoll",
        "desk.ticket.clocks": "SLA-Uhren",
        "desk.ticket.noclocks": "Für diesen Mandanten ist kein SLA eingestellt.",
        "desk.ticket.tags": "Schlagwörter",
        "desk.ticket.created": "Eröffnet",
        "desk.ticket.due_at": "fällig {at}",
        "desk.mark.internal": "Interne Notiz",
        "desk.mark.unverified": "Absender nicht bestätigt",
        "desk.mark.outsider": "Nicht beteiligt",
        "desk.role.client": "Kunde",
        "desk.role.cc": "in Kopie",
        "desk.role.agent": "Agent",
        "desk.role.machine": "automatische E-Mail",
    },
    "tr": {
        "desk.title.form": "{tenant} temsilci masası",
        "desk.form.intro": (
            "Temsilciler: adresinizi girin, size giriş için bir bağlantı gönderelim. "
            "Bağlantı 15 dakika geçerlidir. Taleplere her zamanki gibi e-postayla yanıt verirsiniz."
        ),
        "desk.mail.subject": "{tenant} masası için giriş bağlantınız",
        "desk.mail.body": (
            "Merhaba,\n"
            "\n"
            "temsilci masasına giriş yapmak için bu bağlantıyı kullanın:\n"
            "\n"
            "{link}\n"
            "\n"
            "Bağlantı 15 dakika geçerlidir ve yalnızca bir kez kullanılabilir.\n"
            "Bu bağlantıyı siz istemediyseniz bu e-postayı dikkate almayabilirsiniz.\n"
        ),
        "desk.sent.body": (
            "{address} burada bir temsilci adresiyse, bu adrese bir bağlantı gönderdik. "
            "Bağlantı 15 dakika geçerlidir ve yalnızca bir kez kullanılabilir."
        ),
        "desk.title": "Masa",
        "desk.signed_in": "{agent} olarak giriş yapıldı",
        "desk.lists": "Listeler",
        "desk.list.mine": "Benim",
        "desk.list.unassigned": "Atanmamış",
        "desk.list.waiting": "Müşteri bekleniyor",
        "desk.list.late": "İhlal veya risk",
        "desk.list.open": "Tüm açık",
        "desk.list.closed": "Kapalı",
        "desk.filter": "Süzgeç",
        "desk.filter.queue": "Kuyruk",
        "desk.search": "Konu, metin, gönderen veya numarada ara",
        "desk.search.submit": "Ara",
        "desk.search.title": "Arama: {query}",
        "desk.filter.tag": "Etiket",
        "desk.filter.priority": "Öncelik",
        "desk.filter.any": "Tümü",
        "desk.filter.apply": "Uygula",
        "desk.col.ref": "Numara",
        "desk.col.subject": "Konu",
        "desk.col.client": "Müşteri",
        "desk.col.queue": "Kuyruk",
        "desk.col.priority": "Öncelik",
        "desk.col.assignee": "Atanan",
        "desk.col.due": "SLA bitişi",
        "desk.col.activity": "Son etkinlik",
        "desk.none": "Bu listede talep yok.",
        "desk.count": "{total} talep",
        "desk.page": "Sayfa {page} / {pages}",
        "desk.pagination": "Sayfalar",
        "desk.prev": "Önceki sayfa",
        "desk.next": "Sonraki sayfa",
        "desk.unit.min": "{n} dk",
        "desk.unit.h": "{n} sa",
        "desk.unit.d": "{n} gün",
        "desk.due.in": "{amount} içinde",
        "desk.due.over": "{amount} gecikmiş",
        "desk.sla.paused": "duraklatıldı",
        "desk.state.running": "işliyor",
        "desk.state.warning": "risk altında",
        "desk.state.breached": "ihlal edildi",
        "desk.state.paused": "duraklatıldı, müşteri bekleniyor",
        "desk.state.met": "karşılandı",
        "desk.state.missed": "kaçırıldı",
        "desk.clock.first_response": "İlk yanıt",
        "desk.clock.resolution": "Çözüm",
        "desk.nobody": "kimse",
        "priority.low": "düşük",
        "priority.normal": "normal",
        "priority.high": "yüksek",
        "priority.urgent": "acil",
        "status.pending": "Beklemede",
        "desk.ticket.back": "Listelere dön",
        "desk.ticket.reply": "E-postayla yanıtla",
        "desk.ticket.reply_hint": (
            "Yanıtlar müşteriye talebin adresinden gider. Yanıtınızın ilk satırlarındaki "
            "komutlar talebe uygulanır ve müşteriye gönderilmez."
        ),
        "desk.ticket.commands": "Komutlar",
        "desk.ticket.messages": "Mesajlar",
        "desk.ticket.participants": "Katılımcılar",
        "desk.ticket.audit": "Denetim kaydı",
        "desk.ticket.clocks": "SLA saatleri",
        "desk.ticket.noclocks": "Bu kiracı için SLA tanımlı değil.",
        "desk.ticket.tags": "Etiketler",
        "desk.ticket.created": "Açıldı",
        "desk.ticket.due_at": "bitiş {at}",
        "desk.mark.internal": "Dahili not",
        "desk.mark.unverified": "Doğrulanmamış gönderen",
        "desk.mark.outsider": "Katılımcı değil",
        "desk.role.client": "müşteri",
        "desk.role.cc": "bilgi",
        "desk.role.agent": "temsilci",
        "desk.role.machine": "otomatik e-posta",
    },
}
