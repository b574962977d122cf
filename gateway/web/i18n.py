"""Languages and texts for the client-facing web pages.

The texts live here, in one plain dict, rather than in gettext catalogues: there are
three languages and a few dozen strings, and a dict is easy to review, to test (every key
in every language, the same placeholders everywhere) and to ship without a build step.
The mails (the sign-in mail among them) are jinja2 templates per language in
outbound/texts.py, which an admin may override like every mail's wording.

Security-relevant wording is deliberate and must stay that way in every language:

* ``sent.body`` is shown whether or not the address is known, so the page does not tell
  a stranger which addresses have tickets.
* ``error.locked`` says exactly what ``error.link`` says, so a lockout cannot be told
  apart from a plain bad link.
* ``continue.body`` names no address: the server need not reveal whom a link belongs to.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

from gateway.web.i18n_desk import DESK_MESSAGES
from routing.config import LANGUAGES

__all__ = ["DEFAULT_LANGUAGE", "LANGUAGES", "MESSAGES", "pick_language", "translate", "translator"]

DEFAULT_LANGUAGE = "en"

# An Accept-Language header is attacker-controlled input: look at a bounded prefix only,
# so a megabyte of commas costs nothing.
_MAX_HEADER_CHARS = 1024
_MAX_HEADER_ITEMS = 32

_EN_BAD_LINK = "This link is invalid, expired or already used. Ask for a new one."
_DE_BAD_LINK = (
    "Dieser Link ist ungültig, abgelaufen oder wurde schon verwendet. "
    "Bitte fordern Sie einen neuen an."
)
_TR_BAD_LINK = (
    "Bu bağlantı geçersiz, süresi dolmuş ya da daha önce kullanılmış. "
    "Lütfen yeni bir bağlantı isteyin."
)

MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "title.form": "Your support tickets at {tenant}",
        "form.intro": (
            "Enter your email address and we will send you a link to sign in. "
            "The link is valid for 15 minutes. You do not need a password."
        ),
        "form.email": "Email address",
        "form.submit": "Send me a link",
        "sent.title": "Check your email",
        "sent.body": (
            "If {address} has tickets here, we have sent a link to it. "
            "It is valid for 15 minutes and works once."
        ),
        "continue.title": "Sign in",
        "continue.body": "Press Continue to sign in.",
        "continue.submit": "Continue",
        "error.title": "That did not work",
        "error.link": _EN_BAD_LINK,
        "error.locked": _EN_BAD_LINK,
        "error.csrf": "The form expired. Please try again.",
        "error.challenge": "Your browser did not finish the check. Please try again.",
        "form.noscript": (
            "This form needs JavaScript: your browser solves a small puzzle "
            "that keeps automated requests away."
        ),
        "error.notfound": "Not found.",
        "error.back": "Back to the start",
        "tickets.title": "Your tickets",
        "tickets.none": "There are no tickets for your address yet.",
        "tickets.ref": "Reference",
        "tickets.subject": "Subject",
        "tickets.status": "Status",
        "tickets.updated": "Last update",
        "status.open": "Open",
        "status.pending": "Waiting for your reply",
        "status.closed": "Closed",
        "ticket.from": "From",
        "ticket.date": "Date",
        "ticket.attachments": "Attachments",
        "ticket.quoted": "Show quoted text",
        "ticket.reply": "Reply",
        "ticket.reply.label": "Your message",
        "ticket.reply.submit": "Send",
        "ticket.back": "All tickets",
        "ticket.support": "Support",
        "logout": "Sign out",
        "language": "Language",
        "skip": "Skip to main content",
    },
    "de": {
        "title.form": "Ihre Support-Tickets bei {tenant}",
        "form.intro": (
            "Geben Sie Ihre E-Mail-Adresse ein, dann senden wir Ihnen einen Link zum Anmelden. "
            "Der Link ist 15 Minuten lang gültig. Ein Passwort brauchen Sie nicht."
        ),
        "form.email": "E-Mail-Adresse",
        "form.submit": "Link zusenden",
        "sent.title": "Sehen Sie in Ihr Postfach",
        "sent.body": (
            "Falls es für {address} hier Tickets gibt, haben wir einen Link an diese Adresse "
            "gesendet. Er ist 15 Minuten lang gültig und funktioniert nur einmal."
        ),
        "continue.title": "Anmelden",
        "continue.body": "Klicken Sie auf „Weiter“, um sich anzumelden.",
        "continue.submit": "Weiter",
        "error.title": "Das hat nicht geklappt",
        "error.link": _DE_BAD_LINK,
        "error.locked": _DE_BAD_LINK,
        "error.csrf": "Das Formular ist abgelaufen. Bitte versuchen Sie es noch einmal.",
        "error.challenge": (
            "Ihr Browser hat die Prüfung nicht abgeschlossen. Bitte versuchen Sie es noch einmal."
        ),
        "form.noscript": (
            "Dieses Formular braucht JavaScript: Ihr Browser löst eine kleine Aufgabe, "
            "die automatische Anfragen fernhält."
        ),
        "error.notfound": "Nicht gefunden.",
        "error.back": "Zurück zum Anfang",
        "tickets.title": "Ihre Tickets",
        "tickets.none": "Für Ihre Adresse gibt es noch keine Tickets.",
        "tickets.ref": "Nummer",
        "tickets.subject": "Betreff",
        "tickets.status": "Status",
        "tickets.updated": "Letzte Änderung",
        "status.open": "Offen",
        "status.pending": "Wartet auf Ihre Antwort",
        "status.closed": "Geschlossen",
        "ticket.from": "Von",
        "ticket.date": "Datum",
        "ticket.attachments": "Anhänge",
        "ticket.quoted": "Zitierten Text anzeigen",
        "ticket.reply": "Antworten",
        "ticket.reply.label": "Ihre Nachricht",
        "ticket.reply.submit": "Senden",
        "ticket.back": "Alle Tickets",
        "ticket.support": "Support",
        "logout": "Abmelden",
        "language": "Sprache",
        "skip": "Zum Inhalt springen",
    },
    "tr": {
        "title.form": "{tenant} – destek talepleriniz",
        "form.intro": (
            "E-posta adresinizi girin, size giriş için bir bağlantı gönderelim. "
            "Bağlantı 15 dakika geçerlidir. Şifreye gerek yoktur."
        ),
        "form.email": "E-posta adresi",
        "form.submit": "Bana bağlantı gönder",
        "sent.title": "E-postanızı kontrol edin",
        "sent.body": (
            "{address} adresine ait burada talepler varsa, bu adrese bir bağlantı gönderdik. "
            "Bağlantı 15 dakika geçerlidir ve yalnızca bir kez kullanılabilir."
        ),
        "continue.title": "Giriş yap",
        "continue.body": "Giriş yapmak için “Devam” düğmesine basın.",
        "continue.submit": "Devam",
        "error.title": "Bu işlem olmadı",
        "error.link": _TR_BAD_LINK,
        "error.locked": _TR_BAD_LINK,
        "error.csrf": "Formun süresi doldu. Lütfen tekrar deneyin.",
        "error.challenge": "Tarayıcınız doğrulamayı tamamlamadı. Lütfen tekrar deneyin.",
        "form.noscript": (
            "Bu form JavaScript gerektirir: tarayıcınız otomatik istekleri uzak tutan "
            "küçük bir bulmaca çözer."
        ),
        "error.notfound": "Bulunamadı.",
        "error.back": "Başa dön",
        "tickets.title": "Talepleriniz",
        "tickets.none": "Adresinize ait henüz bir talep yok.",
        "tickets.ref": "Numara",
        "tickets.subject": "Konu",
        "tickets.status": "Durum",
        "tickets.updated": "Son güncelleme",
        "status.open": "Açık",
        "status.pending": "Yanıtınız bekleniyor",
        "status.closed": "Kapalı",
        "ticket.from": "Gönderen",
        "ticket.date": "Tarih",
        "ticket.attachments": "Ekler",
        "ticket.quoted": "Alıntılanan metni göster",
        "ticket.reply": "Yanıtla",
        "ticket.reply.label": "Mesajınız",
        "ticket.reply.submit": "Gönder",
        "ticket.back": "Tüm talepler",
        "ticket.support": "Destek",
        "logout": "Çıkış yap",
        "language": "Dil",
        "skip": "Ana içeriğe geç",
    },
}

for _lang, _texts in DESK_MESSAGES.items():  # the agents' desk: gateway/web/i18n_desk.py
    MESSAGES[_lang].update(_texts)


def _quality(params: str) -> float:
    """The q-value of one Accept-Language entry; 0 (not acceptable) when it is malformed,
    so a garbled entry can never beat a well-formed one."""
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() != "q":
            continue
        try:
            q = float(value.strip())
        except ValueError:
            return 0.0
        if not math.isfinite(q) or not 0.0 <= q <= 1.0:
            return 0.0
        return q
    return 1.0


def pick_language(
    cookie: str | None, accept_language: str | None, offered: Sequence[str] = LANGUAGES
) -> str:
    """Choose the page language among those the tenant offers: an explicit choice (the
    cookie) beats the browser's guess (Accept-Language), which beats the tenant's first.

    Only primary tags count (``de-CH`` means ``de``): we have one German, not several.
    Among equal q-values the entry listed first wins, as the browser ordered them.
    """
    default = offered[0] if offered else DEFAULT_LANGUAGE
    if cookie:
        chosen = cookie.strip().lower()
        if chosen in offered:
            return chosen
    if accept_language:
        best, best_q = default, 0.0
        entries = accept_language[:_MAX_HEADER_CHARS].split(",")[:_MAX_HEADER_ITEMS]
        for entry in entries:
            tag, _, params = entry.partition(";")
            primary = tag.strip().split("-", 1)[0].lower()
            if primary not in offered:
                continue
            q = _quality(params)
            if q > best_q:
                best, best_q = primary, q
        return best
    return default


def translate(lang: str, key: str, **kwargs: object) -> str:
    """The text for ``key`` in ``lang``, with ``{placeholders}`` filled from ``kwargs``.

    A missing language or key falls back to English, and a key unknown even there comes
    back as itself, so a gap shows up as an odd word on a page rather than an error page.
    Only our own texts are format strings; kwargs (addresses, tenant names) are values and
    are never parsed, so user input cannot inject placeholders.
    """
    text = MESSAGES.get(lang, {}).get(key)
    if text is None:
        text = MESSAGES[DEFAULT_LANGUAGE].get(key)
    if text is None:
        return key
    return text.format(**kwargs)


def translator(lang: str) -> Callable[..., str]:
    """``translate`` bound to one language: the ``t(key, **kwargs)`` the templates get."""
    return partial(translate, lang)
