"""The marks mail clients write between a reply and what it quotes, as patterns.

Data for ``parsers.quotes``, kept apart so the list of clients and languages
can grow without touching the logic. Each pattern is written from the format
the client itself produces (its attribution template or header block), in the
locales of Gmail, Outlook (desktop, web, mobile), Apple Mail and Mail on iOS,
Thunderbird, Yahoo, GMX/web.de and Samsung Email: en, de, fr, es, it, nl, pt,
sv, da/no, pl, ru, ja, zh, and tr, fi, cs, ko for Gmail, iOS and Outlook.
"""

from __future__ import annotations

import re

_I = re.IGNORECASE
_COLON = r"\s*[:：]"

# Attributions that open with a fixed word and end in a verb (or verb + name) and a
# colon: "On <date>, <name> wrote:", "Am <date> schrieb <name>:", ...
LEAD = re.compile(
    r"^(?:"
    r"On\b.{0,300}\bwrote"  # en: Gmail, Apple, Thunderbird, Yahoo
    r"|Am\b.{0,300}\b(?:schrieb\b.{0,200}|Folgendes\s+geschrieben)"  # de (Yahoo: "Folgendes")
    r"|Le\b.{0,300}\ba\s+écrit"  # fr
    r"|El\b.{0,300}\bescribió"  # es
    r"|Il\b.{0,300}\bha\s+scritto"  # it
    r"|Op\b.{0,300}\b(?:schreef\b.{0,200}|het\s+volgende\s+geschreven)"  # nl; Apple's "heeft ..."
    r"|(?:Em|No\s+dia)\b.{0,300}\bescreveu"  # pt
    r"|(?:Den|På)\b.{0,300}\bskrev\b.{0,200}"  # sv, da, no
    r"|W\s+dniu\b.{0,300}\b(?:napisał\S*|pisze)"  # pl: Thunderbird
    r"|在.{0,300}写道"  # zh: Thunderbird
    r")" + _COLON + r"$",
    _I,
)
# The same with the quoted text run into the line (Yahoo on Android, collapsed HTML).
LEAD_INLINE = re.compile(LEAD.pattern.removesuffix("$") + r"\s*\S", _I)
# Attributions without a fixed first word; trusted only with a date or an address in
# them (see quotes._evidence): "<date> skrev <name>:", "<date>, <name> пишет:", ja, zh.
KEYWORD = re.compile(
    r"(?:\b(?:wrote|escribió|escreveu|пишет|написал\S*|pisze|napisał\S*)"
    r"|\b(?:schrieb|schreef|skrev|geschreven|geschrieben)\b.{0,200}"
    r"|\bnapisana\s+przez\b.{0,300}"  # pl: Apple's "Wiadomość napisana przez <name> w dniu <date>:"
    r"|a\s+écrit|ha\s+scritto"
    r"|yazdı|kirjoitti|napsal\S*|작성"  # tr, fi, cs, ko
    r"|のメッセージ|のメール|書きました|写道)" + _COLON + r"$",
    _I,
)
# Gmail in ru, ja (and others) writes no verb: "<date>, <name> <addr>:".
ADDRESS_END = re.compile(r"<[^<>\s@]+@[^<>\s]+>\)?" + _COLON + r"$")
# Words without which KEYWORD / LEAD cannot match, lower-cased: a cheap pre-filter.
KEYWORD_HINTS = (
    "wrote", "schrieb", "geschrieben", "écrit", "escribió", "schreef", "geschreven",
    "scritto", "escreveu", "skrev", "napisa", "pisze", "пишет", "написал",
    "のメッセージ", "のメール", "書きました", "写道", "yazdı", "kirjoitti", "napsal", "작성",
)  # fmt: skip

# Separators alone on a line: "-----Original Message-----" and its translations.
SEPARATOR = re.compile(
    r"^\s*(?:-{2,}|_{2,}|={2,}|─{2,})?\s*(?:"
    r"Original\s+Message|Original[-\s]?Nachricht|Ursprüngliche\s+Nachricht|Message\s+d'origine"
    r"|Mensaje\s+original|Oorspronkelijk\s+bericht|Messaggio\s+originale"
    r"|Mensagem\s+original|Ursprungligt\s+meddelande|Original\s+meddelelse"
    r"|Opprinnelig\s+melding|Wiadomość\s+oryginalna|Исходное\s+сообщение"
    r"|原始邮件|原始郵件|元のメッセージ"
    r")\s*(?:-{2,}|_{2,}|={2,}|─{2,})\s*$"
    r"|^\s*(?:-{3,}\s*Reply\s+above\s+this\s+line\s*-{3,}"
    r"|#+\s*Please\s+(?:type\s+your\s+)?reply\s+above\s+this\s+line\s*#+)\s*$",
    _I,
)
# Outlook's rule line above its header block (trusted only with the block below it).
RULE = re.compile(r"^\s*_{20,}\s*$")

