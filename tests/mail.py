"""Builds test messages with the standard library, CRLF line ends."""

from __future__ import annotations

import uuid
from email.message import EmailMessage
from email.policy import SMTP


def make_mail(
    *,
    subject: str = "Printer jammed",
    body: str = "The printer on floor 3 is jammed again.",
    sender: str = "Carol Client <carol@client.test>",
    to: str = "support@acme.test",
    message_id: str | None = "auto",
    headers: dict[str, str] | None = None,
    attachments: list[tuple[str, str, bytes]] | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = "Mon, 04 Mar 2024 08:06:00 +0000"
    if message_id == "auto":
        message_id = f"<{uuid.uuid4().hex}@client.test>"
    if message_id:
        msg["Message-ID"] = message_id
    for k, v in (headers or {}).items():
        msg[k] = v
    msg.set_content(body)
    for name, ctype, data in attachments or []:
        maintype, subtype = ctype.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes(policy=SMTP)


def message_id_of(data: bytes) -> str:
    for line in data.split(b"\r\n"):
        if line.lower().startswith(b"message-id:"):
            return line.split(b":", 1)[1].strip().decode()
    raise AssertionError("no Message-ID")