# Keys of the header block Outlook, GMX/web.de, Samsung and Windows Mail write above
# the quoted mail, by what they name.
_KEYS = {
    "from": r"From|Von|De|Van|Da|Från|Fra|Od|От|差出人|发件人|寄件者|寄件人|Kimden|Lähettäjä"
    r"|보낸\s*사람",
    "sent": r"Sent|Gesendet|Envoyé|Enviado|Verzonden|Inviato|Skickat|Sendt|Wysłane|Wysłano"
    r"|Отправлено|送信日時|发送时间|傳送時間|Date|Datum|Fecha|Data|Дата|日付|日期"
    r"|Gönderildi|Tarih|Lähetetty|Odesláno|보낸\s*날짜",
    "to": r"To|An|À|A|Para|Aan|Till|Til|Do|Кому|宛先|收件人|Kime|Vastaanottaja|Komu|받는\s*사람",
    "cc": r"Cc|Kopie|Copie\s+à|Copia|Kopia|Копия|抄送|副本",
    "subject": r"Subject|Betreff|Objet|Asunto|Oggetto|Onderwerp|Assunto|Ämne|Emne|Temat"
    r"|Тема|件名|主题|主旨|Konu|Aihe|Předmět|제목",
}
HEADER_KEY = re.compile(
    r"^\s*\*?(?:" + "|".join(f"(?P<{k}>{v})" for k, v in _KEYS.items()) + r")\*?\s*[:：]",
    _I,
)

# Forwarded mail: kept whole, it is what the sender wants us to read.
FORWARD = re.compile(
    r"^\s*(?:-{2,}\s*(?:Forwarded\s+message|Weitergeleitete\s+Nachricht|Message\s+transféré"
    r"|Mensaje\s+reenviado|Messaggio\s+inoltrato|Doorgestuurd\s+bericht|Mensagem\s+encaminhada"
    r"|Vidarebefordrat\s+meddelande|Przekazana\s+wiadomość|Пересылаемое\s+сообщение"
    r"|转发的邮件|転送されたメッセージ)"
    r"|Begin\s+forwarded\s+message|Anfang\s+der\s+weitergeleiteten\s+Nachricht"
    r"|Début\s+du\s+message\s+réexpédié|Inicio\s+del\s+mensaje\s+reenviado"
    r"|Inizio\s+messaggio\s+inoltrato|Begin\s+doorgestuurd\s+bericht"
    r"|Início\s+da\s+mensagem\s+reencaminhada|Vidarebefordrat\s+brev"
    r"|Początek\s+przekazywanej\s+wiadomości|Начало\s+переадресованного\s+сообщения)",
    _I,
)
# A subject that says the mail is a forward: the prefixes mail clients put before the
# forwarded mail's subject, in their locales. Outlook writes its history separator (or
# header block) above a forwarded mail exactly as above a quoted one; only this tells
# them apart. "Fwd"/"Fw" everywhere, WG de, TR fr, RV es, I it, Doorst nl, ENC pt,
# VB sv, VS da/no, VL fi, PD pl, PŘ cs, TOV hu, İLT tr, Пересл ru, 转发/轉寄 zh, 転送 ja,
# 전달 ko; a counter some clients add ("Fwd[2]:") allowed.
FORWARD_SUBJECT = re.compile(
    r"^\s*(?:fwd?|wg|tr|rv|i|doorst|enc|vb|vs|vl|pd|př|tov|i̇lt|ilt|пересл|переслать"
    r"|转发|轉寄|転送|전달)\s*(?:\[\d+\])?\s*[:：]",
    _I,
)
FORWARD_HINTS = (
    "forward", "weitergeleitet", "transféré", "réexpédié", "reenviado", "inoltrat",
    "doorgestuurd", "encaminhada", "vidarebefordrat", "przekazan", "пересылаем",
    "переадресован", "转发", "転送",
)  # fmt: skip

# Signatures: the "-- " line (RFC 3676) and what mail apps append on their own.
SIGNATURE = re.compile(r"^-- ?$")
MOBILE = re.compile(
    r"^\s*(?:Sent\s+from\s+(?:my\s+|Yahoo\s+Mail\b|Mail\b|Outlook\b)"
    r"|Sent\s+with\s+(?:Proton\s*Mail|Spark|Blue\s*Mail)\b|Get\s+Outlook\s+for\b"
    r"|Von\s+meinem\s+.{1,40}\s+gesendet|Gesendet\s+von\s+(?:meinem\s+|Yahoo\s+Mail\b)"
    r"|Outlook\s+für\s+\w+\s+herunterladen"
    r"|Envoyé\s+(?:de|depuis)\s+(?:mon\s+|Yahoo\s+Mail\b)|Télécharger\s+Outlook\s+pour\b"
    r"|Enviado\s+(?:desde\s+mi|do\s+meu|de\s+meu|desde\s+Yahoo\s+Mail)\b|Obtener\s+Outlook\s+para\b"
    r"|Inviato\s+da\s+(?:\w+\s+)?(?:iPhone|iPad|Yahoo\s+Mail)\b|Scarica\s+Outlook\s+per\b"
    r"|Verstuurd\s+(?:vanaf|vanuit|met)\s+(?:mijn\s+)?\w+|Skickat\s+från\s+(?:min\s+)?\w+"
    r"|Wysłane\s+z\s+\w+|Отправлено\s+(?:с|из)\s+\w+"
    r"|\w+\s*から送信|发自我的\s*\w+|從我的\s*\w+\s*傳送|\S+\s+gönderildi)"
    r".{0,100}$",
    _I,
)
